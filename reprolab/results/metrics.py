"""Classification metrics, one implementation for every stage that scores: train's validation, evaluate,
export's backends and the significance tests all call `macro_f1` (scikit-learn's, over every class of
the label set, a class that is neither true nor predicted counting F1 0)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)
from sklearn.preprocessing import label_binarize


def macro_f1(truth: np.ndarray, predicted: np.ndarray, classes: list[int] | np.ndarray) -> float:
    return float(f1_score(truth, predicted, labels=list(classes), average="macro", zero_division=0))


def scores_for_curves(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(truth, score) for curves and AUCs: the positive class when binary, else one-vs-rest pooled (micro)."""
    if probs.shape[1] == 2:
        return labels == 1, probs[:, 1]
    onehot = label_binarize(labels, classes=list(range(probs.shape[1])))
    return onehot.ravel().astype(bool), probs.ravel()


def classification_metrics(labels: np.ndarray, probs: np.ndarray, names: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class P/R/F1 and support, ROC-AUC and PR-AUC (when both classes occur)."""
    predicted = probs.argmax(axis=1)
    classes = list(range(len(names)))
    precision, recall, f1, support = precision_recall_fscore_support(labels, predicted, labels=classes, zero_division=0)
    metrics: dict[str, Any] = {
        "accuracy": float(accuracy_score(labels, predicted)),
        "macro_f1": macro_f1(labels, predicted, classes),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(names)
        },
    }
    truth, score = scores_for_curves(labels, probs)
    if truth.any() and not truth.all():
        metrics["roc_auc"] = float(roc_auc_score(truth, score))
        metrics["pr_auc"] = float(average_precision_score(truth, score))
    return metrics
