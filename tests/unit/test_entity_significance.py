"""Paired tests of entity F1: counts per sentence summed before F1, documents resampled whole."""

import random

import numpy as np
import pytest

from reprolab.results.entity_metrics import entity_f1
from reprolab.results.entity_significance import compare_taggers, f1_of, sentence_counts

TRUTH = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-LOC"]]
PREDICTED = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "B-PER", "O"]]


def test_counts_per_sentence_give_the_scorers_f1():
    counts = sentence_counts(TRUTH, PREDICTED)
    assert counts.tolist() == [[1, 1, 1], [1, 1, 1]]  # per sentence: tp, fp, fn
    assert f1_of(counts.sum(axis=0)) == pytest.approx(entity_f1(TRUTH, PREDICTED)) == 0.5
    assert f1_of(np.array([0, 0, 0])) == 0.0


def noisy(tags: list[list[str]], keep: float, seed: int) -> list[list[str]]:
    """Each entity kept with probability `keep`, else its tags made O."""
    rng = random.Random(seed)
    out = []
    for sentence in tags:
        new, dropping = [], False
        for tag in sentence:
            if tag.startswith("B-"):
                dropping = rng.random() > keep
            new.append("O" if dropping and tag != "O" else tag)
            if tag == "O":
                dropping = False
        out.append(new)
    return out


def corpus(sentences: int):
    return [["B-PER", "I-PER", "O", "B-LOC", "O", "B-ORG"] for _ in range(sentences)]


def test_a_much_better_tagger_is_called_better_and_a_twin_within_noise():
    truth = corpus(300)
    weak, strong = noisy(truth, 0.5, 1), noisy(truth, 0.95, 2)
    comparison = compare_taggers(truth, weak, strong)
    assert comparison.verdict == "B better" and comparison.interval[0] > 0 and comparison.randomization_p < 0.01
    assert comparison.difference == pytest.approx(entity_f1(truth, strong) - entity_f1(truth, weak))
    twin = compare_taggers(truth, noisy(truth, 0.8, 3), noisy(truth, 0.8, 4))
    assert twin.verdict == "within noise" and twin.interval[0] < 0 < twin.interval[1]
    assert compare_taggers(truth, strong, weak).verdict == "A better"


def test_documents_are_resampled_whole_and_the_result_is_seeded():
    truth = corpus(40)
    a, b = noisy(truth, 0.6, 5), noisy(truth, 0.9, 6)
    groups = [f"doc{k // 4}" for k in range(40)]
    by_document = compare_taggers(truth, a, b, groups=groups)
    assert (by_document.unit, by_document.units) == ("document", 10)
    assert compare_taggers(truth, a, b).unit == "sentence"
    assert compare_taggers(truth, a, b, groups=groups) == by_document
    with pytest.raises(ValueError, match="same non-empty sentences"):
        compare_taggers(truth, a[:-1], b)
