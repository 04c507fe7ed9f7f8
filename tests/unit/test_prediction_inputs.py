"""What `reprolab predict` reads, before any model: the recipe a model folder carries, the input's format,
and ingest's readers with the label optional."""

import io
import shutil

import pytest
import yaml

from reprolab.cli import build_parser
from reprolab.data.ingest_shared import SourceCount
from reprolab.data.ingestion import ingest
from reprolab.data.readers import read_lines, records_from_source
from reprolab.data.validation import LabelMatcher
from reprolab.errors import StageError
from reprolab.inference.batch_predict import input_format
from reprolab.inference.prediction import Recipe, model_folder
from reprolab.params import IngestParams, parse_params
from tests.conftest import CORPUS, NER_FIXTURE_PARAMS, fixture_params_raw, kept_and_rejected


def table_params(path, fmt="csv", **overrides) -> IngestParams:
    return IngestParams(**{"format": fmt, "path": str(path), "labels": ["ham", "spam"], **overrides})


def test_the_recipe_round_trips_with_typed_label_keys(tmp_path):
    raw = fixture_params_raw()
    raw["ingest"] |= {
        "format": "parquet",
        "path": "x.parquet",
        "labels": ["ham", "spam"],
        "label_map": {0: "ham", 1: "spam", "yes": "spam"},
    }
    raw["clean"]["max_chars"] = 5000
    raw["tokenize"] |= {"max_length": 48, "truncation": "tail"}
    recipe = Recipe.of(parse_params(raw, "test"))
    recipe.write(tmp_path)
    again = Recipe.read(tmp_path)
    assert again == recipe
    assert (again.max_length, again.truncation.kind, again.kind, again.labels) == (48, "tail", "text", ["ham", "spam"])
    assert again.text_rules.max_chars == 5000
    # JSON object keys would turn 0 into "0": the map keeps its keys' types, so typed labels still match.
    source = {**again.source, "label_map": dict(again.source["label_map"])}
    matcher = LabelMatcher(IngestParams.model_construct(**source))
    assert (matcher(0), matcher(1), matcher("yes"), matcher(True)) == ("ham", "spam", "spam", None)
    assert matcher("0") == "ham"  # a text cell matches an integer key by its digits


def test_a_folder_without_a_recipe_is_named_with_what_to_do(tmp_path):
    with pytest.raises(StageError, match="not a model folder of this pipeline .*point --model at models/model"):
        Recipe.read(tmp_path)
    (tmp_path / "reprolab_preprocessing.json").write_text('{"max_length": 64}')  # the recipe of an older train
    with pytest.raises(StageError, match="unreadable recipe .*train the model again"):
        Recipe.read(tmp_path)
    with pytest.raises(StageError, match="no such folder, and not an MLflow run id"):
        model_folder(str(tmp_path / "missing"))


def test_the_input_format_follows_the_name_or_the_models_source(tmp_path, params):
    mail_model = Recipe.of(params)  # spam_assassin
    raw = fixture_params_raw()
    raw["ingest"] |= {"format": "csv", "path": "x.csv"}
    text_model = Recipe.of(parse_params(raw, "test"))
    (tmp_path / "mails").mkdir()
    assert input_format("new.JSONL", text_model, None) == "jsonl"
    assert (
        input_format("new.csv.gz", text_model, None) == "csv"
        and input_format("n.jsonl.zst", text_model, None) == "jsonl"
    )
    assert input_format("-", text_model, None) == "lines"
    assert input_format(str(tmp_path / "mails"), mail_model, None) == "spam_assassin"
    assert input_format(str(tmp_path / "mails"), text_model, None) == "text_dir"
    assert input_format("box.tar.gz", mail_model, None) == "spam_assassin"
    assert input_format("notes.txt", text_model, "lines") == "lines"
    with pytest.raises(StageError, match="give --input-format"):
        input_format("notes.txt", text_model, None)
    # A classifier reads no CoNLL: a .tsv is not taken for one (every row would be refused).
    with pytest.raises(StageError, match="give --input-format"):
        input_format("data.tsv", text_model, None)
    with pytest.raises(StageError, match="cannot read --input-format conll"):
        input_format("data.tsv", text_model, "conll")


