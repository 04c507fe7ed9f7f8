"""The real `dvc repro` on a reduced params file, in a scratch git repo: all six stages, then the
DVC contract users rely on (a second repro is a no-op; a train param re-runs only train+evaluate),
and data checks on what the stages wrote (schema, labels, leaks, nulls, rows conserved)."""

from __future__ import annotations

import csv
import json
from io import StringIO
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from stages import encoding, io, paths
from tests.conftest import REDUCED, commit, lock_outs, make_project, run

pytestmark = pytest.mark.slow


def ran_stages(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("project"), REDUCED)


@pytest.fixture(scope="module")
def first_run(project) -> str:
    output = run(["dvc", "repro"], project)
    commit(project, "first run")
    return output


def test_all_stages_run_and_write_metrics(project, first_run):
    assert ran_stages(first_run) == ["ingest", "clean", "tokenize", "augment", "train", "evaluate"]
    metrics = json.loads((project / "reports/metrics.json").read_text())
    for model in ("transformer", "baseline"):
        assert 0 <= metrics[model]["macro_f1"] <= 1
        assert set(metrics[model]["per_class"]) == {"ham", "spam"}
        assert "roc_auc" in metrics[model] and "pr_auc" in metrics[model]
    assert metrics["baseline"]["macro_f1"] > 0.6  # TF-IDF separates spam from ham even on 56 rows
    assert (project / paths.MODEL_DIR / "model.safetensors").is_file()
    assert not list((project / paths.MODEL_DIR).glob("*.bin"))  # safetensors only
    assert all((project / paths.FIGURES / f).read_bytes()[:4] == b"\x89PNG" for f in ("roc.png", "pr.png"))


def test_rows_are_conserved_across_stages(project, first_run):
    ingest = json.loads((project / "reports/ingest.json").read_text())
    data = json.loads((project / "reports/data.json").read_text())
    assert ingest["rows_in"] == 6046 == ingest["rows_kept"] + ingest["rows_rejected"]
    assert pq.read_metadata(project / paths.rejects("ingest")).num_rows == ingest["rows_rejected"]
    assert data["rows_in"] == ingest["rows_kept"] == 80
    assert data["rows_kept"] + data["rows_rejected"] == data["rows_in"]
    assert sum(s["rows"] for s in data["splits"].values()) == data["rows_kept"]
    assert pq.read_metadata(project / paths.rejects("clean")).num_rows == data["rows_rejected"]


def test_data_checks_schema_labels_leaks_nulls(project, first_run):
    ids = {}
    for split in paths.SPLITS:
        clean = pq.read_table(project / paths.clean_split(split))
        tokens = pq.read_table(project / paths.token_split(split))
        assert clean.schema.names == ["id", "label", "text"]
        assert tokens.schema.equals(encoding.TOKEN_SCHEMA)
        assert all(column.null_count == 0 for column in clean.columns + tokens.columns)
        assert set(clean["label"].to_pylist()) == {"ham", "spam"}
        assert clean["id"].to_pylist() == tokens["id"].to_pylist()
        assert max(len(seq) for seq in tokens["input_ids"].to_pylist()) <= 32
        ids[split] = set(clean["id"].to_pylist())
        texts = {t.casefold() for t in clean["text"].to_pylist()}
        ids[split + "_text"] = texts
    assert not (ids["train"] & ids["test"] or ids["train"] & ids["val"] or ids["val"] & ids["test"])
    assert not (ids["train_text"] & ids["test_text"])  # no text leaks across the split
    augmented = pq.read_table(project / paths.AUGMENTED).to_pylist()
    assert augmented and all(row["origin_id"] in ids["train"] for row in augmented)


def test_second_repro_is_a_noop(project, first_run):
    output = run(["dvc", "repro"], project)
    assert ran_stages(output) == []
    assert "Data and pipelines are up to date" in output


def test_forced_rerun_is_byte_identical(project, first_run):
    """Two cold runs give the same bytes for every output, model weights and metrics included."""
    before, metrics = lock_outs(project), (project / "reports/metrics.json").read_bytes()
    output = run(["dvc", "repro", "--force"], project)
    assert len(ran_stages(output)) == 6
    assert lock_outs(project) == before
    assert (project / "reports/metrics.json").read_bytes() == metrics
    assert "dvc.lock" not in run(["git", "status", "--porcelain"], project)


def test_dvc_remote_push_pull_round_trip(project, first_run):
    import shutil

    run(["dvc", "push"], project)
    assert any((project / ".dvc-remote").rglob("*"))  # the default local remote, inside the repo
    md5 = lock_outs(project)["data/clean/train.parquet"]
    shutil.rmtree(project / ".dvc/cache")
    (project / "data/clean/train.parquet").unlink()
    shutil.rmtree(project / "models/model")
    run(["dvc", "pull"], project)
    assert io.file_md5(project / "data/clean/train.parquet") == md5
    assert (project / "models/model/model.safetensors").is_file()
    assert "up to date" in run(["dvc", "status"], project)


