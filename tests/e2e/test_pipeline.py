"""The real `dvc repro` on the reduced project (tests/conftest.py `published`): all six stages, then the
DVC contract users rely on (a second repro is a no-op; a train param re-runs only train+evaluate), and
data checks on what the stages wrote (schema, labels, leaks, nulls, rows conserved). A test that
changes the project works on its own copy (`project`), so none depends on another's order."""

from __future__ import annotations

import csv
import json
import re
from io import StringIO
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from reprolab import paths, storage
from reprolab.encoding import encoder
from tests.conftest import (
    MAILS_PER_GROUP,
    MODEL_STAGES,
    QUALITY_MARGIN,
    SOURCE_GROUPS,
    STAGES,
    commit,
    lock_outs,
    ran_stages,
    run,
)


def majority_macro_f1(labels: list[str]) -> float:
    """Macro-F1 of always predicting the most common class: F1 2p/(1+p) for it (p its share), 0 for the rest."""
    share = max(labels.count(label) for label in set(labels)) / len(labels)
    return 2 * share / (1 + share) / len(set(labels))


def test_all_stages_run_and_beat_the_majority_class(published):
    root = published.root
    assert ran_stages(published.first_run) == ["check_params", *STAGES]
    # Each stage speaks under its own name, the student's too (they run train's loop, evaluate's module).
    for said in ("distill: epoch 1 (step", "evaluate_student: done in", "export_student: done in"):
        assert said in published.first_run, said
    assert "train: epoch 1 (step" in published.first_run.split("Running stage 'distill'")[0]
    metrics = json.loads((root / paths.METRICS).read_text())
    test_labels = pq.read_table(root / paths.clean_split("test"))["label"].to_pylist()
    floor = majority_macro_f1(test_labels) + QUALITY_MARGIN
    for model in ("transformer", "baseline"):
        assert metrics[model]["macro_f1"] >= floor, (model, metrics[model]["macro_f1"], floor)
        assert set(metrics[model]["per_class"]) == {"ham", "spam"}
        assert "roc_auc" in metrics[model] and "pr_auc" in metrics[model]
    assert (root / paths.MODEL_DIR / "model.safetensors").is_file()
    assert not list((root / paths.MODEL_DIR).glob("*.bin"))  # safetensors only
    figures = {
        "evaluate": ["confusion_matrix.png", "per_class.png", "pr.png", "roc.png", "threshold.png"],
        "train": ["training_curves.png"],
    }
    for stage, names in figures.items():
        folder = root / paths.FIGURES / stage
        assert sorted(f.name for f in folder.iterdir()) == names
        assert all((folder / name).read_bytes()[:4] == b"\x89PNG" for name in names)
    versus = metrics["transformer_vs_baseline"]
    assert versus["verdict"] in ("transformer better", "baseline better", "within noise")
    assert versus["interval_low"] <= versus["macro_f1_difference"] <= versus["interval_high"]


def test_rows_are_conserved_across_stages(published):
    root = published.root
    ingest = json.loads((root / paths.INGEST_REPORT).read_text())
    data = json.loads((root / paths.DATA_REPORT).read_text())
    sources = len(SOURCE_GROUPS) * MAILS_PER_GROUP
    assert ingest["rows_in"] == sources == ingest["rows_kept"] + ingest["rows_rejected"]
    assert pq.read_metadata(root / paths.rejects("ingest")).num_rows == ingest["rows_rejected"]
    assert data["rows_in"] == ingest["rows_kept"]
    assert data["rows_kept"] + data["rows_rejected"] == data["rows_in"]
    assert sum(s["rows"] for s in data["splits"].values()) == data["rows_kept"]
    assert pq.read_metadata(root / paths.rejects("clean")).num_rows == data["rows_rejected"]


def test_data_checks_schema_labels_leaks_nulls(published):
    root = published.root
    ids, texts = {}, {}
    for split in paths.SPLITS:
        clean = pq.read_table(root / paths.clean_split(split))
        tokens = pq.read_table(root / paths.token_split(split))
        assert clean.schema.names == ["id", "label", "text", "replacements"]
        assert tokens.schema.equals(encoder.TOKEN_SCHEMA)
        assert all(column.null_count == 0 for column in clean.columns + tokens.columns)
        assert set(clean["label"].to_pylist()) == {"ham", "spam"}
        assert clean["id"].to_pylist() == tokens["id"].to_pylist()
        assert max(len(seq) for seq in tokens["input_ids"].to_pylist()) <= 32
        ids[split] = set(clean["id"].to_pylist())
        texts[split] = {t.casefold() for t in clean["text"].to_pylist()}
    assert not (ids["train"] & ids["test"] or ids["train"] & ids["val"] or ids["val"] & ids["test"])
    assert not (texts["train"] & texts["test"])  # no text leaks across the split
    augmented = pq.read_table(root / paths.AUGMENTED).to_pylist()
    assert augmented and all(row["origin_id"] in ids["train"] for row in augmented)