def test_a_taggers_input_is_words_in_conll_or_tables_or_raw_lines(tmp_path):
    raw = yaml.safe_load(NER_FIXTURE_PARAMS.read_text())
    tagger = Recipe.of(parse_params(raw))
    (tmp_path / "tweets").mkdir()
    assert input_format("new.conll", tagger, None) == "conll" and input_format("new.tsv", tagger, None) == "conll"
    assert input_format(str(tmp_path / "tweets"), tagger, None) == "conll"
    assert input_format("words.jsonl", tagger, None) == "jsonl" and input_format("-", tagger, None) == "lines"
    with pytest.raises(StageError, match="token_classification model cannot read --input-format spam_assassin"):
        input_format(str(tmp_path / "tweets"), tagger, "spam_assassin")
    assert tagger.tokenize == {"stride": 32} and tagger.source["pre_tokenizer"] == "whitespace"
    assert Recipe.of(parse_params(fixture_params_raw(), "test")).tokenize == {}  # a classifier's recipe as before


def test_unlabelled_tables_are_read_and_a_present_label_must_still_be_known(tmp_path):
    (tmp_path / "a.csv").write_text("text\nhello there\nsecond text\n")
    kept, rejected = kept_and_rejected(
        ingest(
            records_from_source(table_params(tmp_path / "a.csv"), labelled=False),
            table_params(tmp_path / "a.csv"),
            labelled=False,
        )
    )
    assert [row["label"] for row in kept] == [None, None] and not rejected
    # The pipeline's own ingest still wants the column.
    with pytest.raises(StageError, match=r"missing column\(s\) \['label'\]"):
        list(records_from_source(table_params(tmp_path / "a.csv")))
    (tmp_path / "b.csv").write_text("text,label\none,ham\ntwo,\nthree,eggs\n")
    p = table_params(tmp_path / "b.csv")
    kept, rejected = kept_and_rejected(ingest(records_from_source(p, labelled=False), p, labelled=False))
    assert [row["label"] for row in kept] == ["ham", None]
    assert [row["reason"] for row in rejected] == ["unknown_label"]


def test_unlabelled_mail_folders_take_files_at_the_root_and_unknown_folders(tmp_path):
    mails = sorted((CORPUS / "easy-ham-1").glob("*.txt"))[:3]
    shutil.copy(mails[0], tmp_path / "loose.eml")
    (tmp_path / "inbox").mkdir()
    shutil.copy(mails[1], tmp_path / "inbox" / "one.eml")
    (tmp_path / "easy-ham-1").mkdir()
    shutil.copy(mails[2], tmp_path / "easy-ham-1" / "two.eml")
    p = IngestParams(format="mail_dir", path=str(tmp_path), labels=["ham", "spam"], folder_labels={"easy-ham-1": "ham"})
    count = SourceCount()
    kept, rejected = kept_and_rejected(ingest(records_from_source(p, count, labelled=False), p, labelled=False))
    assert sorted((row["id"], row["label"]) for row in kept) == [
        ("easy-ham-1/two.eml", "ham"),
        ("inbox/one.eml", None),
        ("loose.eml", None),
    ]
    assert not rejected and count.rows == 3
    with pytest.raises(StageError, match="folders named in ingest.folder_labels are missing"):  # labelled: as before
        list(records_from_source(p.model_copy(update={"folder_labels": {"spam-2": "spam"}})))


def test_lines_are_records_blank_ones_skipped_and_long_ones_rejected():
    p = table_params("-", max_text_bytes=20)
    count = SourceCount()
    text = io.StringIO("first text\n\n   \nsecond one\r\n" + "x" * 50 + "\nlast")
    kept, rejected = kept_and_rejected(ingest(read_lines(text, p, count), p, labelled=False))
    assert [(row["id"], row["raw"]) for row in kept] == [
        ("stdin:1", b"first text"),
        ("stdin:4", b"second one"),
        ("stdin:6", b"last"),
    ]
    assert [(row["id"], row["reason"]) for row in rejected] == [("stdin:5", "text_too_large")]
    assert count.rows == 4


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--batch-size", "0", "argument --batch-size: 0 is not a positive integer"),
        ("--batch-size", "many", "argument --batch-size: 'many' is not an integer"),
        ("--max-reject-fraction", "nan", "argument --max-reject-fraction: nan is not a fraction from 0 to 1"),
        ("--max-reject-fraction", "1.5", "argument --max-reject-fraction: 1.5 is not a fraction from 0 to 1"),
    ],
)
def test_predict_refuses_a_bad_argument_before_loading_anything(capsys, option, value, message):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["predict", "in.csv", "--out", "out.csv", option, value])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
