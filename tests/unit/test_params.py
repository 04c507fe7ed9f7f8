import json
import tracemalloc

import pytest
import yaml

from reprolab.params import ParamsError, load_params, parse_audit_params, parse_params
from tests.conftest import FIXTURE_PARAMS, fixture_params_raw


@pytest.fixture()
def raw():
    return fixture_params_raw()


def test_unknown_key_names_key_and_allowed_keys(raw):
    raw["train"]["learning_rte"] = 0.1
    with pytest.raises(ParamsError) as err:
        parse_params(raw)
    assert "train.learning_rte: unknown key" in str(err.value)
    assert "learning_rate" in str(err.value)  # the allowed keys are listed


def test_a_retired_key_says_where_its_job_went(raw):
    raw["export"] |= {"rounds": 3, "latency_rows": 100, "ronuds": 1}
    with pytest.raises(ParamsError) as err:
        parse_params(raw)
    assert "export.rounds: the export's timings moved to `python bench/export_bench.py --rounds N`" in str(err.value)
    assert "export.latency_rows: the export's timings moved" in str(err.value)
    assert "export.ronuds: unknown key (allowed here: batch_size, opset, threads)" in str(err.value)


def test_clean_workers_of_an_older_params_file_is_sent_to_engine_workers(raw):
    raw["clean"]["workers"] = 4
    with pytest.raises(ParamsError, match=r"clean.workers: the data stages' parallelism moved to `engine.workers`"):
        parse_params(raw)


def test_a_params_file_without_an_engine_section_runs_on_the_local_engine(raw):
    del raw["engine"]
    assert parse_params(raw).engine.name == "local"


def test_an_unknown_key_of_an_optional_section_lists_that_sections_keys(raw):
    raw["evaluate"]["baseline"] |= {"ngrams": 2}
    with pytest.raises(ParamsError) as err:
        parse_params(raw)
    assert "evaluate.baseline.ngrams: unknown key (allowed here: C, max_features, ngram_max)" in str(err.value)


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
        ("tokenize", "truncation", "middle", "'head', 'tail' or 'head_tail'"),
        ("tokenize", "head_fraction", 1.0, "tokenize.head_fraction"),
        ("tokenize", "truncation_side", "right", "renamed: write truncation: head"),
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
    with pytest.raises(ParamsError, match="not valid params YAML"):
        load_params(tmp_path / "params.yaml")


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


FIXTURE_TEXT = FIXTURE_PARAMS.read_text()


def test_an_alias_bomb_is_refused_at_its_first_alias_without_expanding(tmp_path):
    # Nine levels of nine aliases: 387 million strings if expanded; refused in bounded time and memory.
    bomb = "lol0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"lol{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10)
    )
    (tmp_path / "params.yaml").write_text(FIXTURE_TEXT + bomb)
    tracemalloc.start()
    with pytest.raises(ParamsError) as err:
        load_params(tmp_path / "params.yaml", check_paths=False)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert "alias *a0 is not allowed" in str(err.value) and len(str(err.value)) < 1000
    assert peak < 5_000_000


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train:\n  epochs: 1\n  epochs: 50\n", r"key 'epochs' is repeated \(first on line 2, again on line 3\)"),
        ("clean: {}\ntrain: {}\nclean: {}\n", r"key 'clean' is repeated \(first on line 1, again on line 3\)"),
    ],
)
def test_a_repeated_key_names_the_key_and_both_lines(tmp_path, text, message):
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(ParamsError, match=message):
        load_params(tmp_path / "params.yaml", check_paths=False)


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("train", "weight_decay", float("inf"), "train.weight_decay: Input should be a finite number"),
        ("train", "max_grad_norm", float("inf"), "train.max_grad_norm: Input should be a finite number"),
        ("train", "learning_rate", float("nan"), "train.learning_rate: Input should be a finite number"),
        ("train", "seed", 2**40, "train.seed: Input should be less than 4294967296"),
        ("clean", "min_chars", 30000, r"clean: min_chars \(30000\) is above max_chars \(20000\)"),
        ("train", "machine_rank", 1, r"train: machine_rank 1 must be below num_machines 1"),
        ("train", "checkpoint_every_minutes", float("nan"), "train.checkpoint_every_minutes: Input should be a finite"),
        ("train", "method", "qlora", "train.method: Input should be 'full' or 'lora'"),
        ("train", "dataloader_workers", -1, "train.dataloader_workers"),
        ("engine", "name", "dask", "engine.name: Input should be 'local' or 'ray'"),
        ("engine", "workers", -2, "engine.workers: Input should be greater than or equal to 0"),
        ("engine", "address", "10.0.0.5:6379", r"engine: address is set \('10.0.0.5:6379'\) but name is 'local'"),
    ],
)
def test_values_that_cannot_run_are_refused_naming_the_key(raw, section, key, value, message):
    raw[section][key] = value
    with pytest.raises(ParamsError, match=message):
        parse_params(raw)


def test_a_huge_value_is_shown_as_a_short_preview(raw):
    raw["train"]["epochs"] = "9" * 100_000
    with pytest.raises(ParamsError) as err:
        parse_params(raw)
    assert "train.epochs" in str(err.value) and "(100002 characters)" in str(err.value)
    assert len(str(err.value)) < 400


