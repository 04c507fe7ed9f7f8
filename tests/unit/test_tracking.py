"""Where runs are recorded: the repository's own store unless the user names one."""

import os

import pytest

from reprolab import storage
from reprolab.params import parse_params
from reprolab.records import tracking
from tests.conftest import fixture_params_raw


def test_each_repository_gets_its_own_default_store_in_one_process(tmp_path, monkeypatch):
    """mlflow mirrors a store it is pointed at into MLFLOW_TRACKING_URI; left there, the first
    repository's store would capture every later one's runs (an audit of a second repository could
    not find its run ids)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        assert tracking.connect().get_tracking_uri() == f"sqlite:///{tmp_path / name / 'mlflow.db'}"
        assert "MLFLOW_TRACKING_URI" not in os.environ
    assert (tmp_path / "first/mlflow.db").is_file() and (tmp_path / "second/mlflow.db").is_file()


def test_the_experiment_is_one_the_ui_opens_on_its_runs(tmp_path, monkeypatch):
    """MLflow 3's UI opened an untagged experiment on its GenAI overview (traces, prompts), not the runs."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    mlflow = tracking.connect()
    kind = "mlflow.experimentKind"
    experiment = mlflow.get_experiment_by_name(tracking.experiment_name())
    assert experiment.tags[kind] == "custom_model_development"
    mlflow.MlflowClient().delete_experiment_tag(experiment.experiment_id, kind)  # a store made before the tag
    assert (
        tracking.connect().get_experiment_by_name(tracking.experiment_name()).tags[kind] == "custom_model_development"
    )


def test_a_store_the_user_names_is_kept(tmp_path, monkeypatch):
    chosen = f"sqlite:///{tmp_path / 'team.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", chosen)
    monkeypatch.chdir(tmp_path)
    assert tracking.connect().get_tracking_uri() == chosen and os.environ["MLFLOW_TRACKING_URI"] == chosen
    assert not (tmp_path / "mlflow.db").exists()


def test_a_stage_run_ends_when_its_record_says(tmp_path, monkeypatch):
    """MLflow's end_run stamps its own clock, which may be past the recorded end (by a millisecond, or by
    a slow store's write): the parent, extended to the recorded end, then ended before its last child.
    The run's end is the recorded one, as a replayed run's is."""
    import time
    from types import SimpleNamespace

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    run = tracking.StageRun.start("ingest")
    recorded_end = time.time() - 60  # the stage's clock a minute behind MLflow's
    monkeypatch.setattr(tracking, "time", SimpleNamespace(time=lambda: recorded_end, strftime=time.strftime))
    run.close()
    ended = tracking.connect().MlflowClient().get_run(run.run_id).info
    assert ended.end_time == run.record["end_ms"] == int(recorded_end * 1000) and ended.status == "FINISHED"


def test_metric_names_from_data_are_names_mlflow_takes():
    """ingest's report counts skip rules and classes by their names ("not_in_folder (spam_assassin
    layout)", a class "a/b"): MLflow refused the parentheses, and the whole stage record was spooled."""
    from mlflow.utils.validation import _validate_metric_name

    report = {
        "skipped_by_rule": {"not_in_folder (spam_assassin layout)": 2, "not_mail": 3},
        "kept_by_label": {"très bon": 1, "a/b": 4, "x:y,z+1": 5},
        "rows_in": 15,
        "note": "text",
    }
    flat = tracking.flat_metrics(report)
    assert flat == {
        "skipped_by_rule.not_in_folder__spam_assassin_layout_": 2.0,
        "skipped_by_rule.not_mail": 3.0,
        "kept_by_label.très_bon": 1.0,
        "kept_by_label.a_b": 4.0,
        "kept_by_label.x_y_z_1": 5.0,
        "rows_in": 15.0,
    }
    for name in flat:
        _validate_metric_name(name)


def test_params_for_mlflow_are_flat_and_capped():
    raw = fixture_params_raw()
    raw["ingest"]["path"] = "x" * 400
    flat = tracking.mlflow_params(parse_params(raw))
    assert flat["train.learning_rate"] == "5e-05"
    assert flat["ingest.folder_labels.spam-1"] == "spam"
    assert all(len(v) <= 250 for v in flat.values())


def test_one_flattener_keeps_leaf_types_and_drops_non_numbers_on_request():
    tree = {"a": {"b": 1, "c": {"d": 0.5}}, "e": "text", "f": True, "g": [1, 2], "h": {}}
    assert storage.flatten(tree) == {"a.b": 1, "a.c.d": 0.5, "e": "text", "f": True, "g": [1, 2]}
    assert storage.flatten(tree, "m.", numbers_only=True) == {"m.a.b": 1, "m.a.c.d": 0.5}
    assert isinstance(storage.flatten(tree)["a.b"], int)


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A repository root of its own, with the default store (mlflow.db in it)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _execution_run(stage: str, key: str, monkeypatch) -> tracking.StageRun:
    """A stage run as if under one `dvc repro` (the execution key is what its DVC process names)."""
    import time

    execution = {"key": key, "start_ms": int(time.time() * 1000) - 1000, "command": "dvc repro"}
    monkeypatch.setattr(tracking.provenance, "pipeline_execution", lambda: execution)
    return tracking.StageRun.start(stage, parse_params(fixture_params_raw()))


