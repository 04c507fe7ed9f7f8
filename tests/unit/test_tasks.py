"""The task seam: every stage that differs by task has an entry for each task of the catalog, and
params refuse keys the chosen task would not read."""

import importlib

import numpy as np
import pytest
import torch
import yaml

from reprolab.encoding.labels import IGNORED
from reprolab.model import runtime
from reprolab.params import ParamsError, parse_params
from reprolab.tasks import catalog
from reprolab.tasks.token_classification import TokenClassification
from tests.conftest import NER_FIXTURE_PARAMS, fixture_params_raw

TAGGER = TokenClassification()
TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


@pytest.mark.parametrize("stage", ["ingest", "clean", "tokenize", "augment", "evaluate"])
def test_every_stage_that_differs_by_task_knows_every_task(stage):
    assert set(importlib.import_module(f"stages.{stage}").BY_TASK) == set(catalog.TASKS)


def ner_params_raw() -> dict:
    return yaml.safe_load(NER_FIXTURE_PARAMS.read_text())


def test_the_ner_default_parses_and_its_keys_are_refused_for_a_classifier():
    params = parse_params(ner_params_raw())
    assert params.task == "token_classification" and params.tokenize.stride == 32
    assert TAGGER.label_names(params.ingest.class_names)[:3] == ["O", "B-person", "I-person"]
    raw = fixture_params_raw()
    raw["tokenize"]["stride"] = 16
    with pytest.raises(ParamsError, match="tokenize.stride is read by task 'token_classification' only"):
        parse_params(raw)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda raw: raw["clean"].update(min_chars=20), "clean.min_chars is read by task 'sequence_classification'"),
        (
            lambda raw: raw["evaluate"].pop("crf"),
            r"evaluate.crf: required key is missing \(task 'token_classification'",
        ),
        # Folders of mails label whole documents: their folder_labels are the classifier's key only.
        (lambda raw: raw["ingest"].update(format="mail_dir"), "format 'mail_dir' takes its labels from folders"),
        (lambda raw: raw["tokenize"].update(stride=64), "tokenize.stride 64 must be below half of tokenize.max_length"),
    ],
)
def test_ner_params_that_cannot_run_are_refused_naming_the_key(change, message):
    raw = ner_params_raw()
    change(raw)
    with pytest.raises(ParamsError, match=message):
        parse_params(raw)


def test_conll_for_a_classifier_is_refused_before_any_stage():
    raw = fixture_params_raw()
    raw["ingest"]["format"] = "conll"
    with pytest.raises(ParamsError, match="ingest.format=conll describes tagged sentences"):
        parse_params(raw)


def windows() -> runtime.TokenData:
    """Two sentences: "a" of three words in two windows (its second window repeats word 1 as context),
    "b" of two words; word 1 of "a" has a continuation sub-token."""
    return runtime.TokenData(
        ["a", "a", "b"],
        [np.array([101, 5, 6, 7, 102]), np.array([101, 6, 8, 102]), np.array([101, 9, 10, 102])],
        [
            np.array([IGNORED, 1, 2, IGNORED, IGNORED]),
            np.array([IGNORED, IGNORED, 0, IGNORED]),
            np.array([IGNORED, 3, 4, IGNORED]),
        ],
        [np.array([-1, 0, 1, -1, -1]), np.array([-1, -1, 2, -1]), np.array([-1, 0, 1, -1])],
    )


def test_tagger_validation_scores_words_once_and_entities_by_seqeval():
    data = windows()
    positions = sum(data.lengths)
    probs = np.full((positions, len(TAGS)), 0.01)
    # Right tags everywhere except sentence a's word 2 (O predicted as I-PER): a's PER entity then
    # runs on (conlleval), so it no longer matches; b's LOC is right. Entity micro-F1 = 2*1/(2*1+1+1).
    right = {1: 1, 2: 2, 7: 2, 10: 3, 11: 4}
    for position, tag in right.items():
        probs[position, tag] = 0.96
    probs /= probs.sum(axis=1, keepdims=True)
    scores = TAGGER.validation_scores(data, probs, TAGS)
    assert scores["val_accuracy"] == pytest.approx(4 / 5)
    assert scores["val_entity_micro_f1"] == pytest.approx(0.5)
    assert set(scores) == set(TAGGER.validation_fields)


