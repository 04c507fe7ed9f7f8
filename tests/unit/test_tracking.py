"""Where runs are recorded: the repository's own store unless the user names one."""

import os

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
