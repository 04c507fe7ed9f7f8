"""`reprolab audit` on a scratch project whose raw data is committed: a clean revision passes;
a tampered metric, a changed raw file and a changed param are each caught and reported."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from stages.audit import AuditError, Check, audit, excuse_weights, inexact_reason, recorded_kernels, trained_paths
from stages.errors import StageError
from tests.conftest import CORPUS, REDUCED, commit, make_project, run

pytestmark = pytest.mark.slow
GROUPS = {"easy-ham-1": "ham", "spam-2": "spam"}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> tuple[Path, str]:
    """A project with 24 real mails per class in git, run once and committed with its results."""
    root = tmp_path_factory.mktemp("audited")
    for group in GROUPS:
        (root / "data/source" / group).mkdir(parents=True)
        for path in sorted((CORPUS / group).glob("*.txt"))[100:124]:
            shutil.copy(path, root / "data/source" / group / path.name)
    update = {**REDUCED, "ingest": {"path": "data/source", "folder_labels": GROUPS, "max_rows_per_label": None}}
    make_project(root, update)
    run(["dvc", "repro"], root)
    return root, commit(root, "published result")


def failed(report: dict) -> dict[tuple[str, str], dict]:
    return {(c["kind"], c["name"]): c for c in report["checks"] if not c["ok"]}


def test_clean_revision_passes(recorded, tmp_path, monkeypatch):
    root, published = recorded
    monkeypatch.chdir(root)
    report = audit(root, published, tmp_path)
    assert report["verdict"] == "pass", failed(report)
    kinds = {c["kind"] for c in report["checks"]}
    assert {"output", "dependency", "metric"} <= kinds
    assert any(c["name"] == "train:models/model" for c in report["checks"])
    assert "PASS" in (tmp_path / "audit.md").read_text()
    assert json.loads((tmp_path / "audit.json").read_text())["commit"] == published
    assert report["environment"]["recorded"]["torch"] == "2.13.0+cpu"
    # The user's working copy and worktree list are untouched.
    assert run(["git", "status", "--porcelain"], root) == ""
    assert len(run(["git", "worktree", "list"], root).splitlines()) == 1


def test_audit_by_mlflow_run_id_checks_logged_metrics(recorded, tmp_path, monkeypatch):
    import mlflow

    root, published = recorded
    monkeypatch.chdir(root)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    (train,) = client.search_runs([client.get_experiment_by_name("reprolab").experiment_id],
                                  filter_string="tags.`reprolab.stage` = 'train'", max_results=1)
    runs_before = len(client.search_runs([train.info.experiment_id]))
    report = audit(root, train.info.run_id, tmp_path)
    assert report["verdict"] == "pass", failed(report)
    # The run was recorded before its results were committed: its commit has no dvc.lock, so the
    # audit compares against MLflow's own record.
    assert report["commit"] == train.data.tags["git.commit"] != published
    kinds = {(c["kind"], c["name"]) for c in report["checks"]}
    assert ("mlflow_metric", "transformer.macro_f1") in kinds
    assert ("mlflow_model", "models/model/model.safetensors") in kinds
    assert ("mlflow_input", "data/tokens/train.parquet") in kinds
    assert len(client.search_runs([train.info.experiment_id])) == runs_before  # MLflow history untouched


def test_tampered_metric_is_reported(recorded, tmp_path, monkeypatch):
    root, published = recorded
    monkeypatch.chdir(root)
    metrics = json.loads((root / "reports/metrics.json").read_text())
    true_value = metrics["transformer"]["macro_f1"]
    metrics["transformer"]["macro_f1"] = 0.999
    (root / "reports/metrics.json").write_text(json.dumps(metrics))
    tampered = commit(root, "better numbers")
    run(["git", "reset", "-q", "--hard", published], root)
    report = audit(root, tampered, tmp_path)
    assert report["verdict"] == "fail"
    assert set(failed(report)) == {("metric", "transformer.macro_f1")}
    check = failed(report)[("metric", "transformer.macro_f1")]
    assert check["recorded"] == 0.999 and check["reproduced"] == true_value
    assert "transformer.macro_f1" in (tmp_path / "audit.md").read_text().split("## What matched")[0]


def test_changed_raw_file_is_reported(recorded, tmp_path, monkeypatch):
    root, published = recorded
    monkeypatch.chdir(root)
    mail = sorted((root / "data/source/spam-2").glob("*.txt"))[0]
    mail.write_bytes(mail.read_bytes() + b"\nA line added after the result was published.\n")
    changed = commit(root, "edit a raw mail")
    run(["git", "reset", "-q", "--hard", published], root)
    report = audit(root, changed, tmp_path)
    differences = failed(report)
    assert report["verdict"] == "fail"
    assert ("dependency", "ingest:data/source") in differences
    assert ("output", "ingest:data/raw/raw.parquet") in differences


def test_changed_param_is_reported(recorded, tmp_path, monkeypatch):
    root, published = recorded
    monkeypatch.chdir(root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["learning_rate"] = 2.0e-4
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = commit(root, "retune without re-running")
    run(["git", "reset", "-q", "--hard", published], root)
    report = audit(root, changed, tmp_path)
    differences = failed(report)
    assert differences[("param", "train.learning_rate")]["recorded"] == 5e-05  # '5e-05' in dvc.lock
    assert differences[("param", "train.learning_rate")]["reproduced"] == 2e-04
    assert ("output", "train:models/model") in differences
    assert ("output", "ingest:data/raw/raw.parquet") not in differences  # upstream is unaffected


def test_clear_errors(recorded, monkeypatch):
    root, _ = recorded
    monkeypatch.chdir(root)
    with pytest.raises(AuditError, match="neither a git revision nor a run id"):
        audit(root, "0123456789abcdef0123456789abcdef")
    first = run(["git", "rev-list", "--max-parents=0", "HEAD"], root).strip()
    with pytest.raises(AuditError, match="no dvc.lock"):
        audit(root, first)
    empty_tree = run(["git", "hash-object", "-t", "tree", "/dev/null"], root).strip()
    before_pipeline = run(["git", "commit-tree", empty_tree, "-m", "empty"], root).strip()
    with pytest.raises(AuditError, match="predates the pipeline"):
        audit(root, before_pipeline)
    assert issubclass(AuditError, StageError)


def test_dirty_recorded_run_is_refused(recorded, monkeypatch):
    import mlflow

    root, published = recorded
    monkeypatch.chdir(root)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("reprolab").experiment_id
    dirty = client.create_run(experiment, tags={"git.commit": published, "git.dirty": "true",
                                                "git.dirty_paths": "stages/train.py"})
    with pytest.raises(AuditError, match="dirty tree .stages/train.py."):
        audit(root, dirty.info.run_id)


def test_other_cpu_kernels_let_metrics_decide(recorded, tmp_path, monkeypatch):
    """Audited on other CPU kernels than the recorded ones (torch's generic kernels here, as on a CPU
    without AVX2 or an aarch64 machine), the weights differ in the last bits: the audit says why, and
    the metrics decide within the tolerance. Data stages must still match exactly."""
    root, published = recorded
    monkeypatch.chdir(root)
    kernels = json.loads((root / "reports/train.json").read_text())["cpu_kernels"]
    if kernels["torch_capability"] == "DEFAULT":
        pytest.skip("the result was recorded on torch's generic kernels already")
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    report = audit(root, published, tmp_path)
    assert report["cpu_kernels"] == {"recorded": kernels, "reproduced": {**kernels, "torch_capability": "DEFAULT"}}
    assert report["inexact"].startswith("across CPU kernels") and report["metric_tolerance"] == 0.01
    checks = {(c["kind"], c["name"]): c for c in report["checks"]}
    for seen_as in (("output", "train:models/model"), ("dependency", "evaluate:models/model")):
        model = checks[seen_as]
        assert model["recorded"] != model["reproduced"] and model["ok"] and "across CPU kernels" in model["detail"]
    metrics_agree = True
    for (kind, name), check in checks.items():
        if kind == "metric":
            agrees = abs(check["reproduced"] - check["recorded"]) <= 0.01
            assert check["ok"] == agrees, check
            metrics_agree &= agrees
        elif name.split(":")[0] not in ("train", "evaluate"):
            assert check["recorded"] == check["reproduced"] and check["ok"], check
    assert report["verdict"] == ("pass" if metrics_agree else "fail")
    text = (tmp_path / "audit.md").read_text()
    assert "bits cannot match across CPU kernels" in text
    assert "`train:models/model`" in text.split("## What differed within what this audit allows")[1]


def test_kernels_decide_whether_bits_must_match():
    avx2 = {"kernels": "portable", "machine": "x86_64", "torch_capability": "AVX2"}
    assert inexact_reason("cpu", "cpu", avx2, avx2) == ""
    # native asked on an AVX2 machine runs the same kernels as portable
    assert inexact_reason("cpu", "cpu", avx2, {**avx2, "kernels": "native"}) == ""
    arm = {"kernels": "portable", "machine": "aarch64", "torch_capability": "DEFAULT"}
    assert inexact_reason("cpu", "cpu", avx2, arm) == (
        "across CPU kernels (x86_64 AVX2 (portable) recorded, aarch64 DEFAULT (portable) here)")
    assert inexact_reason("cpu", "cpu", None, arm) == ""  # an older result without the record: exact
    assert inexact_reason("cuda:0", "cpu", None, arm).startswith("on CUDA")


def test_only_what_the_weights_decide_is_excused():
    lock = {"stages": {"tokenize": {"outs": [{"path": "data/tokens"}]},
                       "train": {"outs": [{"path": "models/model"}]},
                       "evaluate": {"outs": [{"path": "reports/metrics.json"}]}}}
    checks = [Check("output", "train:models/model", "a", "b", False),
              Check("dependency", "evaluate:models/model", "a", "b", False),
              Check("output", "evaluate:reports/metrics.json", "c", "d", False),
              Check("mlflow_model", "models/model/model.safetensors", "e", "f", False),
              Check("output", "tokenize:data/tokens", "g", "h", False),
              Check("dependency", "train:data/tokens", "g", "h", False),
              Check("metric", "transformer.macro_f1", 0.9, 0.8, False)]
    excuse_weights(checks, "across CPU kernels", trained_paths(lock))
    assert [c.ok for c in checks] == [True, True, True, True, False, False, False]
    assert checks[0].detail == "differs across CPU kernels; metrics decide"


def test_recorded_kernels_fall_back_to_the_run_tags():
    class Run:  # the part of an MLflow run the audit reads
        class data:  # noqa: N801
            tags = {"cpu.kernels": "native", "cpu.machine": "x86_64", "cpu.torch_capability": "AVX512",
                    "git.commit": "abc"}

    from_file = {"kernels": "portable", "machine": "x86_64", "torch_capability": "AVX2"}
    assert recorded_kernels({"cpu_kernels": from_file}, Run) == from_file
    assert recorded_kernels({}, Run) == {"kernels": "native", "machine": "x86_64", "torch_capability": "AVX512"}
    assert recorded_kernels({}, None) is None
