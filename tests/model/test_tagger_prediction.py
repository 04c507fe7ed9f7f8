"""The prediction path of a tagger, on a tiny BERT token classifier these tests build (random weights,
MiniLM's tokenizer): sentences scored as the stages' own steps score them, one tag per word even where
a sentence takes several windows; `reprolab predict` writes every record's tags and entity spans or
its reject; the MLflow pyfunc's frame refuses what predict refuses; the ONNX export keeps a sequence
axis and equals torch."""

import io
import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from transformers import BertForTokenClassification

from reprolab.data import sentence_cleaning
from reprolab.encoding import encoder, word_alignment
from reprolab.errors import StageError
from reprolab.inference import backend_comparison, onnx_export, serving
from reprolab.inference.batch_predict import predict_source
from reprolab.inference.prediction import Predictor, Recipe, onnx_logits, onnx_session
from reprolab.model import runtime
from reprolab.params import parse_params
from reprolab.tasks.token_classification import TokenClassification
from tests.conftest import MODEL, NER_FIXTURE_PARAMS
from tests.tiny_models import tiny_classifier

TAGGER = TokenClassification()
SENTENCES = [
    ["@paulwalk", "It", "'s", "the", "view", "from", "where", "I", "'m", "living", "for", "two", "weeks", "."],
    ["Empire", "State", "Building", "=", "ESB", "."],
    ["Pretty", "bad", "storm", "here", "last", "evening", "."],
    ["Anna"],
]


@pytest.fixture(scope="module")
def ner_params():
    raw = yaml.safe_load(NER_FIXTURE_PARAMS.read_text())
    raw["tokenize"] |= {"max_length": 16, "stride": 4}  # the first sentence takes several windows
    return parse_params(raw)


@pytest.fixture(scope="module")
def tiny_tagger(tmp_path_factory, ner_params):
    names = TAGGER.label_names(ner_params.ingest.class_names)
    folder = tiny_classifier(tmp_path_factory.mktemp("tagger"), names, MODEL, BertForTokenClassification)
    Recipe.of(ner_params).write(folder)
    return folder


def rows_of(sentences):
    return [{"tokens": words} for words in sentences]


def test_sentences_score_as_the_stages_steps_one_by_one(tiny_tagger, ner_params):
    """clean's word normalisation, tokenize's windows, the model one window at a time, the windows read
    back to words: the same probabilities, a row per word."""
    predictor = Predictor(tiny_tagger, batch_size=3)
    kept, results, rejected = predictor.score(rows_of([*SENTENCES, ["a", "\u200b"]]))
    assert kept == [0, 1, 2, 3] and rejected == {4: ("empty_token", "word 2 ('\\u200b') is empty once normalised")}
    tokenizer = encoder.load_tokenizer(str(tiny_tagger))
    words = [sentence_cleaning.clean_words(sentence)[0] for sentence in SENTENCES]
    table = word_alignment.windows_table(
        tokenizer, [(str(i), str(i)) for i in range(4)], words, [[0] * len(w) for w in words], ner_params.tokenize, []
    )
    windows = runtime.TokenData.of(table)
    assert len(windows.ids) > len(SENTENCES)  # windows, not sentences
    model = runtime.load_model(TAGGER, str(tiny_tagger), predictor.labels)
    one_by_one = runtime.softmax(runtime.predict_logits(model, windows.sequences, 1, 0, torch.device("cpu")))
    _, expected = word_alignment.words_of(windows.ids, windows.word_index, one_by_one)
    assert [len(r) for r in results] == [len(s) for s in SENTENCES]
    for got, want in zip(results, expected, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)


def strict_json_lines(text: str) -> list[dict]:
    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    return [json.loads(line, parse_constant=refuse) for line in text.splitlines()]


