"""`reprolab audit` on a copy of the published reduced project (its source mails are in git): the
published run passes, every bit; audited on other CPU kernels, the metrics decide; the history audit
proves a cold re-run of every stage gives the same bytes. (The first two take the data stages from the
copy's own DVC run cache, as `audit_history` does across commits: what they test is the model's stages.)
(How each kind of difference is reported is checked on the comparison functions in unit/test_audit_checks.py.)"""

from __future__ import annotations

import json

import pytest

from reprolab.audit.check import AuditError
from reprolab.audit.history import audit_history
from reprolab.audit.reproduce import audit, recorded_files
from reprolab.errors import StageError
from reprolab.process_settings import PORTABLE_CPU_KERNELS
from tests.conftest import (
    CACHED_WITH_THE_SAME_WEIGHTS,
    DATA_STAGES,
    MODEL_STAGES,
    commit,
    ran_stages,
    run,
    update_params,
)


def failed(report: dict) -> dict[tuple[str, str], dict]:
    return {(c["kind"], c["name"]): c for c in report["checks"] if not c["ok"]}


def train_runs(project):
    """The project's train runs, oldest first: one at the commit before its results, one at the commit
    holding them (see tests/conftest.py `Published`)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("reprolab").experiment_id
    return client, client.search_runs(
        [experiment], filter_string="tags.`reprolab.stage` = 'train'", order_by=["attributes.start_time ASC"]
    )


def test_published_run_passes_every_bit_and_its_mlflow_record(published, project, tmp_path, monkeypatch):
    """Audited by the MLflow run id of a train run at the results' commit: every hash of its dvc.lock
    and every metric of its reports, and the run's own record (logged test metrics, input digests, the
    weights' md5). Train, evaluate, distill and evaluate_student run again; the data stages, and both
    exports and the teacher's logits once the weights come out byte-identical, come from the run cache."""
    monkeypatch.chdir(project)
    client, (_, train) = train_runs(project)
    runs_before = len(client.search_runs([train.info.experiment_id]))
    report = audit(project, train.info.run_id, tmp_path, cache_dir=project / ".dvc/cache")
    assert report["verdict"] == "pass", failed(report)
    assert report["reused_stages"] == CACHED_WITH_THE_SAME_WEIGHTS
    assert report["commit"] == train.data.tags["git.commit"] == published.commit
    assert report["inexact"] == "" and report["metric_tolerance"] == 0.0  # every hash and metric exact
    kinds = {(c["kind"], c["name"]) for c in report["checks"]}
    assert {
        ("output", "train:models/model"),
        ("output", "evaluate:reports/metrics.json"),
        ("output", "ingest:data/raw/raw.parquet"),
        ("dependency", "evaluate:models/model"),
        ("metric", "transformer.macro_f1"),
        ("metric", "reports/student/metrics.json:student.macro_f1"),
        ("mlflow_metric", "transformer.macro_f1"),
        ("mlflow_model", "models/model/model.safetensors"),
        ("mlflow_input", "data/tokens/train.parquet"),
        ("output", "export:models/export"),
        ("output", "export:reports/export.json"),
    } <= kinds
    # export.json holds no timings: it is held to its hash, with no figure excused.
    assert not {name for kind, name in kinds if kind == "export_metric"}
    assert "PASS" in (tmp_path / "audit.md").read_text()
    assert json.loads((tmp_path / "audit.json").read_text())["commit"] == published.commit
    assert report["environment"]["recorded"]["torch"] == train.data.tags["version.torch"]
    # The user's working copy, worktree list and MLflow history are untouched.
    assert run(["git", "status", "--porcelain"], project) == ""
    assert len(run(["git", "worktree", "list"], project).splitlines()) == 1
    assert len(client.search_runs([train.info.experiment_id])) == runs_before


def test_a_run_recorded_before_its_results_were_committed_is_judged_on_its_mlflow_record(project):
    """Its commit has no dvc.lock: the audit compares against MLflow's record instead of refusing."""
    _, (first, _) = train_runs(project)
    files = recorded_files(project, first.data.tags["git.commit"], first)
    assert files["dvc.lock"] is None and files["dvc.yaml"] is not None
    with pytest.raises(AuditError, match="no dvc.lock"):
        recorded_files(project, first.data.tags["git.commit"])  # a bare commit without results


def test_clear_errors(project, monkeypatch):
    monkeypatch.chdir(project)
    with pytest.raises(AuditError, match="neither a git revision nor a run id"):
        audit(project, "0123456789abcdef0123456789abcdef")
    first = run(["git", "rev-list", "--max-parents=0", "HEAD"], project).strip()
    with pytest.raises(AuditError, match="no dvc.lock"):
        audit(project, first)
    empty_tree = run(["git", "hash-object", "-t", "tree", "/dev/null"], project).strip()
    before_pipeline = run(["git", "commit-tree", empty_tree, "-m", "empty"], project).strip()
    with pytest.raises(AuditError, match="predates the pipeline"):
        audit(project, before_pipeline)
    assert issubclass(AuditError, StageError)


def test_dirty_recorded_run_is_refused(published, project, monkeypatch):
    import mlflow

    monkeypatch.chdir(project)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("reprolab").experiment_id
    dirty = client.create_run(
        experiment, tags={"git.commit": published.commit, "git.dirty": "true", "git.dirty_paths": "stages/train.py"}
    )
    with pytest.raises(AuditError, match="dirty tree .stages/train.py."):
        audit(project, dirty.info.run_id)


