"""Faults: training killed with SIGKILL or stopped with SIGTERM resumes to the same weights; a
tracking outage (server down, sqlite locked) loses no run and replays later."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from reprolab import storage
from reprolab.inference import serving
from reprolab.model.checkpoints import Checkpointer
from reprolab.records import tracking
from tests.conftest import FAULT_CHECKPOINTS, env_for, fixture_params_raw, lock_outs, run, update_params

UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens there


def saved_steps(project: Path) -> list[int]:
    """The step of each run's latest complete checkpoint."""
    steps = []
    for directory in (project / "checkpoints/train").glob("*"):
        try:
            state = Checkpointer(directory).peek()
        except (OSError, ValueError):  # replaced while reading
            continue
        if state:
            steps.append(state.step)
    return steps


def wait_for_checkpoint(project: Path, min_step: int, process: subprocess.Popen, timeout: float = 300) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "training ended before a checkpoint was seen"
        if any(step >= min_step for step in saved_steps(project)):
            return max(saved_steps(project))
        time.sleep(0.01)
    raise AssertionError("no checkpoint appeared")


def checkpoint_step(project: Path) -> int:
    (step,) = saved_steps(project)
    return step


def test_sigkill_mid_epoch_then_repro_resumes_to_identical_weights(project):
    reference, metrics = lock_outs(project), (project / "reports/metrics.json").read_bytes()
    update_params(project, FAULT_CHECKPOINTS)
    assert not (project / "checkpoints/train").exists() or not any((project / "checkpoints/train").iterdir())
    repro = subprocess.Popen(
        ["dvc", "repro", "--force", "-s", "train"],
        cwd=project,
        env=env_for(project),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_for_checkpoint(project, 3, repro)
    os.killpg(repro.pid, signal.SIGKILL)
    repro.wait()
    killed_at = checkpoint_step(project)
    assert not (project / "models/model/model.safetensors").exists()  # DVC removed it; train never finished
    output = run(["dvc", "repro"], project)
    assert f"resuming from the checkpoint at epoch 1, step {killed_at}" in output
    assert lock_outs(project) == reference
    assert (project / "reports/metrics.json").read_bytes() == metrics
    assert not any((project / "checkpoints/train").iterdir())  # cleared once training finished


def test_sigterm_saves_a_checkpoint_and_exits(project):
    reference = storage.file_md5(project / "models/model/model.safetensors")
    update_params(project, FAULT_CHECKPOINTS)
    train = subprocess.Popen(
        [sys.executable, "-m", "stages.train"],
        cwd=project,
        env=env_for(project),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = wait_for_checkpoint(project, 2, train)
    train.send_signal(signal.SIGTERM)
    _, stderr = train.communicate(timeout=120)
    assert train.returncode == 128 + signal.SIGTERM
    assert "stopped by SIGTERM" in stderr and "Run `dvc repro` to resume" in stderr
    assert checkpoint_step(project) >= seen
    resumed = subprocess.run(
        [sys.executable, "-m", "stages.train"], cwd=project, env=env_for(project), capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from the checkpoint" in resumed.stdout
    assert storage.file_md5(project / "models/model/model.safetensors") == reference


def test_stage_completes_when_the_tracking_server_is_down_and_replays_later(project):
    before = (project / "reports/metrics.json").read_bytes()
    (project / "reports/metrics.json").unlink()
    done = subprocess.run(
        [sys.executable, "-m", "stages.evaluate"],
        cwd=project,
        capture_output=True,
        text=True,
        env=env_for(project, MLFLOW_TRACKING_URI=UNREACHABLE),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "reprolab replay" in done.stderr and UNREACHABLE in done.stderr
    assert (project / "reports/metrics.json").read_bytes() == before  # outputs written all the same
    (record,) = (project / ".reprolab/spool").glob("*-evaluate-*/record.json")
    saved = json.loads(record.read_text())
    assert "test.transformer.macro_f1" in {m[0] for m in saved["metrics"]}
    assert saved["start_ms"] < saved["end_ms"] and saved["status"] == "FINISHED"
    replayed = subprocess.run(
        [sys.executable, "-m", "reprolab.cli", "replay"],
        cwd=project,
        env=env_for(project),
        capture_output=True,
        text=True,
    )
    assert replayed.returncode == 0, replayed.stderr[-2000:]
    assert "replayed 1 run(s)" in replayed.stdout
    assert not list((project / ".reprolab/spool").iterdir())
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    run_id = replayed.stdout.split()[-1]
    logged = client.get_run(run_id)
    assert logged.data.metrics["test.transformer.macro_f1"] == json.loads(before)["transformer"]["macro_f1"]
    assert logged.data.tags["reprolab.stage"] == "evaluate"
    # Replay found the run that trained the model, which the stage could not reach.
    train = client.get_run(logged.data.tags["reprolab.train_run_id"])
    assert train.data.tags["reprolab.stage"] == "train"
    assert train.data.tags["reprolab.model_md5"] == logged.data.tags["reprolab.model_md5"]
    # With the times the stage recorded, not the replay's.
    assert (logged.info.start_time, logged.info.end_time) == (saved["start_ms"], saved["end_ms"])


def test_locked_sqlite_store_spools_the_record(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from reprolab.params import parse_params

    params = parse_params(fixture_params_raw())
    store = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    report = tmp_path / "report.json"
    storage.write_json({"rows_in": 3}, report)
    tracking.log_stage("ingest", params, outputs=[report], metrics={"rows_in": 3})  # creates the store
    lock = sqlite3.connect(store, timeout=0)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        tracking.log_stage("clean", params, outputs=[report], metrics={"rows_in": 3, "rows_kept": 2})
    finally:
        lock.rollback()
        lock.close()
    (record,) = (tmp_path / ".reprolab/spool").glob("*-clean-*/record.json")
    saved = json.loads(record.read_text())
    assert saved["params"]["train.learning_rate"] == "5e-05" and "locked" in saved["offline_reason"]
    (sent,) = tracking.replay(serving.log_model)
    import mlflow

    replayed = mlflow.MlflowClient(tracking_uri=f"sqlite:///{store}").get_run(sent)
    assert replayed.data.metrics == {"rows_in": 3.0, "rows_kept": 2.0}
    assert replayed.data.tags["reprolab.stage"] == "clean"


def test_a_spooled_stage_replays_into_its_pipeline_tree(tmp_path, monkeypatch):
    """ingest reaches the store and creates the pipeline's parent run; clean finds the store locked and
    spools; replay puts clean under the same parent, with the times it recorded, and extends the parent."""
    from reprolab.params import parse_params
    from reprolab.records import provenance

    monkeypatch.chdir(tmp_path)
    params = parse_params(fixture_params_raw())
    store = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    pipeline = {"key": "host:4242:1700000000000", "start_ms": 1_700_000_000_000, "command": "dvc repro"}
    monkeypatch.setattr(provenance, "pipeline_execution", lambda: pipeline)
    monkeypatch.setattr(provenance, "process_start_ms", lambda: 1_700_000_001_000)
    report = tmp_path / "report.json"
    storage.write_json({"rows_in": 3}, report)
    tracking.log_stage("ingest", params, outputs=[report], metrics={"rows_in": 3})
    lock = sqlite3.connect(store, timeout=0)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        tracking.log_stage("clean", params, outputs=[report], metrics={"rows_in": 3})
    finally:
        lock.rollback()
        lock.close()
    (record,) = (tmp_path / ".reprolab/spool").glob("*-clean-*/record.json")
    saved = json.loads(record.read_text())
    (sent,) = tracking.replay(serving.log_model)
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{store}")
    runs = {
        r.data.tags["reprolab.stage"]: r
        for r in client.search_runs([client.get_experiment_by_name("reprolab").experiment_id])
    }
    assert sorted(runs) == ["clean", "ingest", "pipeline"] and runs["clean"].info.run_id == sent
    parent = runs["pipeline"]
    assert parent.info.run_name == "dvc repro" and parent.info.start_time == pipeline["start_ms"]
    assert {runs[s].data.tags["mlflow.parentRunId"] for s in ("ingest", "clean")} == {parent.info.run_id}
    assert (runs["clean"].info.start_time, runs["clean"].info.end_time) == (1_700_000_001_000, saved["end_ms"])
    assert parent.info.end_time == saved["end_ms"] >= runs["ingest"].info.end_time
