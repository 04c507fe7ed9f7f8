"""The data stages and `reprolab predict` on Ray give the local engine's bytes: through `dvc repro` on the
reduced project with one and two workers, predict's output on two actors, and when a Ray worker or
actor is killed mid-run. One Ray cluster (2 CPUs) serves the whole file: each stage and command joins
it through RAY_ADDRESS, as it would join a team's cluster."""

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pytest
import ray.data

from reprolab import paths, storage
from reprolab.data.cleaning import clean_file
from reprolab.data.row_rules import RAW_SCHEMA
from reprolab.engines import IN_PROCESS, LocalEngine, open_engine, ray_tasks
from reprolab.errors import StageError
from reprolab.params import EngineParams
from tests.conftest import REPROLAB, env_for, free_port, lock_outs, run, update_params
from tests.unit.test_cleaning import TWINS_PARAMS, clean_params, raw_row
from tests.unit.test_duplicates import colliding_rows, rule_over_all_rows, spread

RAY = Path(sys.executable).parent / "ray"
ON_THE_ENGINE = ["clean", "tokenize", "augment"]  # the data stages whose batches an engine runs


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[dict[str, str]]:
    """A Ray head of 2 CPUs on this machine for the module, with token authentication as Ray sets up a
    cluster by default; the environment a stage joins it with. `--block` ties the cluster's processes
    to the one started here, so stopping it stops them all (`ray stop` would stop every Ray cluster of
    the machine's user)."""
    port = free_port()
    # Its own temporary folder (short: Ray's socket paths live under it), so that nothing of it is left
    # in /tmp/ray, where a plain ray.init() of anyone on the machine would look for a cluster.
    temp = tempfile.mkdtemp(prefix="rl-ray-", dir="/tmp")
    join = {
        "RAY_TMPDIR": temp,
        "RAY_ADDRESS": f"127.0.0.1:{port}",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env = {**os.environ, **join}
    log = tmp_path_factory.mktemp("ray") / "head.log"
    with open(log, "w") as out:
        head = subprocess.Popen(
            [RAY, "start", "--head", "--block", f"--port={port}", "--num-cpus=2", "--include-dashboard=false"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while subprocess.run([RAY, "status"], capture_output=True, env=env).returncode:
            assert head.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
        yield join
    finally:
        os.killpg(head.pid, signal.SIGKILL)  # the whole cluster at once: a graceful stop takes half a minute
        head.wait(timeout=60)
        shutil.rmtree(temp, ignore_errors=True)


def test_the_data_stages_on_ray_give_the_lock_of_the_local_run_on_one_and_two_workers(project, cluster):
    """The published project was reproduced on the local engine; its stages that run on an engine,
    forced again on Ray, write the outputs its dvc.lock records, byte for byte, whatever the number of
    workers."""
    recorded = lock_outs(project)
    for workers in (1, 2):
        update_params(project, {"engine": {"name": "ray", "workers": workers}})
        done = subprocess.run(
            ["dvc", "repro", "--force", "--single-item", *ON_THE_ENGINE],
            cwd=project,
            env=env_for(project, **cluster),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert lock_outs(project) == recorded, f"ray with {workers} worker(s) wrote other bytes"
        changed = run(["git", "status", "--porcelain"], project).split()
        assert changed == ["M", "params.yaml"], changed  # outputs, dvc.lock and reports as committed


def _long_rows() -> list[dict]:
    """8 batches of rows whose fingerprints take a while, with exact and near twins to decide."""
    words = [f"w{i}" for i in range(5000)]
    rows = []
    for i in range(8 * 1024):
        text = " ".join(words[(i * 7 + k * 13) % 5000] for k in range(400))
        if i % 50 == 49:  # a near twin of the row before: one word dropped
            text = rows[-1]["raw"].decode().split(" ", 1)[1]
        rows.append(raw_row(f"r{i:06d}", text, label=("ham", "spam")[i % 2]))
    return rows


def _clean(directory: Path, engine) -> dict[str, bytes]:
    outputs = {name: directory / f"{name}.parquet" for name in paths.SPLITS}
    clean_file(directory / "raw.parquet", outputs, directory / "rejects.parquet", clean_params(**TWINS_PARAMS), engine)
    return {path.name: path.read_bytes() for path in [*outputs.values(), directory / "rejects.parquet"]}


@pytest.fixture
def joined(cluster, monkeypatch) -> Iterator[None]:
    """This process joins the module's cluster, as a stage would (RAY_ADDRESS and its token). Ray reads
    the token once, when this process first imported it (another test may have, before the cluster's
    environment was set): its cache is reset, as Ray's own tests do, on the way in and out."""
    from ray._private.authentication_test_utils import reset_auth_token_state

    for name, value in cluster.items():
        monkeypatch.setenv(name, value)
    reset_auth_token_state()
    yield
    monkeypatch.undo()
    reset_auth_token_state()


def _kill_one_busy_worker(killed: list[int], stop: threading.Event, title: str) -> None:
    while not stop.is_set() and not killed:
        for process in psutil.process_iter(["pid", "cmdline"]):
            if (process.info["cmdline"] or [""])[0].startswith(title):
                os.kill(process.info["pid"], signal.SIGKILL)
                killed.append(process.info["pid"])
                return
        time.sleep(0.01)


@contextlib.contextmanager
def one_busy_worker_killed(title: str) -> Iterator[list[int]]:
    """For the block, SIGKILL the first Ray worker seen running a batch (its process title is `title`
    then: a task's `ray::_apply`, an actor's `ray::_Holder.apply`); yields the pids killed."""
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_one_busy_worker, args=(killed, stop, title))
    killer.start()
    try:
        yield killed
    finally:
        stop.set()
        killer.join()


def test_a_ray_worker_killed_mid_stage_is_retried_and_the_outputs_keep_their_bytes(tmp_path, joined):
    for name in ("local", "ray"):
        (tmp_path / name).mkdir()
        storage.write_parquet(pa.Table.from_pylist(_long_rows(), schema=RAW_SCHEMA), tmp_path / name / "raw.parquet")
    local = _clean(tmp_path / "local", IN_PROCESS)
    assert b"near_duplicate" in local["rejects.parquet"]
    with open_engine(EngineParams(name="ray", workers=2)) as engine, one_busy_worker_killed("ray::_apply") as killed:
        on_ray = _clean(tmp_path / "ray", engine)
    assert killed, "no Ray worker was seen running a batch"
    assert on_ray == local


def test_a_local_cluster_starts_where_a_killed_cluster_left_its_address_behind(tmp_path):
    """`ray start` killed without `ray stop` leaves its address in Ray's temporary folder, where a plain
    ray.init() would look and wait for minutes; a stage (its own process, as here) starts its own
    cluster instead."""
    temp = Path(tempfile.mkdtemp(prefix="rl-ray-", dir="/tmp"))  # short: Ray's socket paths live under it
    try:
        (temp / "ray").mkdir()
        (temp / "ray/ray_current_cluster").write_text("127.0.0.1:1")  # where Ray looks: $RAY_TMPDIR/ray/
        script = (
            "from reprolab.engines import open_engine\nfrom reprolab.params import EngineParams\n"
            "with open_engine(EngineParams(name='ray', workers=1)) as engine:\n"
            "    print(list(engine.map(abs, [-3, 2, -1])))\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | {"RAY_TMPDIR": str(temp)}
        done = subprocess.run(
            [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0 and done.stdout.strip() == "[3, 2, 1]", done.stderr[-3000:]
    finally:
        shutil.rmtree(temp, ignore_errors=True)


class _CountsItsUnpickling:
    """A state whose every unpickling (its arrival in a worker) adds a line to `log`."""

    def __init__(self, log: Path) -> None:
        self.log = log

    def __reduce__(self):
        return (_arrived, (self.log,))


def _arrived(log: Path) -> _CountsItsUnpickling:
    with open(log, "a") as out:
        out.write(f"{os.getpid()}\n")
    return _CountsItsUnpickling(log)


def _scaled(state: _CountsItsUnpickling, item: int) -> tuple[int, int]:
    return item * 10, os.getpid()


def test_local_pool_workers_each_receive_the_state_once_and_map_in_order(tmp_path):
    log = tmp_path / "arrivals"
    with LocalEngine.open(2) as engine:
        results = list(engine.map_with(_CountsItsUnpickling(log), _scaled, range(40)))
    assert [value for value, _ in results] == [i * 10 for i in range(40)]
    arrivals = log.read_text().split()
    assert len(arrivals) == len(set(arrivals)) <= 2  # once per worker, not once per item
    assert {str(pid) for _, pid in results} <= set(arrivals)  # every worker that mapped had received it


def _buffer_bytes(batch: pa.RecordBatch) -> int:
    return batch.get_total_buffer_size()


@pytest.mark.parametrize("name", ["local", "ray"])
def test_a_slice_reaches_a_worker_owning_just_its_rows(name, joined):
    """A batch sliced from a big row group is shipped as its own rows, not its parent's buffers."""
    parent = pa.record_batch({"text": ["x" * 1000] * 10_000})  # 10 MB
    with open_engine(EngineParams(name=name, workers=2)) as engine:
        received = list(engine.map(_buffer_bytes, [parent.slice(start, 10) for start in range(0, 40, 10)]))
    assert max(received) < 20_000 < parent.get_total_buffer_size() == _buffer_bytes(parent.slice(0, 10))


def test_the_duplicate_decisions_on_ray_cut_into_many_partitions_are_the_rules_over_all_rows(joined, monkeypatch):
    """Ray Data's sort deals the keys, then the components, into some 30 partitions of whole groups:
    every row gets the verdict, twin and similarity the rule gives it over all rows at once."""
    monkeypatch.setattr(ray_tasks, "GROUP_BLOCK_ROWS", 64)
    for seed in range(3):
        rows = colliding_rows(400, seed)
        with open_engine(EngineParams(name="ray", workers=2)) as engine:
            decided = spread(engine, rows)
        for got, want in zip(decided, rule_over_all_rows(rows), strict=True):
            np.testing.assert_array_equal(got, want)


def _partition_sizes(partition: pa.Table) -> pa.Table:
    return pa.table({"rows": [partition.num_rows], "keys": [len(set(partition["key"].to_pylist()))]})


def test_ray_map_grouped_hands_each_key_to_exactly_one_of_many_partitions(joined, monkeypatch):
    monkeypatch.setattr(ray_tasks, "GROUP_BLOCK_ROWS", 64)
    keys = np.random.default_rng(0).integers(0, 300, 2000).astype(np.uint64)
    with open_engine(EngineParams(name="ray", workers=2)) as engine:
        sizes = engine.map_grouped(_partition_sizes, pa.table({"key": keys}), "key")
    assert sizes.num_rows > 10  # one partition per input block of 64 rows
    assert sum(sizes["rows"].to_pylist()) == len(keys)
    assert sum(sizes["keys"].to_pylist()) == len(np.unique(keys))  # no key in two partitions


def _fails(partition: pa.Table) -> pa.Table:
    raise ValueError(f"no partition of {partition.num_rows} rows is welcome")


def test_a_grouped_map_that_raises_on_ray_stops_with_the_functions_own_error(joined):
    with open_engine(EngineParams(name="ray", workers=2)) as engine, pytest.raises(StageError) as failed:
        engine.map_grouped(_fails, pa.table({"key": np.arange(10, dtype=np.uint64)}), "key")
    assert "failed (ValueError: no partition of" in str(failed.value)


def test_a_group_cut_across_ray_partitions_stops_the_stage(joined, monkeypatch):
    """Were Ray Data's partitions to share a key (here: no sort at all), the decisions stop, not guess."""
    monkeypatch.setattr(ray_tasks, "GROUP_BLOCK_ROWS", 64)
    monkeypatch.setattr(ray.data.Dataset, "sort", lambda dataset, key: dataset)
    with open_engine(EngineParams(name="ray", workers=2)) as engine, pytest.raises(StageError, match="split a group"):
        spread(engine, colliding_rows(400, 0))


def _predict(root: Path, out: Path, cluster: dict[str, str] | None = None, workers: int = 0) -> dict[str, bytes]:
    """`reprolab predict` of the project's raw mails, 16 rows a batch, locally or on `workers` actors of
    the cluster; its output and rejects files."""
    on_ray = ["--engine", "ray", "--workers", str(workers)] if cluster else []
    done = subprocess.run(
        [REPROLAB, "predict", "data/source", "--out", str(out), "--no-progress", "--batch-rows", "16", *on_ray],
        cwd=root,
        env=env_for(root, **(cluster or {})),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rejects = out.with_name(f"{out.stem}.rejects.parquet")
    return {"predictions": out.read_bytes(), "rejects": rejects.read_bytes()}


def test_predict_on_two_ray_actors_one_killed_mid_run_writes_the_local_predictions(published, cluster, tmp_path):
    """The prediction path with its scoring on two Ray actors, a busy one killed: Ray starts it again,
    it loads its model again, and the batch is retried."""
    local = _predict(published.root, tmp_path / "local.parquet")
    with one_busy_worker_killed("ray::_Holder.apply") as killed:
        on_ray = _predict(published.root, tmp_path / "ray.parquet", cluster, workers=2)
    assert killed, "no Ray actor was seen scoring a batch"
    assert on_ray == local, "two actors, one killed, wrote other bytes"
