"""Atomic outputs: a failed or killed write leaves the previous file whole, never a truncated one."""

import errno
import os
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reprolab import storage
from reprolab.errors import StageError


def table(rows: int, value: str) -> pa.Table:
    return pa.table({"id": [f"{value}{i}" for i in range(rows)], "text": [value * 50] * rows})


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    dest = tmp_path / "out.json"
    storage.write_json({"version": 1}, dest)
    with pytest.raises(RuntimeError):
        with storage.atomic_path(dest) as tmp:
            tmp.write_text('{"version": 2, "trunc')
            raise RuntimeError("killed mid-write")
    assert dest.read_text() == '{\n  "version": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_disk_full_is_a_clear_error_and_nothing_partial(tmp_path, monkeypatch):
    dest = tmp_path / "out.parquet"
    storage.write_parquet(table(10, "a"), dest)
    before = dest.read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", full_disk)
    with pytest.raises(StageError, match="out.parquet: no space left on device.*previous version is untouched"):
        storage.write_parquet(table(10, "b"), dest)
    assert dest.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.parquet"]


def test_out_of_memory_is_a_clear_error(tmp_path):
    with pytest.raises(StageError, match="out of memory"):
        with storage.atomic_dir(tmp_path / "model"):
            raise MemoryError
    assert list(tmp_path.iterdir()) == []


def test_leftovers_of_killed_writes_are_removed_by_the_next_write(tmp_path):
    (tmp_path / ".out.parquet.k1l3d.tmp").write_bytes(b"PAR1 half a file")
    (tmp_path / ".model.x7.tmp").mkdir()
    (tmp_path / ".model.x7.tmp" / "weights.bin").write_bytes(b"half")
    (tmp_path / ".other.parquet.k1l3d.tmp").write_bytes(b"another output's")
    storage.write_parquet(table(2, "a"), tmp_path / "out.parquet")
    with storage.atomic_dir(tmp_path / "model") as tmp:
        (tmp / "config.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.parquet.k1l3d.tmp", "model", "out.parquet"]


def test_directory_swap_replaces_the_old_one_whole(tmp_path):
    dest = tmp_path / "model"
    for version in ("old", "new"):
        with storage.atomic_dir(dest) as tmp:
            (tmp / f"{version}.txt").write_text(version)
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    assert [p.name for p in dest.iterdir()] == ["new.txt"]


def test_directories_are_exchanged_in_one_step_on_linux(tmp_path):
    if not sys.platform.startswith("linux"):
        pytest.skip("renameat2 is Linux's")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "from_a").touch()
    (tmp_path / "b").mkdir()
    assert storage._exchange(tmp_path / "a", tmp_path / "b")
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["from_a"] and not any((tmp_path / "a").iterdir())


def test_a_swap_killed_between_two_renames_gets_the_old_directory_back(tmp_path, monkeypatch):
    """Where directories cannot be exchanged atomically, a write killed after moving the old one aside
    leaves it at .NAME.old; the next write of that output puts it back before anything else."""
    monkeypatch.setattr(storage, "_exchange", lambda a, b: False)
    dest = tmp_path / "checkpoint"
    (tmp_path / ".checkpoint.old").mkdir()
    (tmp_path / ".checkpoint.old" / "state.json").write_text("{}")
    with pytest.raises(RuntimeError), storage.atomic_dir(dest):
        raise RuntimeError("this write fails too")
    assert (dest / "state.json").read_text() == "{}"
    with storage.atomic_dir(dest) as tmp:
        (tmp / "state.json").write_text('{"step": 2}')
    assert (dest / "state.json").read_text() == '{"step": 2}'
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint"]


def test_csv_cells_are_guarded_against_formula_injection():
    text = storage.csv_text(
        ["id", "score"], [['=HYPERLINK("http://x")', 0.5], ["-2", -0.25], ["@SUM(A1)", 1.0], ["a,b", 2.0]]
    )
    assert text.splitlines() == ["id,score", '"\'=HYPERLINK(""http://x"")",0.5', "-2,-0.25", "'@SUM(A1),1", '"a,b",2']


def test_streamed_parquet_has_the_rows_and_row_groups_of_one_write(tmp_path, monkeypatch):
    monkeypatch.setattr(storage, "ROW_GROUP_SIZE", 4)
    parts = [table(3, "a"), table(2, "b"), table(6, "c"), table(1, "d").slice(0, 0), table(1, "e")]
    with storage.parquet_sink(tmp_path / "streamed.parquet", parts[0].schema) as sink:
        for part in parts:
            sink.write(part)
    storage.write_parquet(pa.concat_tables(parts).combine_chunks(), tmp_path / "whole.parquet")
    streamed = pq.ParquetFile(tmp_path / "streamed.parquet")
    assert sink.rows == 12
    assert [streamed.metadata.row_group(i).num_rows for i in range(streamed.num_row_groups)] == [4, 4, 4]
    # Byte for byte, so the DVC hash does not depend on how the rows arrived.
    assert (tmp_path / "streamed.parquet").read_bytes() == (tmp_path / "whole.parquet").read_bytes()