def _pipeline_tree(key: str):
    client = tracking.connect().MlflowClient()
    experiment = client.get_experiment_by_name(tracking.experiment_name()).experiment_id
    (parent,) = client.search_runs([experiment], filter_string=f"tags.`{tracking.PIPELINE_TAG}` = '{key}'")
    children = client.search_runs([experiment], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    return client, parent, {child.data.tags["reprolab.stage"]: child for child in children}


def _committed_evaluate_outputs(root, weights_md5: str) -> None:
    """The outputs of an earlier evaluate, as a clone holds them: metrics.json, a figure, dvc.lock."""
    storage.write_json({"transformer": {"macro_f1": 0.93}, "weights_md5": weights_md5}, root / "reports/metrics.json")
    (root / "reports/figures/evaluate").mkdir(parents=True)
    (root / "reports/figures/evaluate/roc.png").write_bytes(b"\x89PNG roc")
    lock = {
        "schema": "2.0",
        "stages": {
            "evaluate": {
                "cmd": "python -m stages.evaluate",
                "outs": [
                    {"path": "reports/metrics.json", "md5": "x"},
                    {"path": "reports/figures/evaluate", "md5": "y.dir"},
                ],
            }
        },
    }
    import yaml

    (root / "dvc.lock").write_text(yaml.safe_dump(lock))


def test_an_execution_that_skips_evaluate_still_has_an_evaluate_run_with_the_committed_results(workspace, monkeypatch):
    """A fresh clone's `dvc repro` retrains byte-identical weights and DVC skips evaluate: the execution
    had no evaluate run and no test metrics in MLflow. Train now leaves an evaluate child made from the
    stage's committed outputs, saying so, and the parent names it."""
    _committed_evaluate_outputs(workspace, "abc")
    with _execution_run("train", "clone:1", monkeypatch) as train:
        train.set_tags({tracking.MODEL_DIGEST_TAG: "abc"})
        train.summarise_pipeline(workspace / "reports/metrics.json", "abc")
    client, parent, children = _pipeline_tree("clone:1")
    evaluate = children["evaluate"]
    assert tracking.SKIPPED_TAG in evaluate.data.tags and evaluate.data.tags[tracking.MODEL_DIGEST_TAG] == "abc"
    assert evaluate.data.tags[tracking.TRAIN_RUN_TAG] == train.run_id
    assert evaluate.data.metrics == parent.data.metrics == {"test.transformer.macro_f1": 0.93}
    assert evaluate.data.params["train.learning_rate"] == "5e-05"
    assert parent.data.tags[tracking.TEST_METRICS_TAG] == evaluate.info.run_id
    logged = {
        a.path
        for folder in ("reports", "reports/figures/evaluate")
        for a in client.list_artifacts(evaluate.info.run_id, folder)
    }
    assert {"reports/metrics.json", "reports/figures/evaluate/roc.png"} <= logged
    # A later stage of the same execution (export) finds that run, and makes no second one.
    with _execution_run("export", "clone:1", monkeypatch) as export:
        export.summarise_pipeline(workspace / "reports/metrics.json", "abc")
    _, _, children = _pipeline_tree("clone:1")
    assert sorted(children) == ["evaluate", "export", "train"]


def test_an_evaluate_that_runs_after_all_replaces_the_stand_in(workspace, monkeypatch):
    """Train cannot know whether evaluate will run (a change to evaluate's own code or params): when it
    does, its own run is the execution's evaluate run and the stand-in is deleted."""
    _committed_evaluate_outputs(workspace, "abc")
    with _execution_run("train", "repro:2", monkeypatch) as train:
        train.summarise_pipeline(workspace / "reports/metrics.json", "abc")
    storage.write_json({"transformer": {"macro_f1": 0.95}, "weights_md5": "abc"}, workspace / "reports/metrics.json")
    with _execution_run("evaluate", "repro:2", monkeypatch) as evaluate:
        evaluate.set_tags({tracking.MODEL_DIGEST_TAG: "abc"})
        evaluate.summarise_pipeline(workspace / "reports/metrics.json", "abc")
    _, parent, children = _pipeline_tree("repro:2")
    assert (
        children["evaluate"].info.run_id == evaluate.run_id
        and tracking.SKIPPED_TAG not in children["evaluate"].data.tags
    )
    assert parent.data.tags[tracking.TEST_METRICS_TAG] == evaluate.run_id
    assert parent.data.metrics == {"test.transformer.macro_f1": 0.95}


def test_metrics_of_other_weights_are_not_the_executions(workspace, monkeypatch):
    _committed_evaluate_outputs(workspace, "old")
    with _execution_run("train", "repro:3", monkeypatch) as train:
        train.summarise_pipeline(workspace / "reports/metrics.json", "new")
    _, parent, children = _pipeline_tree("repro:3")
    assert sorted(children) == ["train"] and not parent.data.metrics
    assert tracking.TEST_METRICS_TAG not in parent.data.tags


def test_each_dvc_project_of_a_repository_has_its_own_experiment_in_the_roots_store(tmp_path, monkeypatch):
    """examples/ner's runs went to the root's experiment `reprolab` and its tagger registered as a new
    version of the classifier's model; a command run in a project's subfolder is that project's."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.delenv("REPROLAB_EXPERIMENT", raising=False)
    for folder in (".dvc", "reports", "examples/ner/data"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "examples/ner/dvc.yaml").write_text("stages: {}\n")
    expected = {".": "reprolab", "reports": "reprolab", "examples/ner": "reprolab-examples-ner"}
    expected["examples/ner/data"] = "reprolab-examples-ner"
    for folder, name in expected.items():
        monkeypatch.chdir(tmp_path / folder)
        assert tracking.experiment_name() == name, folder
        assert tracking.tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}", folder
    monkeypatch.setenv("REPROLAB_EXPERIMENT", "mine")
    assert tracking.experiment_name() == "mine"
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "elsewhere"))  # a temp experiment workspace's parent repo
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path / 'elsewhere' / 'mlflow.db'}"