def test_trace_prints_lineage_of_the_train_run(project, first_run):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    (train,) = client.search_runs([client.get_experiment_by_name("reprolab").experiment_id],
                                  filter_string="tags.`reprolab.stage` = 'train'", max_results=1)
    output = run(["python", "-m", "stages.cli", "trace", train.info.run_id], project)
    recorded = train.data.tags["git.commit"]
    assert run(["git", "cat-file", "-t", recorded], project).strip() == "commit"
    assert f"commit:  {recorded}  dirty: false" in output
    assert "data/tokens/train.parquet" in output and "<- tokenize run" in output
    assert "train.learning_rate = 5e-05" in output and "test.transformer.macro_f1" in output
    assert "torch==2.13.0" in output


def test_learning_rate_change_reruns_only_train_and_evaluate(project, first_run):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["learning_rate"] = 1.0e-4
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    output = run(["dvc", "repro"], project)
    assert ran_stages(output) == ["train", "evaluate"]
    status = run(["dvc", "status"], project)
    assert "up to date" in status


def test_runs_are_tracked_in_mlflow(project, first_run):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("reprolab")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    stages = [run.data.tags["reprolab.stage"] for run in runs]
    assert stages[:5] == ["ingest", "clean", "tokenize", "augment", "train"]
    train = runs[4]
    assert train.data.params["train.learning_rate"] == "5e-05"
    init = run(["git", "rev-list", "--max-parents=0", "HEAD"], project).strip()
    assert train.data.tags["git.commit"] == init and train.data.tags["git.dirty"] == "false"
    assert "test.transformer.macro_f1" in train.data.metrics  # evaluate logged into the train run
    assert "val_macro_f1" in train.data.metrics
    inputs = {d.dataset.name: d.dataset.digest for d in train.inputs.dataset_inputs}
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    tokenize_outs = {o["path"]: o["md5"] for o in lock["stages"]["tokenize"]["outs"]}
    assert inputs["data/tokens/train.parquet"] == tokenize_outs["data/tokens/train.parquet"]
    mlflow.set_tracking_uri(client.tracking_uri)
    (logged,) = mlflow.search_logged_models(
        experiment_ids=[experiment.experiment_id],
        filter_string=f"source_run_id = '{train.info.run_id}'", output_format="list")
    classifier = mlflow.transformers.load_model(logged.model_uri)  # reloads offline
    assert classifier("win a free prize now")[0]["label"] in {"ham", "spam"}


def test_compare_and_metrics_diff_across_commits(project, first_run):
    """After the learning-rate change: two commits, compared offline and with `dvc metrics diff`."""
    run(["dvc", "repro"], project)
    commit(project, "higher learning rate")
    diff = run(["dvc", "metrics", "diff", "HEAD~1", "--json"], project)
    assert "transformer.macro_f1" in diff
    params_diff = run(["dvc", "params", "diff", "HEAD~1"], project)
    assert "train.learning_rate" in params_diff
    plots = json.loads(run(["dvc", "plots", "diff", "HEAD~1", "--json", "--split"], project, with_stderr=False))
    assert {"ROC", "Precision-recall", "Confusion (transformer)"} <= set(plots["data"])
    output = run(["python", "-m", "stages.cli", "compare", "HEAD~1", "HEAD", "--out", "cmp"], project)
    assert "html: cmp/compare.html" in output
    markdown = (project / "cmp/compare.md").read_text()
    assert "| train.learning_rate | 5e-05 | 0.0001 |" in markdown
    assert "metrics.transformer.macro_f1" in markdown
    for name in ("roc", "pr", "train_history"):
        assert (project / f"cmp/{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (project / "cmp/compare.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "http" not in page  # nothing to fetch


def test_temp_experiment_lands_in_the_same_store_with_its_name(project, first_run):
    """`dvc exp run --temp` runs in a scratch workspace; DVC_ROOT points tracking at this repo."""
    import mlflow

    baseline = run(["git", "rev-parse", "HEAD"], project).strip()
    run(["dvc", "exp", "run", "--temp", "-n", "lr-3e-4", "-S", "train.learning_rate=3e-4"], project)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("reprolab")
    (train,) = client.search_runs([experiment.experiment_id], filter_string="tags.`dvc.exp_name` = 'lr-3e-4'"
                                  " and tags.`reprolab.stage` = 'train'")
    assert train.data.tags["dvc.exp_baseline_rev"] == baseline
    assert train.data.params["train.learning_rate"] == "0.0003"
    assert "test.transformer.macro_f1" in train.data.metrics
    assert train.info.artifact_uri.startswith((project / "mlartifacts").as_uri())
    # --csv: the table view is cut to the terminal's width, which is narrow under CI.
    shown = list(csv.DictReader(StringIO(run(["dvc", "exp", "show", "--csv"], project))))
    (row,) = [r for r in shown if r["Experiment"] == "lr-3e-4"]
    assert float(row["train.learning_rate"]) == 3e-4