def test_second_repro_is_a_noop(project):
    # In a copy: `dvc repro` takes the project's lock and writes under .dvc/tmp while other workers'
    # tests copy and read the published project.
    output = run(["dvc", "repro"], project)
    assert ran_stages(output) == []
    assert "Data and pipelines are up to date" in output


def test_a_fresh_clone_repro_leaves_git_clean_and_shows_and_records_the_headline(published, tmp_path):
    """A fresh clone retrains a byte-identical model, so DVC skips evaluate: the committed metrics are
    still the headline, on the terminal and in the execution's MLflow run, and nothing in git moves.
    The clone gets the published DVC cache without the model (as after a `dvc pull` of the data), so
    its data stages, export and the teacher's logits come from DVC's run cache and only the models are
    computed again (the student's folder is not checked out, and DVC keeps no run cache of a stage
    with uncached plot data among its outs, as distill's, and train's, are)."""
    import shutil

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(published.root), str(clone)], tmp_path)
    shutil.copytree(published.root / ".dvc/cache", clone / ".dvc/cache")
    model = next(
        o["md5"]
        for o in yaml.safe_load((clone / "dvc.lock").read_text())["stages"]["train"]["outs"]
        if o["path"] == "models/model"
    )
    # Without the folder's listing DVC cannot restore models/model: train runs, as in a fresh clone.
    (clone / ".dvc/cache/files/md5" / model[:2] / model[2:]).unlink()
    output = run(["dvc", "repro"], clone)
    assert ran_stages(output) == ["train", "distill"] and "Stage 'evaluate' didn't change" in output
    assert run(["git", "status", "--porcelain"], clone) == ""
    metrics = json.loads((clone / paths.METRICS).read_text())
    shown = run(["python", "-m", "reprolab.cli", "show"], clone).splitlines()
    assert shown[0].startswith("1. ") and f"macro-F1 {metrics['transformer']['macro_f1']:.4f}" in "\n".join(shown)
    assert metrics["transformer_vs_baseline"]["verdict"] in shown[2]
    exports = ["export onnx", "export onnx-int8", "export torch"]
    assert [line.split(":")[0] for line in shown[3:6]] == exports
    # Then the student's: against its teacher, and its own exports.
    assert shown[6] == "student (models/student):" and shown[9].startswith("student - transformer macro-F1")
    assert [line.split(":")[0] for line in shown[10:]] == exports
    _, runs = stage_runs(clone)
    (parent,) = [r for r in runs if r.data.tags["reprolab.stage"] == "pipeline"]
    assert parent.data.metrics["test.transformer.macro_f1"] == metrics["transformer"]["macro_f1"]
    (evaluate,) = [
        r
        for r in runs
        if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id and r.data.tags["reprolab.stage"] == "evaluate"
    ]
    assert parent.data.tags["reprolab.test_metrics_run"] == evaluate.info.run_id
    assert "reprolab.evaluate.skipped" in evaluate.data.tags
    assert evaluate.data.metrics["test.transformer.macro_f1"] == metrics["transformer"]["macro_f1"]
    learning_rate = yaml.safe_load((clone / "params.yaml").read_text())["train"]["learning_rate"]
    assert float(parent.data.params["train.learning_rate"]) == learning_rate


def test_dvc_remote_push_pull_round_trip(project):
    import shutil

    run(["dvc", "push"], project)
    assert any((project / ".dvc-remote").rglob("*"))  # the default local remote, inside the repo
    md5 = lock_outs(project)["data/clean/train.parquet"]
    shutil.rmtree(project / ".dvc/cache")
    (project / "data/clean/train.parquet").unlink()
    shutil.rmtree(project / "models/model")
    run(["dvc", "pull"], project)
    assert storage.file_md5(project / "data/clean/train.parquet") == md5
    assert (project / "models/model/model.safetensors").is_file()
    assert "up to date" in run(["dvc", "status"], project)


