"""The paired verdict on constructed prediction pairs whose answer is known."""

import numpy as np
import pytest

from reprolab.results.metrics import macro_f1
from reprolab.results.significance import compare_predictions, resampled_macro_f1

TRUTH = ["ham"] * 120 + ["spam"] * 80


def wrong_at(rows: set[int]) -> list[str]:
    flip = {"ham": "spam", "spam": "ham"}
    return [flip[label] if i in rows else label for i, label in enumerate(TRUTH)]


def test_identical_predictions_are_within_noise():
    result = compare_predictions(TRUTH, wrong_at({1, 150}), wrong_at({1, 150}))
    assert (result.difference, result.interval, result.mcnemar_p, result.verdict) == (
        0.0,
        (0.0, 0.0),
        1.0,
        "within noise",
    )


def test_forty_rows_fixed_and_none_broken_is_a_real_improvement():
    a, b = wrong_at(set(range(0, 200, 5))), list(TRUTH)
    result = compare_predictions(TRUTH, a, b)
    assert (result.only_a_right, result.only_b_right) == (0, 40)
    assert result.mcnemar_p == pytest.approx(2 * 0.5**40)
    assert result.b_macro_f1 == 1.0 and 0 < result.interval[0] <= result.difference <= result.interval[1]
    assert result.verdict == "B better"
    assert compare_predictions(TRUTH, b, a).verdict == "A better"


def test_as_many_rows_fixed_as_broken_is_noise():
    a, b = wrong_at(set(range(0, 20))), wrong_at(set(range(100, 120)))
    result = compare_predictions(TRUTH, a, b)
    assert (result.only_a_right, result.only_b_right, result.mcnemar_p) == (20, 20, 1.0)
    assert result.interval[0] < 0 < result.interval[1] and result.verdict == "within noise"


def test_a_small_gain_on_a_small_test_set_is_noise():
    """Two rows fixed out of 200: the kind of 0.01 gain that a single run's luck explains."""
    result = compare_predictions(TRUTH, wrong_at({3, 7, 150}), wrong_at({150}))
    assert result.difference > 0 and result.verdict == "within noise" and result.mcnemar_p == 0.5


def test_macro_f1_by_hand():
    # ham: 3 true, predicted [ham, ham, spam]; spam: 1 true, predicted spam. F1 ham 0.8, spam 2/3.
    result = compare_predictions(
        ["ham", "ham", "ham", "spam"], ["ham", "ham", "spam", "spam"], ["ham", "ham", "ham", "spam"]
    )
    assert result.a_macro_f1 == pytest.approx((0.8 + 2 / 3) / 2) and result.b_macro_f1 == 1.0


def test_unpaired_predictions_are_refused():
    with pytest.raises(ValueError, match="same non-empty rows"):
        compare_predictions(TRUTH, TRUTH[:-1], TRUTH)


def test_resampled_macro_f1_is_scikit_learns_on_every_resample():
    """The bootstrap's vectorised macro-F1 equals the project's one (scikit-learn's, all classes, zero
    division 0) on resamples where a class is missing from the truth, the prediction or both."""
    generator = np.random.default_rng(7)
    truth = generator.integers(0, 4, size=(300, 9))
    predicted = np.where(generator.random((300, 9)) < 0.6, truth, generator.integers(0, 4, size=(300, 9)))
    classes = np.arange(5)  # class 4 never occurs: F1 0 in every resample
    expected = [macro_f1(t, p, classes) for t, p in zip(truth, predicted, strict=True)]
    assert resampled_macro_f1(truth, predicted, classes) == pytest.approx(expected, abs=1e-12)
