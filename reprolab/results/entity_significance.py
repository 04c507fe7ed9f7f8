"""Is a difference between two taggers' entity F1 real? Paired tests on the same test sentences.

Entity F1 is not a mean over sentences, so both tests resample counts: each sentence's true
positives, false positives and false negatives (entities as `entity_metrics` counts them), summed
over the resample before F1 is taken.

- A paired bootstrap of the entity micro-F1 difference B - A over sentences, or over documents when
  they are known (a document's sentences are drawn together, as they share names and topics).
- A paired approximate-randomization test (Noreen 1989; the test of choice for F1, which has no
  per-item variance): in each round every unit's two taggers' counts are swapped with probability
  one half; the p-value is the share of rounds whose |difference| reaches the observed one.

The verdict is significance's: B better (or worse) only when both agree at its level.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from seqeval.metrics.sequence_labeling import get_entities

from reprolab.results.significance import LEVEL, RESAMPLES, named_verdict, verdict


def sentence_counts(truth: list[list[str]], predicted: list[list[str]]) -> np.ndarray:
    """(sentences, 3): each sentence's true positives, false positives and false negatives."""
    counts = np.zeros((len(truth), 3), dtype=np.int64)
    for row, (true_tags, tags) in enumerate(zip(truth, predicted, strict=True)):
        true, found = set(get_entities(true_tags)), set(get_entities(tags))
        hits = len(true & found)
        counts[row] = (hits, len(found) - hits, len(true) - hits)
    return counts


def f1_of(counts: np.ndarray) -> np.ndarray:
    """Micro-F1 2TP / (2TP + FP + FN) of summed counts (last axis: tp, fp, fn); 0 where all are 0."""
    tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 2]
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros(denominator.shape), where=denominator > 0)


@dataclass(frozen=True)
class EntityComparison:
    units: int  # sentences, or documents
    unit: str  # "sentence" | "document"
    a_entity_f1: float
    b_entity_f1: float
    interval: tuple[float, float]  # 95% paired bootstrap interval of B - A
    randomization_p: float
    verdict: str  # "B better" | "A better" | "within noise"

    @property
    def difference(self) -> float:
        return self.b_entity_f1 - self.a_entity_f1

    @property
    def rows(self) -> int:
        """The units resampled (`unit`s), as a table of comparisons counts them."""
        return self.units

    def verdict_for(self, a: str, b: str) -> str:
        return named_verdict(self.verdict, a, b)


def compare_taggers(
    truth: list[list[str]], a: list[list[str]], b: list[list[str]], groups: list[str] | None = None, seed: int = 0
) -> EntityComparison:
    """Two taggers' IOB2 tags for the same test sentences, in the same order, against the truth;
    `groups`: each sentence's document, to resample documents whole."""
    if not (len(truth) == len(a) == len(b)) or not truth:
        raise ValueError(f"paired predictions need the same non-empty sentences: {len(truth)}, {len(a)}, {len(b)}")
    a_counts, b_counts = sentence_counts(truth, a), sentence_counts(truth, b)
    unit = "sentence"
    if groups is not None and len(set(groups)) < len(groups):  # documents: sum their sentences
        names, codes = np.unique(np.asarray(groups), return_inverse=True)
        a_counts = np.stack([np.bincount(codes, a_counts[:, k], len(names)) for k in range(3)], axis=1)
        b_counts = np.stack([np.bincount(codes, b_counts[:, k], len(names)) for k in range(3)], axis=1)
        unit = "document"
    generator = np.random.default_rng(seed)
    samples = generator.integers(0, len(a_counts), size=(RESAMPLES, len(a_counts)))
    differences = f1_of(b_counts[samples].sum(axis=1)) - f1_of(a_counts[samples].sum(axis=1))
    low, high = np.quantile(differences, [LEVEL / 2, 1 - LEVEL / 2])
    observed = float(f1_of(b_counts.sum(axis=0)) - f1_of(a_counts.sum(axis=0)))
    swap = generator.random((RESAMPLES, len(a_counts), 1)) < 0.5
    shuffled_a = np.where(swap, b_counts, a_counts).sum(axis=1)
    shuffled_b = np.where(swap, a_counts, b_counts).sum(axis=1)
    reached = np.abs(f1_of(shuffled_b) - f1_of(shuffled_a)) >= abs(observed) - 1e-12
    p_value = float((reached.sum() + 1) / (RESAMPLES + 1))
    return EntityComparison(
        units=len(a_counts),
        unit=unit,
        a_entity_f1=float(f1_of(a_counts.sum(axis=0))),
        b_entity_f1=float(f1_of(b_counts.sum(axis=0))),
        interval=(float(low), float(high)),
        randomization_p=p_value,
        verdict=verdict(p_value, float(low), float(high)),
    )