def test_predict_tags_every_record_or_rejects_it(tiny_tagger, tmp_path):
    predictor = Predictor(tiny_tagger)
    records = [
        {"id": "words", "tokens": SENTENCES[0]},
        {"id": "tagged", "tokens": ["Anna", "met"], "tags": ["B-person", "O"]},
        {"id": "raw", "tokens": "Empire State Building = ESB ."},  # a raw text, split into words
        {"id": "empty", "tokens": []},
        {"id": "number", "tokens": 5},
        {"id": "blank word", "tokens": ["a", " "]},
        {"id": "mismatch", "tokens": ["a", "b"], "tags": ["O"]},
        {"id": "unknown type", "tokens": ["a"], "tags": ["B-city"]},
    ]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = predict_source(predictor, str(source), tmp_path / "o.jsonl", tmp_path / "r.parquet", progress=False)
    assert summary["rows_in"] == 8 == summary["rows_predicted"] + summary["rows_rejected"]
    rejects = pq.read_table(tmp_path / "r.parquet").to_pydict()
    assert dict(zip(rejects["id"], rejects["reason"], strict=True)) == {
        "empty": "missing_text",
        "number": "wrong_type",
        "blank word": "empty_token",
        "mismatch": "length_mismatch",
        "unknown type": "unknown_label",
    }
    out = strict_json_lines((tmp_path / "o.jsonl").read_text())
    assert [row["id"] for row in out] == ["words", "tagged", "raw"]
    assert out[1]["actual"] == ["B-person", "O"] and out[0]["actual"] is None
    assert out[2]["tokens"] == SENTENCES[1] and out[0]["text"] == " ".join(SENTENCES[0])
    assert sum(len(row["entities"]) for row in out) >= 3  # the random weights tag entities to check
    assert rejects["raw"][rejects["id"].index("blank word")] == b'{"tokens": ["a", " "], "tags": null}'
    for row in out:
        assert len(row["tags"]) == len(row["tokens"]) == len(row["tag_scores"])
        for entity in row["entities"]:
            assert row["text"][entity["start"] : entity["end"]] == entity["text"]
            assert row["tags"][entity["first_word"]][2:] == entity["type"]
    # Parquet holds the same rows; CSV cannot hold lists and is refused before anything is read.
    predict_source(predictor, str(source), tmp_path / "o.parquet", tmp_path / "r2.parquet", progress=False)
    assert pq.read_table(tmp_path / "o.parquet").to_pylist() == out
    with pytest.raises(StageError, match=r"o.csv: a token_classification model's predictions hold lists .*\.jsonl"):
        predict_source(predictor, str(source), tmp_path / "o.csv", tmp_path / "r3.parquet", progress=False)
    # CoNLL files with or without tags, and raw lines, read by the same path.
    conll = tmp_path / "new.conll"
    conll.write_text("Empire\nState\nBuilding\n\nAnna B-person\nmet O\n")
    predict_source(predictor, str(conll), tmp_path / "c.jsonl", tmp_path / "c.parquet", progress=False)
    lines = tmp_path / "new.txt"
    lines.write_text("Empire State Building\n")
    predict_source(predictor, str(lines), tmp_path / "l.jsonl", tmp_path / "l.parquet", "lines", progress=False)
    from_conll = strict_json_lines((tmp_path / "c.jsonl").read_text())
    from_lines = strict_json_lines((tmp_path / "l.jsonl").read_text())
    assert [r["actual"] for r in from_conll] == [None, ["B-person", "O"]]
    assert from_conll[0]["tags"] == from_lines[0]["tags"] and from_conll[0]["tag_scores"] == from_lines[0]["tag_scores"]