def test_other_cpu_kernels_let_metrics_decide(project, tmp_path, monkeypatch):
    """Audited on other CPU kernels than the recorded ones (torch's generic kernels here, as on a CPU
    without AVX2 or an aarch64 machine), the weights differ in the last bits: the audit says why, and
    the metrics decide within the tolerance. Data stages must still match exactly (no torch kernel
    computes them: the run cache gives them here, as it would a history audit).

    Measured on the reduced project: the generic kernels' weights differ, and every metric moves by
    less than 0.01 (most not at all: 18 test rows rarely change a prediction), so the verdict is PASS.
    """
    monkeypatch.chdir(project)
    update_params(project, {"audit": {"inexact_metric_tolerance": 0.01}})
    published = commit(project, "audit tolerance stated")
    kernels = json.loads((project / "reports/train.json").read_text())["cpu_kernels"]
    if kernels["torch_capability"] == "DEFAULT":
        pytest.skip("the result was recorded on torch's generic kernels already")
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    # The data stages (no torch kernel among them) from the run cache; the model's stages run.
    report = audit(project, published, tmp_path, cache_dir=project / ".dvc/cache")
    assert report["reused_stages"] == DATA_STAGES
    assert report["cpu_kernels"]["recorded"] == kernels
    assert report["cpu_kernels"]["reproduced"] == {**kernels, "torch_capability": "DEFAULT"}
    assert report["inexact"].startswith("across CPU kernels") and report["metric_tolerance"] == 0.01
    checks = {(c["kind"], c["name"]): c for c in report["checks"]}
    for seen_as in (("output", "train:models/model"), ("dependency", "evaluate:models/model")):
        model = checks[seen_as]
        assert model["recorded"] != model["reproduced"] and model["ok"] and "across CPU kernels" in model["detail"]
    for (kind, name), check in checks.items():
        if kind not in ("metric", "export_metric") and name.split(":")[0] not in MODEL_STAGES:
            assert check["recorded"] == check["reproduced"] and check["ok"], check  # data stages: exact
    assert report["verdict"] == "pass", failed(report)
    text = (tmp_path / "audit.md").read_text()
    assert "bits cannot match across CPU kernels" in text
    assert "`train:models/model`" in text.split("## What differed within what this audit allows")[1]


def test_history_audits_each_result_once_and_computes_each_stage_once(project, tmp_path, monkeypatch):
    """`reprolab audit --all` on three commits with results. The published one is audited in full,
    every stage computed again from a cold cache (the same bytes as recorded). A
    commit that changes nothing its result depends on takes that verdict without an audit. A result
    from before kernels were recorded (its train stage here records none) runs on the portable caps
    of its time, even for a user who asked for native kernels; and its data stages, whose code, params
    and inputs are those of the first audit, come from DVC's run cache in the shared scratch cache."""
    monkeypatch.chdir(project)
    with pytest.raises(AuditError, match="not a git revision"):
        audit_history(project, since="no-such-rev")
    published = run(["git", "rev-parse", "HEAD"], project).strip()
    (project / "NOTES.md").write_text("nothing a stage reads\n")
    commit(project, "notes")
    fitting = project / "reprolab/model/fitting.py"  # where train (and distill) write their report
    fitting.write_text(fitting.read_text().replace("provenance.cpu_kernels())", "{})"))
    assert ran_stages(run(["dvc", "repro"], project)) == ["train", "distill"]
    unrecorded = commit(project, "a train stage from before kernels were recorded")
    assert json.loads((project / "reports/train.json").read_text())["cpu_kernels"] == {}

    monkeypatch.setenv("REPROLAB_CPU_KERNELS", "native")
    for name in PORTABLE_CPU_KERNELS:
        monkeypatch.delenv(name, raising=False)
    summary = audit_history(project, out_dir=tmp_path)
    rows = summary["rows"]
    assert [row["verdict"] for row in rows] == ["pass", "pass", "pass"] and summary["verdict"] == "pass"
    assert rows[0]["commit"] == published and rows[0]["reused_stages"] == []
    assert rows[1]["same_as"] == published and rows[1]["cause"].startswith("same pipeline, params, results")
    # evaluate (and evaluate_student) run again too: DVC keeps no run cache of a stage with uncached plot
    # data among its outs; the exports, whose reports hold no timings, and the teacher's logits come from
    # the run cache with the byte-identical models
    assert rows[2]["reused_stages"] == CACHED_WITH_THE_SAME_WEIGHTS
    assert (summary["commits"], summary["audited"]) == (3, 2)

    report = json.loads((tmp_path / unrecorded[:12] / "audit.json").read_text())
    assert report["cpu_kernels"]["audited_on"].startswith("kernels not recorded")
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{report['scratch']}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("reprolab").experiment_id])
    # The data stages, both exports and the teacher's logits came from the run cache; both evaluates ran,
    # although the outputs they committed to git were in the revision's tree: the audit removes them first.
    assert sorted(r.data.tags["reprolab.stage"] for r in runs) == [
        "distill",
        "evaluate",
        "evaluate_student",
        "pipeline",
        "train",
    ]
    (train_run,) = [r for r in runs if r.data.tags["reprolab.stage"] == "train"]
    (evaluate_run,) = [r for r in runs if r.data.tags["reprolab.stage"] == "evaluate"]
    assert evaluate_run.data.tags["reprolab.train_run_id"] == train_run.info.run_id
    assert "test.transformer.macro_f1" in evaluate_run.data.metrics
    assert train_run.data.tags["cpu.kernels"] == "portable"
    if train_run.data.tags["cpu.machine"] == "x86_64":  # elsewhere there is nothing to hold
        assert train_run.data.tags["cpu.numpy_simd"] in ("X86_V3", "baseline")
    text = (tmp_path / "audit-history.md").read_text()
    assert "PASS**: 3 of 3 commits with results reproduce" in text
    assert f"| `{unrecorded[:12]}` a train stage from before kernels were recorded |" in text