def test_iter_tables_cuts_exact_sizes_across_row_groups(tmp_path, monkeypatch):
    monkeypatch.setattr(storage, "ROW_GROUP_SIZE", 4)
    whole = pa.concat_tables([table(5, "a"), table(6, "b")])
    storage.write_parquet(whole, tmp_path / "t.parquet")
    assert pq.ParquetFile(tmp_path / "t.parquet").num_row_groups == 3
    parts = list(storage.iter_tables(tmp_path / "t.parquet", None, 3))
    assert [p.num_rows for p in parts] == [3, 3, 3, 2]
    assert pa.concat_tables(parts).equals(whole)
    assert list(storage.iter_tables(tmp_path / "t.parquet", ["text"], 11))[0].column_names == ["text"]


def test_failed_stream_keeps_old_file(tmp_path):
    dest = tmp_path / "out.parquet"
    storage.write_parquet(table(5, "old"), dest)
    before = dest.read_bytes()
    with pytest.raises(RuntimeError):
        with storage.parquet_sink(dest, table(1, "x").schema) as sink:
            sink.write(table(3, "new"))
            raise RuntimeError("killed mid-stream")
    assert dest.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.parquet"]


def test_empty_stream_writes_the_schema(tmp_path):
    schema = table(1, "x").schema
    with storage.parquet_sink(tmp_path / "empty.parquet", schema):
        pass
    assert pq.read_table(tmp_path / "empty.parquet").schema.equals(schema)


@pytest.mark.parametrize("write_rows", [1, 3, 5, 7, 40])
def test_wide_rows_get_smaller_row_groups_cut_where_the_rows_say(tmp_path, monkeypatch, write_rows):
    # A reader holds a whole row group: groups of wide rows are cut at ROW_GROUP_BYTES, by the rows
    # alone, so streaming in writes of any size gives the bytes of one whole write.
    whole = pa.table({"id": [f"w{i}" for i in range(40)], "text": ["w" * (50 + 7 * i) for i in range(40)]})
    monkeypatch.setattr(storage, "ROW_GROUP_BYTES", whole.nbytes // 4)
    storage.write_parquet(whole, tmp_path / "whole.parquet")
    with storage.parquet_sink(tmp_path / "streamed.parquet", whole.schema) as sink:
        for start in range(0, 40, write_rows):
            sink.write(whole.slice(start, write_rows))
    written = pq.ParquetFile(tmp_path / "whole.parquet")
    sizes = [written.metadata.row_group(i).num_rows for i in range(written.num_row_groups)]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    assert sum(sizes) == 40 and len(sizes) >= 5
    for start, rows in zip(starts, sizes, strict=True):
        assert whole.slice(start, rows).nbytes <= storage.ROW_GROUP_BYTES  # within the cap...
        if start + rows < 40:  # ...and one more row would have passed it
            assert whole.slice(start, rows + 1).nbytes > storage.ROW_GROUP_BYTES
    assert written.read().equals(whole)
    assert (tmp_path / "streamed.parquet").read_bytes() == (tmp_path / "whole.parquet").read_bytes()


def test_detached_batch_pickles_only_its_rows():
    import pickle

    batch = pa.RecordBatch.from_pylist(table(2000, "x").to_pylist())
    part = batch.slice(10, 5)
    assert len(pickle.dumps(part)) > 50_000  # a slice carries its parent's buffers
    detached = storage.detached(part)
    assert len(pickle.dumps(detached)) < 5_000 and detached.equals(part)


def test_outputs_get_the_modes_of_a_plain_write(tmp_path):
    storage.write_text("x", tmp_path / "plain.txt")
    with storage.atomic_dir(tmp_path / "folder") as folder:
        (folder / "inner.txt").write_text("x")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "plain.txt").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o777 & ~umask


def test_a_row_wider_than_the_cap_gets_a_group_of_its_own(tmp_path, monkeypatch):
    rows = pa.table({"text": ["a" * 10, "b" * 500, "c" * 10, "d" * 10]})
    monkeypatch.setattr(storage, "ROW_GROUP_BYTES", 100)
    storage.write_parquet(rows, tmp_path / "t.parquet")
    written = pq.ParquetFile(tmp_path / "t.parquet")
    assert [written.metadata.row_group(i).num_rows for i in range(written.num_row_groups)] == [1, 1, 2]
    assert written.read().equals(rows)
