"""Back-translation's accounting and params, with stand-in translators (no weights): every selected row
ends with one status, a batch that raises is retried row by row, and the params refuse what DVC could
not track or the task cannot use."""

from __future__ import annotations

import re

import pytest
import yaml

from reprolab.data import augmentation, back_translation
from reprolab.encoding import encoder
from reprolab.params import BackTranslationParams, ParamsError, parse_params
from tests.conftest import NER_FIXTURE_PARAMS, fixture_params_raw

SETTINGS = {
    "forward_model": "models/translation/en-de",
    "backward_model": "models/translation/de-en",
    "fraction": 1.0,
    "seed": 7,
    "top_k": 10,
    "batch_size": 3,
    "max_new_tokens": 32,
}
P = BackTranslationParams(**SETTINGS)


class Scripted:
    """A translator answering from a table (None: cut at max_new_tokens); a text listed in `raises` makes its
    whole batch raise, as a generation error would."""

    def __init__(self, answers: dict[str, str | None], raises: frozenset[str] = frozenset()):
        self.answers, self.raises, self.batches = answers, raises, []

    def translate(self, texts, p, seed):
        self.batches.append(list(texts))
        if self.raises & set(texts):
            raise RuntimeError("CUDA out of memory")
        return [self.answers[text] for text in texts]


def rows(*texts: str) -> list[dict]:
    return [{"id": f"r{i}", "label": "spam", "text": text} for i, text in enumerate(texts)]


def test_each_row_ends_with_one_status_and_a_raising_batch_is_retried_row_by_row():
    forward = Scripted(
        {"win cash": "gewinne geld", "hello there": "hallo", "same words": "gleich", "long mail": None, "boom": "x"},
        raises=frozenset({"boom"}),
    )
    backward = Scripted({"gewinne geld": "earn money", "hallo": "", "gleich": "Same  WORDS"})
    texts = ("win cash", "hello there", "boom", "same words", "long mail")
    out = list(back_translation.back_translated_rows(rows(*texts), forward, backward, P, 100, encoder.HEAD))
    assert [(row["id"], row["status"]) for row in out] == [
        ("r0#bt0", "added"),
        ("r1#bt0", "empty"),
        ("r2#bt0", "failed"),
        ("r3#bt0", "identical"),  # case and spacing aside
        ("r4#bt0", "failed"),
    ]
    assert out[0]["text"] == "earn money" and out[0]["pivot"] == "gewinne geld" and out[0]["label"] == "spam"
    assert out[2]["error"] == "RuntimeError: CUDA out of memory"
    assert out[4]["error"] == "the translation to the pivot ran to max_new_tokens: cut"
    # The first batch of three raised; each of its rows went alone, then the last two as a batch.
    assert forward.batches == [list(texts[:3]), ["win cash"], ["hello there"], ["boom"], list(texts[3:])]
    assert backward.batches[-1] == ["gleich"]  # the cut pivot is not translated back


def test_a_translation_back_cut_at_max_new_tokens_fails_and_only_selected_rows_are_translated():
    assert back_translation.outcome("a b", "x", None) == (
        "failed",
        "the translation back ran to max_new_tokens: cut",
    )
    half = BackTranslationParams(**{**SETTINGS, "fraction": 0.5})
    many = rows(*(f"text {i}" for i in range(200)))
    echo = Scripted({row["text"]: row["text"] + " x" for row in many})
    out = list(back_translation.back_translated_rows(many, echo, echo, half, 100, encoder.HEAD))
    chosen = [row["id"] for row in many if augmentation.selected(row["id"], half)]
    assert [row["origin_id"] for row in out] == chosen and 70 < len(chosen) < 130


def test_the_words_translated_are_those_augment_copies_are_made_of():
    text = " ".join(f"w{i}" for i in range(10))
    echo = Scripted({"w0 w1 w2": "v0 v1 v2", "v0 v1 v2": "u0 u1 u2"})
    (row,) = back_translation.back_translated_rows(rows(text), echo, echo, P, 3, encoder.HEAD)
    assert (row["source"], row["text"], row["status"]) == ("w0 w1 w2", "u0 u1 u2", "added")


def test_a_batchs_seed_depends_on_its_first_row_not_on_the_batches_before_it():
    assert back_translation.batch_seed(7, "r3") == back_translation.batch_seed(7, "r3")
    assert len({back_translation.batch_seed(seed, row) for seed in (7, 8) for row in ("r3", "r4")}) == 4


def params_with(**back_translation_settings):
    raw = fixture_params_raw()
    raw["augment"]["back_translation"] = {**SETTINGS, **back_translation_settings}
    return raw


@pytest.mark.parametrize("folder", ["models/pretrained/en-de", "/opt/en-de", "models/translation/../../en-de"])
def test_a_translation_model_outside_models_translation_is_refused_by_key(folder):
    expected = f"augment.back_translation: forward_model {folder}: must be a folder under models/translation/"
    with pytest.raises(ParamsError, match=re.escape(expected)):
        parse_params(params_with(forward_model=folder))


def test_back_translation_needs_augment_enabled_and_a_text_task():
    raw = params_with()
    raw["augment"]["enabled"] = False
    with pytest.raises(ParamsError, match="back_translation is set but enabled is false"):
        parse_params(raw)
    raw = yaml.safe_load(NER_FIXTURE_PARAMS.read_text())
    raw["augment"]["back_translation"] = SETTINGS  # its words change, and the words' tags cannot follow
    with pytest.raises(ParamsError, match="augment.back_translation is read by task 'sequence_classification' only"):
        parse_params(raw)
    assert parse_params(params_with()).augment.back_translation == P
