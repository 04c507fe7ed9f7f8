import random
from collections import Counter

import numpy as np
import pytest

from reprolab.model import runtime
from reprolab.params import BaselineParams
from reprolab.results.baselines import tfidf_probs, top_terms
from reprolab.results.evaluation import Contenders, plot_data, scores
from reprolab.results.metrics import classification_metrics
from reprolab.tasks.sequence_classification import SequenceClassification


def test_metrics_on_known_inputs():
    labels = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.1, 0.9]])
    m = classification_metrics(labels, probs, ["ham", "spam"])
    assert m["accuracy"] == 0.75
    assert m["per_class"]["ham"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert m["per_class"]["spam"]["precision"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert m["roc_auc"] == 1.0 and m["pr_auc"] == 1.0


def test_metrics_match_their_definitions_on_random_inputs():
    """Macro-F1 from the confusion counts, ROC-AUC as the share of (positive, negative) pairs ranked right."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    raw = rng.random((300, 2)) + np.eye(2)[labels] * 0.3
    probs = raw / raw.sum(axis=1, keepdims=True)
    m = classification_metrics(labels, probs, ["a", "b"])
    predicted = probs.argmax(1)
    f1 = []
    for c in (0, 1):
        tp = np.sum((predicted == c) & (labels == c))
        f1.append(2 * tp / (np.sum(predicted == c) + np.sum(labels == c)))
    assert m["macro_f1"] == pytest.approx(np.mean(f1))
    positive, negative = probs[labels == 1, 1], probs[labels == 0, 1]
    pairs = positive[:, None] - negative[None, :]
    ranked_right = (pairs > 0).mean() + 0.5 * (pairs == 0).mean()
    assert m["roc_auc"] == pytest.approx(ranked_right)


def test_multiclass_and_single_class():
    labels = np.array([0, 1, 2, 2])
    probs = np.eye(3)[[0, 1, 2, 1]] * 0.8 + 0.2 / 3
    m = classification_metrics(labels, probs, ["a", "b", "c"])
    assert m["accuracy"] == 0.75 and "roc_auc" in m
    only_one = classification_metrics(np.array([1, 1]), np.array([[0.2, 0.8], [0.6, 0.4]]), ["a", "b"])
    assert "roc_auc" not in only_one  # undefined, so absent rather than wrong


def test_baseline_learns_separable_text():
    train = ["win free money now", "cheap pills free offer", "meeting at noon", "see notes from the meeting"] * 5
    labels = [1, 1, 0, 0] * 5
    probs = tfidf_probs(
        train,
        labels,
        ["free money offer", "notes for meeting"],
        BaselineParams(max_features=100, ngram_max=1, C=10.0),
        2,
    )
    assert probs.argmax(1).tolist() == [1, 0]


def test_balanced_baseline_gives_the_rare_class_more_weight():
    """train.class_weights: balanced reaches the baseline too: on 9:1 data, a text with nothing of
    either class gets more of the rare class's probability than without weights."""
    train = ["meeting notes attached", "see you at the meeting", "notes from the call"] * 6 + ["win free money"] * 2
    labels = [0] * 18 + [1] * 2
    params = BaselineParams(max_features=100, ngram_max=1, C=1.0)
    plain = tfidf_probs(train, labels, ["hello there"], params, 2)[0, 1]
    balanced = tfidf_probs(train, labels, ["hello there"], params, 2, "balanced")[0, 1]
    assert balanced > plain + 0.1, (plain, balanced)


def _tied_corpus() -> list[str]:
    """3,000 documents whose rare words tie by the hundred at any vocabulary cut."""
    rng = random.Random(0)
    words = [f"w{i:04d}" for i in range(3000)]
    return [" ".join(rng.choices(words[:50], k=5) + [word]) for word in words]


def test_vocabulary_cut_breaks_ties_by_term():
    texts = _tied_corpus()
    counts = Counter(word for text in texts for word in text.split())
    expected = sorted(sorted(counts, key=lambda word: (-counts[word], word))[:1000])
    assert top_terms(texts, 1, 1000) == expected  # sklearn's own max_features cut picks other tied words
    assert top_terms(list(reversed(texts)), 1, 1000) == expected


def test_plot_data_per_model_with_empty_curves_where_undefined():
    probs = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    files = plot_data(
        SequenceClassification(), ["a", "=b", "c"], np.array([0, 1, 1]), {"transformer": probs}, ["ham", "spam"]
    )
    assert sorted(files) == ["pr_transformer.csv", "roc_transformer.csv", "test_predictions_transformer.csv"]
    assert files["test_predictions_transformer.csv"].splitlines() == [
        "id,actual,predicted,score,prob_ham,prob_spam",
        "a,ham,ham,0.8,0.8,0.2",
        "'=b,spam,spam,0.7,0.3,0.7",
        "c,spam,ham,0.6,0.6,0.4",
    ]
    roc = [line.split(",") for line in files["roc_transformer.csv"].splitlines()]
    assert roc[0] == ["fpr", "tpr"] and roc[1] == ["0", "0"] and roc[-1] == ["1", "1"]
    one_class = plot_data(
        SequenceClassification(), ["a", "b"], np.array([1, 1]), {"baseline": probs[:2]}, ["ham", "spam"]
    )
    # Every file DVC declares still exists; the undefined curves have no points.
    assert one_class["roc_baseline.csv"] == "fpr,tpr\n" and one_class["pr_baseline.csv"] == "recall,precision\n"
    assert one_class["test_predictions_baseline.csv"].count("\n") == 3


FINE_TUNED = Contenders("transformer", None, "baseline")
STUDENT = Contenders("student", None, "transformer")


def test_scores_say_whether_the_transformer_beats_the_baseline_beyond_noise():
    labels = np.arange(400) % 2
    right = np.eye(2)[labels] * 0.8 + 0.1  # probability 0.9 on the true class
    wrong_rows = np.zeros(400, bool)
    wrong_rows[::10] = True  # the baseline misses 40 rows, the transformer none of them
    baseline = np.where(wrong_rows[:, None], right[:, ::-1], right)
    metrics = scores(
        SequenceClassification(), labels, {"transformer": right, "baseline": baseline}, ["ham", "spam"], FINE_TUNED
    )
    versus = metrics["transformer_vs_baseline"]
    assert (versus["only_transformer_right"], versus["only_baseline_right"]) == (40, 0)
    assert versus["macro_f1_difference"] == pytest.approx(
        metrics["transformer"]["macro_f1"] - metrics["baseline"]["macro_f1"]
    )
    assert versus["interval_low"] > 0 and versus["mcnemar_p"] < 0.05 and versus["verdict"] == "transformer better"
    same = scores(
        SequenceClassification(), labels, {"transformer": baseline, "baseline": baseline}, ["ham", "spam"], FINE_TUNED
    )["transformer_vs_baseline"]
    assert same["verdict"] == "within noise" and same["macro_f1_difference"] == 0


def test_a_student_is_scored_against_its_teacher_under_its_own_keys():
    labels = np.arange(400) % 2
    teacher = np.eye(2)[labels] * 0.8 + 0.1
    student = np.where((np.arange(400) % 8 == 0)[:, None], teacher[:, ::-1], teacher)  # 50 rows wrong
    metrics = scores(
        SequenceClassification(), labels, {"student": student, "transformer": teacher}, ["ham", "spam"], STUDENT
    )
    assert set(metrics) == {"student", "transformer", "student_vs_transformer", "test_rows"}
    versus = metrics["student_vs_transformer"]
    assert (versus["only_transformer_right"], versus["only_student_right"]) == (50, 0)
    assert versus["macro_f1_difference"] < 0 and versus["verdict"] == "transformer better"


def test_validation_macro_f1_counts_a_class_nobody_predicted_or_had():
    """train's early-stopping score is the same macro-F1 as evaluate's: over every class of the label set.
    Before, validation left out a class absent from both the rows and the predictions (scoring 1.0 here)."""
    probs = np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.3, 0.7, 0.0]])
    labels = np.array([0, 0, 1])
    val = runtime.TokenData(["a", "b", "c"], [np.array([1, 2])] * 3, labels)
    scores = SequenceClassification().validation_scores(val, probs, ["a", "b", "c"])
    assert scores["val_macro_f1"] == pytest.approx(2 / 3)
    assert scores["val_macro_f1"] == classification_metrics(labels, probs, ["a", "b", "c"])["macro_f1"]


def test_the_tfidf_baseline_is_shaped_as_the_classifier():
    train = ["cheap pills now", "meeting at noon", "win cash now", "lunch tomorrow?"]
    probs = tfidf_probs(
        train,
        [1, 0, 1, 0],
        ["cash pills", "noon lunch", "hello"],
        BaselineParams(max_features=100, ngram_max=1, C=1.0),
        2,
        "none",
    )
    assert probs.shape == (3, 2) and np.allclose(probs.sum(axis=1), 1.0)
    assert probs[0, 1] > 0.5 > probs[1, 1]
