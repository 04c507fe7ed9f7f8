"""The real `dvc repro` on a reduced params file, in a scratch git repo: all six stages, then the
DVC contract users rely on (a second repro is a no-op; a train param re-runs only train+evaluate),
and data checks on what the stages wrote (schema, labels, leaks, nulls, rows conserved)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from stages import encoding, paths
from tests.conftest import CORPUS, MODEL, REPO

pytestmark = pytest.mark.slow
COPIED = ["dvc.yaml", "params.yaml", "stages", ".dvc/config", ".dvcignore", ".gitignore"]


def run(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "PYTHONPATH": str(cwd)}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def ran_stages(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("project")
    for item in COPIED:
        source, dest = REPO / item, root / item
        dest.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, dest)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["ingest"]["path"] = str(CORPUS)
    params["ingest"]["max_rows_per_label"] = 40
    params["model"]["name_or_path"] = str(MODEL)
    params["tokenize"]["max_length"] = 32
    params["augment"]["fraction"] = 0.5
    params["train"].update(batch_size=8, log_every_steps=2)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], root)
    run(["git", "add", "-A"], root)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"], root)
    return root


@pytest.fixture(scope="module")
def first_run(project) -> str:
    return run(["dvc", "repro"], project)


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
    assert train.data.tags["git.commit"] == run(["git", "rev-parse", "HEAD"], project).strip()
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