def stage_runs(root):
    """The project's MLflow client and its runs, oldest first."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("reprolab")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    return client, runs


def test_trace_prints_lineage_of_the_train_run(published):
    root = published.root
    _, runs = stage_runs(root)
    train = next(r for r in runs if r.data.tags["reprolab.stage"] == "train")
    output = run(["python", "-m", "reprolab.cli", "trace", train.info.run_id], root)
    recorded = train.data.tags["git.commit"]
    assert run(["git", "cat-file", "-t", recorded], root).strip() == "commit"
    assert f"commit:  {recorded}  dirty: false" in output
    assert "data/tokens/train.parquet" in output and "<- tokenize run" in output
    learning_rate = yaml.safe_load((root / "params.yaml").read_text())["train"]["learning_rate"]
    assert f"train.learning_rate = {learning_rate}" in output and "epoch/val_macro_f1" in output
    assert f"torch=={train.data.tags['version.torch']}" in output


def test_the_student_learns_from_the_teachers_logits_and_is_registered_as_its_own_model(published):
    from reprolab.records import tracking

    root = published.root
    student = json.loads((root / paths.STUDENT_DIR / "config.json").read_text())
    assert student["num_hidden_layers"] == 1  # REDUCED's student_layers [1] of the tiny encoder's 2
    report = json.loads((root / paths.DISTILL_REPORT).read_text())
    assert report["train_rows"] == json.loads((root / paths.TRAIN_REPORT).read_text())["train_rows"]
    logits = pq.read_table(root / paths.TEACHER_LOGITS)
    assert logits.num_rows == report["train_rows"] and len(logits["logits"][0]) == 2  # ham, spam
    assert storage.file_md5(root / paths.STUDENT_DIR / "model.safetensors") != storage.file_md5(root / paths.WEIGHTS)
    client, runs = stage_runs(root)
    first_train = next(r for r in runs if r.data.tags["reprolab.stage"] == "train")
    (distill,) = [r for r in runs if r.data.tags["reprolab.stage"] == "distill"]
    assert distill.data.tags[tracking.TEACHER_RUN_TAG] == first_train.info.run_id
    (version,) = client.search_model_versions("name = 'reprolab-student'")
    assert version.run_id == distill.info.run_id
    assert version.tags[tracking.TEACHER_RUN_TAG] == first_train.info.run_id
    # The teacher's own versions are the two train runs' (see `published`), none of them the student.
    teachers = client.search_model_versions("name = 'reprolab'")
    assert sorted(v.run_id for v in teachers) == sorted(
        r.info.run_id for r in runs if r.data.tags["reprolab.stage"] == "train"
    )


def stage_seconds(output: str) -> dict[str, float]:
    """Each stage's own timing line ("train: done in 12.3 s") in a `dvc repro` log."""
    return {stage: float(seconds) for stage, seconds in re.findall(r"^(\w+): done in ([\d.]+) s$", output, re.M)}


