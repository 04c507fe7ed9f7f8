import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from stages.evaluate import baseline_probs, classification_metrics, draw_figures
from stages.params import BaselineParams


def test_metrics_on_known_inputs():
    labels = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.1, 0.9]])
    m = classification_metrics(labels, probs, ["ham", "spam"])
    assert m["accuracy"] == 0.75
    assert m["per_class"]["ham"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert m["per_class"]["spam"]["precision"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert m["roc_auc"] == 1.0 and m["pr_auc"] == 1.0


def test_metrics_match_sklearn_on_random_inputs():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    raw = rng.random((300, 2)) + np.eye(2)[labels] * 0.3
    probs = raw / raw.sum(axis=1, keepdims=True)
    m = classification_metrics(labels, probs, ["a", "b"])
    assert m["macro_f1"] == pytest.approx(f1_score(labels, probs.argmax(1), average="macro"))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(labels, probs[:, 1]))


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
    probs = baseline_probs(train, labels, ["free money offer", "notes for meeting"],
                           BaselineParams(max_features=100, ngram_max=1, C=10.0), 2)
    assert probs.argmax(1).tolist() == [1, 0]


def test_figures_are_png(tmp_path):
    labels = np.array([0, 1, 0, 1])
    probs = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.45, 0.55]])
    files = draw_figures(labels, {"transformer": probs, "baseline": probs[::-1]}, ["ham", "spam"], tmp_path)
    assert [f.name for f in files] == ["confusion_matrix.png", "roc.png", "pr.png"]
    assert all(f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for f in files)
    first = files[1].read_bytes()
    draw_figures(labels, {"transformer": probs, "baseline": probs[::-1]}, ["ham", "spam"], tmp_path)
    assert files[1].read_bytes() == first  # byte-stable for DVC