def test_the_served_frame_refuses_what_predict_refuses_and_answers_strict_json(tiny_tagger, tmp_path):
    import pandas as pd
    from mlflow.pyfunc import scoring_server

    predictor = Predictor(tiny_tagger)
    frame_in = pd.DataFrame(
        {
            "tokens": [SENTENCES[1], None, None, ["a", 3], ["Anna", "met"], None],
            "text": [None, "Empire State Building = ESB .", 12, None, "Anna meets", "x " * 600_000],
        }
    )
    frame = serving.predictions_frame(predictor, frame_in)
    assert frame["reject"].tolist()[1:] == [pd.NA, "wrong_type", "wrong_type", "words_text_mismatch", "text_too_large"]
    assert pd.isna(frame["reject"][0]) and frame["tags"][0] == frame["tags"][1]  # words, or the text they make
    # The same cells as a JSONL file's field, through `reprolab predict`: the same rejects.
    cells = [SENTENCES[1], "Empire State Building = ESB .", 12, ["a", 3], "x " * 600_000]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"tokens": cell}) + "\n" for cell in cells))
    predict_source(predictor, str(tmp_path / "in.jsonl"), tmp_path / "o.jsonl", tmp_path / "r.parquet", progress=False)
    rejects = pq.read_table(tmp_path / "r.parquet").to_pydict()
    assert rejects["reason"] == ["wrong_type", "wrong_type", "text_too_large"]
    assert [row["tags"] for row in strict_json_lines((tmp_path / "o.jsonl").read_text())] == frame["tags"][:2].tolist()
    body = io.StringIO()
    scoring_server.predictions_to_json(frame, body)

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    answered = json.loads(body.getvalue(), parse_constant=refuse)["predictions"]
    assert answered[2] == {
        "text": None,
        "tokens": None,
        "tags": None,
        "tag_scores": None,
        "entities": None,
        "reject": "wrong_type",
    }
    assert answered[0]["tokens"] == SENTENCES[1] and len(answered[0]["tag_scores"]) == 6
    signature = serving.signature(TAGGER, predictor.labels)
    assert signature.inputs.input_names() == ["tokens", "text"]
    assert signature.outputs.input_names() == ["text", "tokens", "tags", "tag_scores", "entities", "reject"]


def test_a_tagger_exports_to_onnx_with_a_sequence_axis_equal_to_torch(tiny_tagger, tmp_path):
    onnx_export.export_folder(tiny_tagger, tmp_path / "export", 17)
    predictor = Predictor(tiny_tagger, batch_size=2)
    tokenizer = encoder.load_tokenizer(str(tiny_tagger))
    sequences = [np.asarray(tokenizer(words, is_split_into_words=True)["input_ids"]) for words in SENTENCES]
    model = runtime.load_model(TAGGER, str(tiny_tagger), predictor.labels)
    torch_logits = runtime.predict_logits(model, sequences, 2, 0, torch.device("cpu"))
    fp32 = onnx_logits(onnx_session(tmp_path / "export/model.onnx", 1), sequences, 2, 0)
    assert fp32.shape == torch_logits.shape == (sum(map(len, sequences)), len(predictor.labels))
    np.testing.assert_allclose(fp32, torch_logits, atol=1e-5, rtol=0)
    # The backends scored on windows with their words' tags: entity F1 and agreement per word and entity.
    names = predictor.labels
    tags = [[names.index("O")] * len(words) for words in SENTENCES]
    tags[1][:3] = [names.index("B-facility"), names.index("I-facility"), names.index("I-facility")]
    table = word_alignment.windows_table(
        tokenizer, [(str(i), str(i)) for i in range(4)], SENTENCES, tags, predictor.inputs.settings, names
    )
    report = backend_comparison.score_backends(tiny_tagger, tmp_path / "export", runtime.TokenData.of(table), 2, 1)
    torch_row, onnx_row, int8 = (report["backends"][b] for b in ("torch", "onnx", "onnx-int8"))
    assert torch_row["word_agreement_with_torch"] == torch_row["entity_agreement_with_torch"] == 1.0
    assert onnx_row["word_agreement_with_torch"] == 1.0 and onnx_row["max_probability_difference"] < 1e-5
    assert 0 <= int8["entity_agreement_with_torch"] <= 1 and "entity_micro_f1" in int8
    assert set(report["targets"]) == {"int8_size_at_most_35_percent", "int8_entity_micro_f1_within_0.01"}


def test_a_tagger_whose_recipe_predates_windows_is_one_message(tiny_tagger, tmp_path):
    """A tagger trained before its recipe recorded `tokenize.stride` cannot be cut into the same
    windows: one message saying to train again, not a KeyError."""
    old = shutil.copytree(tiny_tagger, tmp_path / "old")
    recipe = json.loads((old / "reprolab_preprocessing.json").read_text())
    del recipe["tokenize"]
    (old / "reprolab_preprocessing.json").write_text(json.dumps(recipe))
    with pytest.raises(StageError, match=r"does not say how its sentences were cut .*train the model again"):
        Predictor(old)