def test_one_repro_is_one_parent_run_with_a_child_per_stage(published):
    import mlflow

    root = published.root
    client, runs = stage_runs(root)
    # Two executions (see `published`): the first `dvc repro`, then a forced re-run of train, whose
    # byte-identical weights leave evaluate skipped: that execution's test metrics are the first one's.
    parents = [r for r in runs if r.data.tags["reprolab.stage"] == "pipeline"]
    assert [p.info.run_name for p in parents] == ["dvc repro", "dvc repro --force"]
    assert runs[0] is parents[0]  # it starts when `dvc repro` started, before any stage
    trees = [[r for r in runs if r.data.tags.get("mlflow.parentRunId") == p.info.run_id] for p in parents]
    assert [[r.data.tags["reprolab.stage"] for r in tree] for tree in trees] == [STAGES, ["train"]]
    by_stage = {r.data.tags["reprolab.stage"]: r for r in trees[0]}
    assert parents[1].data.tags["reprolab.test_metrics_run"] == by_stage["evaluate"].info.run_id
    assert len(runs) == len(parents) + sum(map(len, trees))  # nothing outside the trees
    parent, children = parents[0], trees[0]
    # True durations: each child spans its process, at least what the stage itself timed.
    timed = stage_seconds(published.first_run)
    for child in children:
        stage = child.data.tags["reprolab.stage"]
        assert (child.info.end_time - child.info.start_time) / 1000 >= timed[stage], stage
        assert parent.info.start_time <= child.info.start_time
    assert parent.info.end_time == max(c.info.end_time for c in children) and parent.info.status == "FINISHED"
    assert parent.data.tags["git.commit"] == children[0].data.tags["git.commit"]
    train, evaluate = by_stage["train"], by_stage["evaluate"]
    # The student's scores name the distill run that trained it; the pipeline's headline stays the teacher's.
    student_scored = by_stage["evaluate_student"]
    assert student_scored.data.tags["reprolab.train_run_id"] == by_stage["distill"].info.run_id
    assert "test.student_vs_transformer.macro_f1_difference" in student_scored.data.metrics
    # The parent holds every param and the test metrics of the model it left, from the run that scored it.
    assert parent.data.params == train.data.params
    assert parent.data.tags["reprolab.test_metrics_run"] == evaluate.info.run_id
    assert {k: v for k, v in parent.data.metrics.items()} == {
        k: v for k, v in evaluate.data.metrics.items() if k.startswith("test.")
    }
    learning_rate = yaml.safe_load((root / "params.yaml").read_text())["train"]["learning_rate"]
    assert float(train.data.params["train.learning_rate"]) == learning_rate
    init = run(["git", "rev-list", "--max-parents=0", "HEAD"], root).strip()
    assert train.data.tags["git.commit"] == init and train.data.tags["git.dirty"] == "false"
    # Step and epoch values under distinct keys; the test metrics in evaluate's run, which names train's.
    assert {
        "step/train_loss",
        "step/learning_rate",
        "epoch/train_loss",
        "epoch/val_loss",
        "epoch/val_macro_f1",
    } <= train.data.metrics.keys()
    assert not {"train_loss", "learning_rate", "val_macro_f1"} & train.data.metrics.keys()
    steps = [m.step for m in client.get_metric_history(train.info.run_id, "step/learning_rate")]
    epochs = [m.step for m in client.get_metric_history(train.info.run_id, "epoch/val_macro_f1")]
    assert epochs == [1] and steps == sorted(steps) and len(steps) > 1
    step_rows = list(csv.DictReader(StringIO((root / paths.TRAIN_STEPS).read_text())))
    assert [int(r["step"]) for r in step_rows] == steps
    assert {a.path for a in client.list_artifacts(train.info.run_id, "reports/train")} == {
        "reports/train/train_history.csv",
        "reports/train/train_steps.csv",
        "reports/train/training_curves.png",
    }
    assert evaluate.data.tags["reprolab.train_run_id"] == train.info.run_id
    assert "test.transformer.macro_f1" in evaluate.data.metrics
    assert "test.transformer.macro_f1" not in train.data.metrics
    inputs = {d.dataset.name: d.dataset.digest for d in train.inputs.dataset_inputs}
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    tokenize_outs = {o["path"]: o["md5"] for o in lock["stages"]["tokenize"]["outs"]}
    assert inputs["data/tokens/train.parquet"] == tokenize_outs["data/tokens/train.parquet"]
    mlflow.set_tracking_uri(client.tracking_uri)
    (logged,) = mlflow.search_logged_models(
        experiment_ids=[train.info.experiment_id],
        filter_string=f"source_run_id = '{train.info.run_id}'",
        output_format="list",
    )
    # One registered model for the experiment, one version per train run, tagged with its commit and data.
    versions = client.search_model_versions("name = 'reprolab'")
    assert sorted(v.run_id for v in versions) == sorted(
        r.info.run_id for r in runs if r.data.tags["reprolab.stage"] == "train"
    )
    (version,) = [v for v in versions if v.run_id == train.info.run_id]
    assert (
        version.tags["git.commit"] == init
        and version.tags["data.data/tokens/train.parquet"] == inputs["data/tokens/train.parquet"]
        and version.tags["reprolab.model_md5"] == train.data.tags["reprolab.model_md5"]
    )
    # The whole package travels with the model (code_paths), so it loads where reprolab is not installed.
    logged_code = Path(mlflow.artifacts.download_artifacts(logged.model_uri)) / "code/reprolab"
    assert (logged_code / "inference/serving.py").is_file() and (logged_code / "params.py").is_file()
    classifier = mlflow.pyfunc.load_model(logged.model_uri)  # reloads offline
    assert classifier.metadata.get_input_schema().input_names() == ["text"]
    answer = classifier.predict(pd.DataFrame({"text": ["Subject: win a free prize now\n\nclick here to claim it"]}))
    assert answer["predicted"][0] in {"ham", "spam"} and answer["prob_ham"][0] + answer["prob_spam"][
        0
    ] == pytest.approx(1.0)


