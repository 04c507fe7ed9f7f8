"""Behaviour that lives in processes: worker pools (their results and their exit with the stage) and
outputs written by a process killed at random moments."""

import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from reprolab import storage
from reprolab.data.row_rules import RAW_SCHEMA
from tests.conftest import FIXTURE_PARAMS, REPO
from tests.unit.test_cleaning import TWINS_PARAMS, clean_params, corpus_with_twins, raw_row, run_clean


def test_clean_workers_change_no_byte(tmp_path):
    rows, p = corpus_with_twins(), clean_params(**TWINS_PARAMS)
    _, _, summary = run_clean(tmp_path / "one", rows, p, workers=1)
    _, _, parallel_summary = run_clean(tmp_path / "two", rows, p, workers=2)
    assert parallel_summary == summary
    for name in ("train.parquet", "val.parquet", "test.parquet", "rejects.parquet"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        for children in Path(f"/proc/{todo.pop()}/task").glob("*/children"):
            new = {int(child) for child in children.read_text().split()}
            found |= new
            todo += new
    return found


def _running(pid: int) -> bool:
    try:  # a zombie has exited; only its parent has not collected it yet
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_worker_processes_exit_when_the_stage_is_killed(tmp_path):
    words = [f"w{i}" for i in range(5000)]
    rows = [raw_row(f"r{i:06d}", " ".join(words[(i * 7 + k * 13) % 5000] for k in range(300))) for i in range(20000)]
    storage.write_parquet(pa.Table.from_pylist(rows, schema=RAW_SCHEMA), tmp_path / "raw.parquet")
    script = (
        "import sys\nfrom pathlib import Path\n"
        "from reprolab.data.cleaning import clean_file\nfrom reprolab.engines import LocalEngine\n"
        "from reprolab.params import load_params\n"
        "if __name__ == '__main__':\n"
        "    d = Path(sys.argv[1])\n"
        "    with LocalEngine.open(2) as engine:\n"
        "        clean_file(d / 'raw.parquet', {n: d / f'{n}.parquet' for n in ('train', 'val', 'test')},\n"
        "                   d / 'rejects.parquet', load_params(sys.argv[2]).clean, engine)\n"
    )
    (tmp_path / "run.py").write_text(script)
    stage = subprocess.Popen([sys.executable, str(tmp_path / "run.py"), str(tmp_path), str(FIXTURE_PARAMS)], cwd=REPO)
    deadline = time.monotonic() + 60
    while len(workers := _descendants(stage.pid)) < 3 and time.monotonic() < deadline:  # forkserver + 2 workers
        time.sleep(0.2)
    assert len(workers) >= 3 and stage.poll() is None
    os.kill(stage.pid, signal.SIGKILL)
    stage.wait()
    deadline = time.monotonic() + 15
    while (alive := {pid for pid in workers if _running(pid)}) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive, f"worker processes {alive} outlived the killed stage"


def test_sigkill_during_writes_never_leaves_a_truncated_file(tmp_path):
    """A writer rewrites a large Parquet file in a loop; killed at any moment, the file reads whole."""
    dest = tmp_path / "big.parquet"
    script = (
        "import sys, pyarrow as pa\nfrom reprolab import storage\n"
        "t = pa.table({'x': list(range(2_000_000))})\n"
        "while True:\n    storage.write_parquet(t, sys.argv[1])\n"
    )
    for delay in (0.8, 1.1, 1.45, 1.7):
        writer = subprocess.Popen([sys.executable, "-c", script, str(dest)])
        while not dest.exists() and writer.poll() is None:  # one whole write first, however busy the machine
            time.sleep(0.05)
        time.sleep(delay)  # then a kill at some point of a later write
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        assert pq.read_metadata(dest).num_rows == 2_000_000
    storage.write_parquet(pa.table({"x": [1]}), dest)  # the next write removes what the killed ones left
    assert [p.name for p in tmp_path.iterdir()] == ["big.parquet"]


def test_freed_host_memory_is_kept_for_reuse_on_glibc():
    # Its own process: the allocator setting is process-wide and cannot be undone.
    code = "from reprolab.model.runtime import reuse_freed_host_memory; print(reuse_freed_host_memory())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == str(platform.libc_ver()[0] == "glibc")
