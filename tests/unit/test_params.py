import copy

import pytest
import yaml

from reprolab.params import ParamsError, flatten, load_params, parse_audit_params, parse_params
from tests.conftest import fixture_params_raw


@pytest.fixture()
def raw():
    return fixture_params_raw()


def test_unknown_key_names_key_and_allowed_keys(raw):
    raw["train"]["learning_rte"] = 0.1
    with pytest.raises(ParamsError) as err:
        parse_params(raw)
    assert "train.learning_rte: unknown key" in str(err.value)
    assert "learning_rate" in str(err.value)  # the allowed keys are listed


def test_unknown_section(raw):
    raw["trian"] = {}
    with pytest.raises(ParamsError, match="trian: unknown key"):
        parse_params(raw)


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("train", "learning_rate", "5e-5", "train.learning_rate"),  # YAML 1.1 reads 5e-5 as text
        ("train", "epochs", 0, "greater than or equal to 1"),
        ("train", "device", "tpu", "'auto', 'cpu' or 'cuda'"),
        ("tokenize", "truncation_side", "middle", "'right' or 'left'"),
        ("augment", "fraction", 1.5, "augment.fraction"),
        ("clean", "min_chars", "20", "clean.min_chars"),
    ],
)
def test_wrong_type_or_range_names_key(raw, section, key, value, message):
    raw[section][key] = value
    with pytest.raises(ParamsError, match=message):
        parse_params(raw)


def test_missing_key(raw):
    del raw["train"]["seed"]
    with pytest.raises(ParamsError, match="train.seed: required key is missing"):
        parse_params(raw)


def test_folder_label_must_be_a_label(raw):
    raw["ingest"]["folder_labels"]["spam-1"] = "junk"
    with pytest.raises(ParamsError, match="junk"):
        parse_params(raw)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ParamsError, match="file not found"):
        load_params(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(tmp_path / "params.yaml")


def test_flatten_caps_values_for_mlflow(raw):
    raw = copy.deepcopy(raw)
    raw["ingest"]["path"] = "x" * 400
    flat = flatten(parse_params(raw))
    assert flat["train.learning_rate"] == "5e-05"
    assert flat["ingest.folder_labels.spam-1"] == "spam"
    assert all(len(v) <= 250 for v in flat.values())


def test_stage_view_checks_that_named_paths_exist(raw, tmp_path):
    raw["model"]["name_or_path"] = "models/no-such-model"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match="model.name_or_path: directory models/no-such-model does not exist"):
        load_params(tmp_path / "params.yaml")
    raw["model"]["name_or_path"] = str(tmp_path)
    raw["ingest"]["path"] = str(tmp_path / "missing.csv")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match="ingest.path: .*missing.csv does not exist"):
        load_params(tmp_path / "params.yaml")
    assert load_params(tmp_path / "params.yaml", check_paths=False).ingest.format == "spam_assassin"


def test_audit_reads_only_the_audit_section_of_a_revision(raw):
    """A revision's other sections may predate or postdate today's schema: an audit of it must not stop."""
    raw["train"]["a_key_added_later"] = 1
    raw["audit"] = {"cuda_metric_tolerance": 0.02}  # the key's name before it was renamed
    assert parse_audit_params(raw, "rev:params.yaml").inexact_metric_tolerance == 0.02
    assert parse_audit_params({"train": {}}, "rev:params.yaml") is None
    raw["audit"] = {"inexact_metric_tolerance": 2}
    with pytest.raises(ParamsError, match=r"(?s)rev:params.yaml: .*audit.inexact_metric_tolerance: .*less than"):
        parse_audit_params(raw, "rev:params.yaml")