def test_a_learning_rate_experiment_reruns_the_models_stages_lands_in_the_store_and_compares(project):
    """`dvc exp run --temp` of a learning-rate change re-runs what it must, in a scratch workspace;
    DVC_ROOT points tracking at this repo. Ranked among HEAD's experiments, then applied and committed
    on top of the published result, it compares offline and with DVC."""
    before = yaml.safe_load((project / "params.yaml").read_text())["train"]["learning_rate"]
    baseline = run(["git", "rev-parse", "HEAD"], project).strip()
    output = run(["dvc", "exp", "run", "--temp", "-n", "lr-3e-4", "-S", "train.learning_rate=3e-4"], project)
    # check_params too: it runs after any edit of params.yaml
    assert ran_stages(output) == ["check_params", *MODEL_STAGES]
    client, _ = stage_runs(project)
    experiment = client.get_experiment_by_name("reprolab")
    (train,) = client.search_runs(
        [experiment.experiment_id], filter_string="tags.`dvc.exp_name` = 'lr-3e-4' and tags.`reprolab.stage` = 'train'"
    )
    assert train.data.tags["dvc.exp_baseline_rev"] == baseline
    assert train.data.params["train.learning_rate"] == "0.0003"
    (evaluate,) = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`reprolab.train_run_id` = '{train.info.run_id}'"
    )
    assert "test.transformer.macro_f1" in evaluate.data.metrics
    # One parent for the experiment's execution, named after it.
    parent = client.get_run(train.data.tags["mlflow.parentRunId"])
    assert parent.info.run_name == "dvc exp run lr-3e-4"
    assert evaluate.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert train.info.artifact_uri.startswith(experiment.artifact_location)  # beside the store, not in DVC's tmp
    # --csv: the table view is cut to the terminal's width, which is narrow under CI.
    shown = list(csv.DictReader(StringIO(run(["dvc", "exp", "show", "--csv"], project))))
    (row,) = [r for r in shown if r["Experiment"] == "lr-3e-4"]
    assert float(row["train.learning_rate"]) == 3e-4
    # Every experiment of HEAD ranked, each read by its name.
    run(["python", "-m", "reprolab.cli", "compare", "--experiments", "--out", "ranked"], project)
    report = (project / "ranked/compare.md").read_text()
    assert "| transformer | lr-3e-4 vs HEAD |" in report
    ranked = report.split("## Headline")[0]
    rows = [line.split(" | ") for line in ranked.splitlines() if line.startswith(("| 1 |", "| 2 |"))]
    assert sorted(row[1] for row in rows) == ["HEAD", "lr-3e-4"]
    assert [row[7] for row in rows if row[1] == "lr-3e-4"] == ["train.learning_rate=0.0003 |"]
    # The validation score to choose by, and each against its own TF-IDF baseline on the same test rows.
    assert all(0 < float(row[3]) <= 1 for row in rows)
    assert all(row[6].endswith(("transformer better", "TF-IDF better", "within noise")) for row in rows)

    run(["dvc", "exp", "apply", "lr-3e-4"], project)
    assert "up to date" in run(["dvc", "status"], project)
    commit(project, "higher learning rate")
    # The validation loss moves with the learning rate (the 17 test rows' predictions may all stay).
    diff = json.loads(run(["dvc", "metrics", "diff", "HEAD~1", "--json"], project, with_stderr=False))
    assert "best_val_loss" in diff["reports/train.json"]
    assert "train.learning_rate" in run(["dvc", "params", "diff", "HEAD~1"], project)
    plots = json.loads(run(["dvc", "plots", "diff", "HEAD~1", "--json", "--split"], project, with_stderr=False))
    assert {"ROC", "Precision-recall", "Confusion (transformer)"} <= set(plots["data"])
    output = run(["python", "-m", "reprolab.cli", "compare", "HEAD~1", "HEAD", "--out", "cmp"], project)
    assert "html: cmp/compare.html" in output
    markdown = (project / "cmp/compare.md").read_text()
    assert f"| train.learning_rate | {before} | 0.0003 |" in markdown
    assert "metrics.transformer.macro_f1" in markdown
    for name in ("roc", "pr", "train_history"):
        assert (project / f"cmp/{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (project / "cmp/compare.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "http" not in page  # nothing to fetch
