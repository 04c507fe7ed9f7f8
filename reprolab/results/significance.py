"""Is a difference between two models' test predictions real? Paired tests on the same test rows.

- A paired bootstrap of the macro-F1 difference: the test rows are resampled with replacement, both
  models scored on each resample, and the 2.5th and 97.5th percentiles of B - A bound the difference.
- McNemar's exact test on the rows where exactly one model is right (a two-sided binomial test of
  the discordant counts against 1/2).

The verdict calls B better (or worse) only when both agree at the 5% level: the interval excludes
zero and McNemar's p-value is below 0.05. Otherwise the difference is within noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

from reprolab.results.metrics import macro_f1

RESAMPLES = 2000
LEVEL = 0.05


def resampled_macro_f1(truth: np.ndarray, predicted: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """`metrics.macro_f1` of each row of `predicted` (resamples x rows) against the same rows of `truth`,
    all resamples at once (2,000 calls of scikit-learn's would take seconds): per class 2TP / (2TP + FP +
    FN), a class absent from both truth and prediction counting 0, as zero_division=0 has it. A unit test
    holds the two equal."""
    scores = []
    for label in classes:
        true_positive = ((predicted == label) & (truth == label)).sum(axis=-1)
        denominator = (predicted == label).sum(axis=-1) + (truth == label).sum(axis=-1)
        scores.append(np.divide(2 * true_positive, denominator, out=np.zeros(denominator.shape), where=denominator > 0))
    return np.mean(scores, axis=0)


@dataclass(frozen=True)
class PairedComparison:
    rows: int
    a_macro_f1: float
    b_macro_f1: float
    interval: tuple[float, float]  # 95% paired bootstrap interval of B - A
    only_a_right: int
    only_b_right: int
    mcnemar_p: float
    verdict: str  # "B better" | "A better" | "within noise"

    @property
    def difference(self) -> float:
        return self.b_macro_f1 - self.a_macro_f1

    def verdict_for(self, a: str, b: str) -> str:
        return named_verdict(self.verdict, a, b)


def compare_predictions(truth: list[str], a: list[str], b: list[str], seed: int = 0) -> PairedComparison:
    """Two models' predicted labels for the same test rows, in the same order, against the truth."""
    if not (len(truth) == len(a) == len(b)) or not truth:
        raise ValueError(f"paired predictions need the same non-empty rows: {len(truth)}, {len(a)}, {len(b)}")
    classes, coded = np.unique(np.concatenate([truth, a, b]), return_inverse=True)
    truth_codes, a_codes, b_codes = coded.reshape(3, -1)
    labels = np.arange(len(classes))
    generator = np.random.default_rng(seed)
    samples = generator.integers(0, len(truth_codes), size=(RESAMPLES, len(truth_codes)))
    differences = resampled_macro_f1(truth_codes[samples], b_codes[samples], labels) - resampled_macro_f1(
        truth_codes[samples], a_codes[samples], labels
    )
    low, high = np.quantile(differences, [LEVEL / 2, 1 - LEVEL / 2])
    only_a = int(((a_codes == truth_codes) & (b_codes != truth_codes)).sum())
    only_b = int(((b_codes == truth_codes) & (a_codes != truth_codes)).sum())
    p_value = binomtest(only_b, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return PairedComparison(
        rows=len(truth_codes),
        a_macro_f1=macro_f1(truth_codes, a_codes, labels),
        b_macro_f1=macro_f1(truth_codes, b_codes, labels),
        interval=(float(low), float(high)),
        only_a_right=only_a,
        only_b_right=only_b,
        mcnemar_p=float(p_value),
        verdict=verdict(float(p_value), float(low), float(high)),
    )


def named_verdict(verdict: str, a: str, b: str) -> str:
    """A verdict with the two sides named: "<b> better", "<a> better" or "within noise"."""
    return {"B better": f"{b} better", "A better": f"{a} better"}.get(verdict, verdict)


def verdict(p_value: float, low: float, high: float) -> str:
    """B better (or worse) only when the test and the bootstrap interval of B - A agree at LEVEL."""
    if p_value < LEVEL and (low > 0 or high < 0):
        return "B better" if low > 0 else "A better"
    return "within noise"
