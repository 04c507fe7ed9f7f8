"""Atomic, byte-stable output writing and Parquet reading.

Every output file is written to a temporary file beside its destination, flushed to disk, then
renamed over it: a stage killed at any point leaves the old output or the new one, never a truncated
file. An output directory is swapped in the same way (see `atomic_dir`).
Parquet bytes carry no timestamps and no pandas metadata, so the same rows give the same DVC hash.
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import errno
import glob
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from reprolab.errors import StageError

# A few large row groups, not many small ones; but a reader holds a whole row group in memory, so
# wide rows (raw mail, long texts) get fewer rows per group, at most ROW_GROUP_BYTES of Arrow data.
ROW_GROUP_SIZE = 65_536
ROW_GROUP_BYTES = 48 << 20
# mkstemp/mkdtemp create 0600/0700; outputs get the modes a plain open() or mkdir() would give.
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def _resource_errors(dest: Path) -> Iterator[None]:
    """A full disk or exhausted memory while writing becomes one clear message."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StageError(
                f"{dest}: no space left on device while writing it; nothing was "
                "written and any previous version is untouched"
            ) from None
        raise
    except MemoryError:
        raise StageError(
            f"{dest}: out of memory while writing it; nothing was written and any previous version is untouched"
        ) from None


def _remove_leftovers(dest: Path) -> None:
    """Temporaries of earlier writes of `dest` that were killed (SIGKILL, power loss) before their
    cleanup ran: one output has one writer at a time, so any that exist are dead."""
    for leftover in dest.parent.glob(f".{glob.escape(dest.name)}.*.tmp"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(dest: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `dest`; rename it over `dest` only if the block succeeds."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(dest)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=f"{suffix}.tmp", dir=dest.parent)
    os.fchmod(fd, 0o666 & ~_UMASK)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with _resource_errors(dest):
            yield tmp_path
            with open(tmp_path, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp_path, dest)
    finally:
        tmp_path.unlink(missing_ok=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where the C library
    or the file system cannot, changing nothing."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _restore_interrupted_swap(dest: Path) -> None:
    """Where no atomic exchange exists, a directory swap is two renames; a write killed between them
    left the old directory at `.NAME.old` and none at `dest`: put it back."""
    old = dest.with_name(f".{dest.name}.old")
    if old.is_dir() and not dest.exists():
        os.replace(old, dest)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary directory beside `dest`; swap it in for `dest` only if the block succeeds.

    Readers see the old directory or the new one: the two are exchanged in one step where the system
    can (Linux). Elsewhere the old one is renamed aside first, and a write killed in between leaves it
    at `.NAME.old`, which the next write of `dest` puts back before anything else.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _restore_interrupted_swap(dest)
    _remove_leftovers(dest)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    tmp.chmod(0o777 & ~_UMASK)
    try:
        with _resource_errors(dest):
            yield tmp
            if not (dest.exists() and _exchange(tmp, dest)):
                old = dest.with_name(f".{dest.name}.old")
                if dest.exists():
                    os.replace(dest, old)
                os.replace(tmp, dest)
                shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # after an exchange: the old directory


_PARQUET_OPTIONS = {"compression": "zstd", "store_schema": False}


def write_parquet(table: pa.Table, dest: str | Path) -> None:
    with parquet_sink(dest, table.schema) as sink:
        sink.write(table)


def _group_rows(table: pa.Table) -> int:
    """Rows in the row group that starts `table`: ROW_GROUP_SIZE, or the most (at least one) whose
    Arrow data stays within ROW_GROUP_BYTES."""
    rows = min(table.num_rows, ROW_GROUP_SIZE)
    if table.slice(0, rows).nbytes <= ROW_GROUP_BYTES:
        return rows
    fits, too_many = 1, rows  # slice nbytes counts only the slice's rows, and grows with them
    while too_many - fits > 1:
        middle = (fits + too_many) // 2
        if table.slice(0, middle).nbytes <= ROW_GROUP_BYTES:
            fits = middle
        else:
            too_many = middle
    return fits


class ParquetSink:
    """Appends tables to an open Parquet writer in row groups of ROW_GROUP_SIZE rows, or fewer where
    that many rows would exceed ROW_GROUP_BYTES.

    Where the groups are cut depends only on the rows, never on how they were split into writes, so
    the bytes (and DVC's hash) are the same whether a table is written whole or streamed. Memory holds
    at most one row group and one write.
    """

    def __init__(self, writer: pq.ParquetWriter, schema: pa.Schema):
        self.writer = writer
        self.schema = schema
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.pending_bytes = 0
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        self.pending.append(table.replace_schema_metadata(None))
        self.pending_rows += table.num_rows
        self.pending_bytes += table.nbytes
        self.rows += table.num_rows
        if self.pending_rows >= ROW_GROUP_SIZE or self.pending_bytes > ROW_GROUP_BYTES:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        # One chunk per column: a chunked column is written in pages cut at chunk edges, and
        # the bytes would depend on how the rows arrived.
        buffered = pa.concat_tables(self.pending).combine_chunks()
        while buffered.num_rows:
            rows = _group_rows(buffered)
            if rows == buffered.num_rows and rows < ROW_GROUP_SIZE and not final:
                break  # the next rows may still belong to this group
            self.writer.write_table(buffered.slice(0, rows), row_group_size=rows)
            buffered = buffered.slice(rows)
        # A copy of the few rows left over, so the written group's buffers are freed now.
        self.pending = [detached(buffered)] if buffered.num_rows else []
        self.pending_rows = buffered.num_rows
        self.pending_bytes = buffered.nbytes

    def close(self) -> None:
        if self.pending_rows:
            self._flush(final=True)
        elif not self.rows:  # an empty output still gets its schema
            self.writer.write_table(self.schema.empty_table())


@contextlib.contextmanager
def parquet_sink(dest: str | Path, schema: pa.Schema) -> Iterator[ParquetSink]:
    """A Parquet file written incrementally and renamed into place only when the block succeeds."""
    schema = schema.remove_metadata()
    with atomic_path(dest) as tmp, pq.ParquetWriter(tmp, schema, **_PARQUET_OPTIONS) as writer:
        sink = ParquetSink(writer, schema)
        yield sink
        sink.close()


def _input(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise StageError(f"{path}: missing input (run the upstream stage: dvc repro)")
    return path


def read_parquet(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    return pq.read_table(_input(path), columns=columns)


def parquet_rows(path: str | Path) -> int:
    """The row count in a Parquet file's footer; no data is read."""
    return pq.ParquetFile(_input(path)).metadata.num_rows


def check_every_row_came_back(source: str | Path, returned: int, dest: str | Path) -> None:
    """A stage that writes a row (or a row's windows) for every row of `source` stops before `dest`
    replaces its previous version unless `returned` rows came back from the engine's batches: a batch
    lost on the way is a bug, never a smaller output."""
    read = parquet_rows(source)
    if returned != read:
        raise StageError(
            f"{dest}: {returned} rows came back from the engine for the {read} rows of {source} (a bug: "
            "please report it); the previous output is kept"
        )


def iter_batches(path: str | Path, columns: list[str] | None, rows: int) -> Iterator[pa.RecordBatch]:
    """Record batches of at most `rows` rows, read one row group at a time: memory holds one row group.

    Not `ParquetFile.iter_batches`: with pyarrow 25 its memory grows with every row group it reads
    (by 140 MB over 4 row groups of mail text, measured), so it does not bound a stream.
    """
    source = pq.ParquetFile(_input(path))
    for group in range(source.num_row_groups):
        yield from source.read_row_group(group, columns=columns).to_batches(max_chunksize=rows)
        pa.default_memory_pool().release_unused()  # hand the group's pages back, not keep them cached


def detached(data: pa.RecordBatch | pa.Table) -> pa.RecordBatch | pa.Table:
    """A copy of `data` that owns just its rows. A slice keeps its parent's whole buffers: alive in
    memory, and pickled along (a batch of 1,024 mails sliced from a row group pickled to 105 MB)."""
    chunks = [column.chunks if isinstance(column, pa.ChunkedArray) else [column] for column in data.columns]
    return type(data).from_arrays([pa.concat_arrays(arrays) for arrays in chunks], schema=data.schema)


def iter_tables(path: str | Path, columns: list[str] | None, rows: int) -> Iterator[pa.Table]:
    """A Parquet file as consecutive tables of exactly `rows` rows (the last may be shorter),
    whatever its row groups: two files with the same row count can be read in lockstep."""
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    for batch in iter_batches(path, columns, rows):
        pending.append(batch)
        pending_rows += batch.num_rows
        while pending_rows >= rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, rows)
            pending = table.slice(rows).to_batches()
            pending_rows -= rows
    if pending_rows:
        yield pa.Table.from_batches(pending)


def flatten(tree: Mapping[str, Any], prefix: str = "", numbers_only: bool = False) -> dict[str, Any]:
    """Nested mappings -> dotted keys, leaves as they are (so a count stays a count); with `numbers_only`,
    only int and float leaves. The one flattener of params and reports (MLflow, compare, audit)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}.", numbers_only))
        elif not numbers_only or (isinstance(value, int | float) and not isinstance(value, bool)):
            flat[name] = value
    return flat


def write_json(obj: Any, dest: str | Path) -> None:
    text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"
    write_text(text, dest)


def write_text(text: str, dest: str | Path) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")


def file_md5(path: str | Path) -> str:
    """MD5 of a file's bytes: the hash DVC 3 records for a file output."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# Every stage that drops rows writes them here, with the reason, so nothing is lost:
# rows in = rows kept + rows rejected.
REJECT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("label", pa.string()),
        ("raw", pa.binary()),
    ]
)


def rejects_table(rows: list[dict[str, Any]], stage: str) -> pa.Table:
    columns = {name: [row.get(name) for row in rows] for name in REJECT_SCHEMA.names}
    columns["stage"] = [stage] * len(rows)
    return pa.table(columns, schema=REJECT_SCHEMA)


# A cell starting with one of these runs as a formula when a spreadsheet opens the CSV.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> str:
    """Text for a CSV cell, with a leading apostrophe where it would read as a formula."""
    if isinstance(value, float):
        return f"{value:.6g}"
    text = str(value)
    if text.startswith(_FORMULA_START) and not _is_number(text):
        return "'" + text
    return text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def csv_text(header: list[str], rows: list[list[Any]]) -> str:
    """CSV with quoting by the csv module and formula-injection guards on every cell."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([csv_cell(v) for v in row] for row in rows)
    return buffer.getvalue()
