"""Which DVC command a stage runs under: the key every stage of one execution shares."""

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


def with_parents(monkeypatch, *parents: FakeProcess) -> None:
    monkeypatch.setattr(psutil, "Process", lambda: type("Me", (), {"parents": lambda self: list(parents)})())


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