def test_tagger_batches_pad_labels_with_ignored_and_the_loss_skips_them():
    data = windows()
    batch = runtime.Collator(TAGGER, 0)([runtime.TokenDataset(data)[i] for i in range(3)])
    assert batch["input_ids"].shape == batch["labels"].shape == (3, 5)
    assert batch["labels"][1].tolist() == [IGNORED, IGNORED, 0, IGNORED, IGNORED]
    logits = torch.zeros((3, 5, len(TAGS)), requires_grad=True)
    loss = TAGGER.loss(logits, batch["labels"], None)
    assert loss.item() == pytest.approx(np.log(len(TAGS)))  # uniform logits on the 5 scored positions
    loss.backward()
    assert logits.grad[0, 0].abs().sum() == 0 and logits.grad[0, 1].abs().sum() > 0


def test_per_position_logits_come_back_one_row_per_position_in_sequence_order():
    data = windows()

    def forward(input_ids, mask):  # a logit row per position: the token id, so order is visible
        return np.repeat(input_ids.numpy()[..., None].astype(np.float32), 2, axis=2)

    out = runtime.batched_logits(data.sequences, 2, 0, forward)
    assert out[:, 0].tolist() == np.concatenate(data.sequences).tolist()
    assert data.sample(2, 0).ids in (["a", "a"], ["a", "b"])  # windows are drawn as one class
    assert data.scored_labels().tolist() == [1, 2, 0, 3, 4]


def tag_probabilities(tags: list[str], score: float) -> np.ndarray:
    """A word per row with `score` on its tag and the rest spread over the others."""
    probs = np.full((len(tags), len(TAGS)), (1 - score) / (len(TAGS) - 1))
    probs[np.arange(len(tags)), [TAGS.index(tag) for tag in tags]] = score
    return probs


def test_entity_spans_keep_the_texts_offsets_on_accents_and_at_the_last_word():
    from reprolab.data.sentences import SentenceRules
    from reprolab.params import IngestParams

    p = IngestParams(format="jsonl", path="x", labels=["PER", "LOC"], pre_tokenizer="words_and_punctuation")
    text = "Grüße aus Zürich, an Anna Lee"
    row = SentenceRules(p, labelled=False).row({"id": "1", "source": "s", "text": text, "label": None})
    assert row["tokens"] == ["Grüße", "aus", "Zürich", ",", "an", "Anna", "Lee"]
    tags = ["O", "O", "B-LOC", "O", "O", "B-PER", "I-PER"]
    probs = tag_probabilities(tags, 0.9)
    probs[6, TAGS.index("I-PER")] = 0.7
    columns = TAGGER.output_columns([probs], TAGS, [row])
    assert columns["tags"] == [tags] and columns["tag_scores"][0][6] == pytest.approx(0.7)
    first, last = columns["entities"][0]
    assert (first["type"], first["start"], first["end"], first["text"]) == ("LOC", 10, 16, "Zürich")
    assert (last["type"], last["text"], last["first_word"], last["end_word"]) == ("PER", "Anna Lee", 5, 7)
    assert text[last["start"] : last["end"]] == "Anna Lee" and last["score"] == pytest.approx(0.8)
    # Words given with the text they came from: the offsets are that text's.
    words = SentenceRules(p, labelled=False).row(
        {"id": "2", "source": "s", "text": ["Anna", "Lee"], "label": None, "words_text": "  Anna\tLee"}
    )
    (entity,) = TAGGER.output_columns([tag_probabilities(["B-PER", "I-PER"], 0.9)], TAGS, [words])["entities"][0]
    assert (entity["start"], entity["end"], entity["text"]) == (2, 10, "Anna\tLee")
