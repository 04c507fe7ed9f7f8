"""Which DVC command a stage runs under: the key every stage of one execution shares."""

import os
import platform

import psutil
import pytest

from reprolab.records import provenance


class FakeProcess:
    def __init__(self, pid: int, argv: list[str] | None, started: float = 1_700_000_000.5):
        self.pid, self.argv, self.started = pid, argv, started

    def cmdline(self) -> list[str]:
        if self.argv is None:
            raise psutil.AccessDenied(self.pid)
        return self.argv

    def create_time(self) -> float:
        return self.started


def with_parents(monkeypatch, *parents: FakeProcess, ticks: dict[int, str] | None = None) -> None:
    """Fake ancestors; `ticks`: their start in clock ticks since boot (none: not on Linux)."""
    monkeypatch.setattr(psutil, "Process", lambda: type("Me", (), {"parents": lambda self: list(parents)})())
    monkeypatch.setattr(provenance, "_start_ticks", lambda pid: (ticks or {}).get(pid))


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["/repo/.venv/bin/python", "/repo/.venv/bin/dvc", "repro"], "dvc repro"),
        (["/usr/bin/dvc", "exp", "run", "--temp", "-n", "x"], "dvc exp run"),
        (["python3", "-m", "dvc", "exp", "exec-run", "--infofile", "f"], "dvc exp exec-run"),
    ],
)
def test_the_nearest_dvc_ancestor_names_the_execution(monkeypatch, argv, command):
    with_parents(
        monkeypatch,
        FakeProcess(10, ["/bin/sh", "-c", "python -m stages.train"]),
        FakeProcess(11, argv),
        FakeProcess(12, ["/usr/bin/dvc", "queue", "start"]),
    )
    found = provenance.pipeline_execution()
    assert found == {"key": f"{platform.node()}:11:1700000000500", "start_ms": 1_700_000_000_500, "command": command}


def test_a_wall_clock_step_mid_repro_leaves_the_execution_one(monkeypatch):
    """psutil's create_time moved by seconds between the stages of one `dvc repro` on a VM whose clock
    was stepped, giving each stage a parent run of its own; the start in ticks since boot does not move."""
    dvc = FakeProcess(11, ["/usr/bin/dvc", "repro"])
    with_parents(monkeypatch, dvc, ticks={11: "4242"})
    first = provenance.pipeline_execution()
    dvc.started += 3.0  # the clock stepped
    again = provenance.pipeline_execution()
    assert first["key"] == again["key"] == f"{platform.node()}:11:4242"


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="ticks since boot are read from Linux's /proc")
def test_a_process_start_in_ticks_is_read_from_proc():
    ticks = provenance._start_ticks(os.getpid())
    assert ticks is not None and ticks.isdigit() and provenance._start_ticks(os.getpid()) == ticks
    assert provenance._start_ticks(2**22 + 7) is None  # no such process


def test_a_parent_it_may_not_inspect_is_passed_over(monkeypatch):
    with_parents(monkeypatch, FakeProcess(10, None), FakeProcess(11, ["/usr/bin/dvc", "repro"]))
    assert provenance.pipeline_execution()["key"].endswith(":11:1700000000500")


def test_no_dvc_ancestor_is_a_stage_run_by_hand(monkeypatch):
    with_parents(monkeypatch, FakeProcess(10, ["bash"]), FakeProcess(1, ["/sbin/init"]))
    assert provenance.pipeline_execution() is None


def test_recorded_versions_cover_every_runtime_dependency_of_the_project():
    """The versions MLflow records and the audit compares come from pyproject's dependencies: the training
    engine (accelerate, peft) and the export runtime (onnx, onnxruntime) were missing from a hand list."""
    recorded = provenance.package_versions()
    for name in ("torch", "accelerate", "peft", "onnx", "onnxruntime", "scipy", "matplotlib", "charset-normalizer"):
        assert recorded[name] not in ("absent", None), name
    assert "pytest" not in recorded and "ruff" not in recorded  # the dev extra is not what the pipeline runs