def test_another_formats_keys_are_not_checked_but_a_mail_format_needs_its_own(raw):
    raw["ingest"] |= {"format": "csv", "path": "data.csv", "folder_labels": {"x": "not-a-label"}}
    assert parse_params(raw).ingest.format == "csv"
    raw["ingest"]["format"] = "mail_dir"
    with pytest.raises(ParamsError, match=r"folder_labels maps to \['not-a-label'\]"):
        parse_params(raw)


def test_max_length_is_checked_against_the_models_positions_before_any_work(raw, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"max_position_embeddings": 128}))
    raw["model"]["name_or_path"] = str(model)
    raw["ingest"]["path"] = str(tmp_path)
    raw["tokenize"]["max_length"] = 256
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match=r"tokenize.max_length: 256 is above the model's 128 positions"):
        load_params(tmp_path / "params.yaml")
    raw["tokenize"]["max_length"] = 128
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    assert load_params(tmp_path / "params.yaml").tokenize.max_length == 128


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"train:\n  seed: \xff\n", "not UTF-8 \\(byte 15"),
        (b"- just\n- a list\n", "expected a mapping of sections, got list"),
        (b"x" * (2 << 20), "larger than 1048576 bytes"),
    ],
)
def test_unreadable_params_files_get_one_message(tmp_path, data, message):
    (tmp_path / "params.yaml").write_bytes(data)
    with pytest.raises(ParamsError, match=message):
        load_params(tmp_path / "params.yaml", check_paths=False)


@pytest.mark.parametrize(
    ("ingest", "message"),
    [
        ({"labels": [1, "1"]}, r"labels must name distinct classes, got \['1', '1'\]"),
        ({"labels": [True, "true"]}, r"labels must name distinct classes, got \['true', 'true'\]"),
        ({"label_map": {0: "hma"}}, r"label_map maps to \['hma'\], which are not in labels \['ham', 'spam'\]"),
        ({"labels": [1.5, 2]}, r"ingest.labels.0"),
    ],
)
def test_labels_and_label_map_must_name_distinct_known_classes(raw, ingest, message):
    raw["ingest"] |= {"format": "csv", "path": "x.csv"} | ingest
    with pytest.raises(ParamsError, match=message):
        parse_params(raw)


@pytest.mark.parametrize(
    ("ingest", "message"),
    [
        (
            {"split_column": "part"},
            r"split_column is read from tables \(csv, jsonl, parquet\), not format 'spam_assassin'",
        ),
        ({"format": "csv", "split_names": {"train": "a", "val": "a", "test": "b"}}, r"distinct values for train, val"),
        ({"format": "csv", "split_names": {"train": "a", "dev": "b", "test": "c"}}, r"ingest.split_names.dev"),
    ],
)
def test_a_split_column_needs_a_table_and_distinct_split_names(raw, ingest, message):
    raw["ingest"] |= ingest
    with pytest.raises(ParamsError, match=message):
        parse_params(raw)


def test_a_cpu_run_cannot_ask_for_half_precision(raw):
    raw["train"].update(device="cpu", mixed_precision="bf16")
    with pytest.raises(ParamsError, match="train: mixed_precision bf16 needs CUDA; device is cpu"):
        parse_params(raw)


def test_lora_settings_are_checked_by_name(raw):
    raw["train"]["lora"]["target_modules"] = []
    with pytest.raises(ParamsError, match="train.lora.target_modules"):
        parse_params(raw)
    raw["train"]["lora"] = {**raw["train"]["lora"], "target_modules": ["query"], "rnak": 4}
    with pytest.raises(ParamsError, match="rnak"):
        parse_params(raw)


def test_a_lost_section_header_is_one_line_not_one_per_key():
    """Without its `train:` line, train's keys read as the previous section's (augment's) unknown keys:
    one line naming the first of them, not forty lines each listing augment's keys (found by the fuzz
    test: the message had passed 5,000 characters)."""
    text = FIXTURE_PARAMS.read_text().replace("\ntrain:\n", "\n", 1)
    with pytest.raises(ParamsError) as err:
        parse_params(yaml.safe_load(text))
    message = str(err.value)
    assert "train: required key is missing" in message
    assert "augment: unknown keys device, mixed_precision, torch_compile," in message
    assert " more (allowed here: " in message
    assert len(message.splitlines()) == 3 and len(message) < 1000


def test_problem_lines_are_capped(raw):
    for section in ("clean", "tokenize", "augment", "train", "evaluate", "export"):
        raw[section] = {f"key{i}": i for i in range(3)}
    raw.update({f"extra{i}": {} for i in range(30)})
    with pytest.raises(ParamsError) as err:
        parse_params(raw)
    lines = str(err.value).splitlines()
    assert len(lines) == 22 and lines[-1].strip().startswith("... and ") and lines[-1].endswith(" more problems")


def test_the_task_key_names_exactly_the_catalogs_tasks():
    """params.py spells the choices out for its messages; the catalog is what the stages look them up in."""
    from typing import get_args

    from reprolab.params import Params
    from reprolab.tasks import catalog

    field = Params.model_fields["task"]
    assert set(get_args(field.annotation)) == set(catalog.TASKS) and field.default == catalog.DEFAULT


def test_a_tag_scheme_for_a_text_classifier_is_refused_before_any_stage(raw):
    raw["ingest"]["tag_scheme"] = "iob1"
    with pytest.raises(ParamsError, match="ingest.tag_scheme is read by task 'token_classification' only"):
        parse_params(raw)
