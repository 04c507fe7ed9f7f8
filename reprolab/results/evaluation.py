"""Evaluation: scores of the fine-tuned model and of a TF-IDF + logistic-regression baseline.

Metrics (accuracy, macro-F1, per-class precision/recall/F1, ROC-AUC, PR-AUC), per-row predictions
and ROC / PR curve points as DVC plot data (the figures are `reprolab.results.evaluation_figures`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import label_binarize

from reprolab import storage
from reprolab.inference.prediction import probability_column
from reprolab.params import BaselineParams
from reprolab.results.significance import compare_predictions


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
        "macro_f1": float(f1_score(labels, predicted, labels=classes, average="macro", zero_division=0)),
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


def top_terms(texts: list[str], ngram_max: int, max_features: int) -> list[str]:
    """The `max_features` most frequent word n-grams, equal counts broken by the term itself.

    sklearn's own `max_features` cut breaks ties with an unstable argsort whose order depends on the
    SIMD sort numpy dispatches to (AVX-512 or not), so the same data gave a different vocabulary, and
    so different baseline metrics, on different CPUs. A stable sort over the alphabetical vocabulary
    picks the same terms everywhere."""
    counter = CountVectorizer(ngram_range=(1, ngram_max))
    counts = np.asarray(counter.fit_transform(texts).sum(axis=0)).ravel()
    alphabetical = counter.get_feature_names_out()
    return sorted(alphabetical[np.argsort(-counts, kind="stable")[:max_features]].tolist())


def baseline_probs(
    train_texts: list[str],
    train_labels: list[int],
    test_texts: list[str],
    p: BaselineParams,
    num_labels: int,
    class_weights: str = "none",
) -> np.ndarray:
    """TF-IDF (word n-grams, sublinear tf) + logistic regression: the classical peer, its classes
    weighted as the transformer's loss is (train.class_weights: none or balanced)."""
    vocabulary = top_terms(train_texts, p.ngram_max, p.max_features)
    model = make_pipeline(
        TfidfVectorizer(vocabulary=vocabulary, ngram_range=(1, p.ngram_max), sublinear_tf=True),
        LogisticRegression(C=p.C, max_iter=2000, class_weight=None if class_weights == "none" else class_weights),
    )
    model.fit(train_texts, train_labels)
    probs = np.zeros((len(test_texts), num_labels))
    probs[:, model.classes_] = model.predict_proba(test_texts)
    return probs


def curve_csv(x_name: str, y_name: str, x: np.ndarray, y: np.ndarray) -> str:
    return storage.csv_text([x_name, y_name], [[float(a), float(b)] for a, b in zip(x, y, strict=True)])


def predictions_csv(ids: list[str], labels: np.ndarray, probs: np.ndarray, names: list[str]) -> str:
    """One row per test example with every class's probability (the columns `reprolab predict` writes);
    ids and labels come from user data, so cells are guarded."""
    rows = [
        [row_id, names[label], names[int(prob.argmax())], float(prob.max()), *map(float, prob)]
        for row_id, label, prob in zip(ids, labels, probs, strict=True)
    ]
    return storage.csv_text(["id", "actual", "predicted", "score", *map(probability_column, names)], rows)


def plot_data(ids: list[str], labels: np.ndarray, results: dict[str, np.ndarray], names: list[str]) -> dict[str, str]:
    """DVC plot files (name -> CSV) per model: ROC and PR curve points and per-row predictions. The
    curves are undefined, like the AUCs, where the test split holds one class: header only then."""
    files = {}
    for model, probs in results.items():
        truth, score = scores_for_curves(labels, probs)
        fpr = tpr = precision = recall = np.zeros(0)
        if truth.any() and not truth.all():
            fpr, tpr, _ = roc_curve(truth, score)
            precision, recall, _ = precision_recall_curve(truth, score)
        files[f"roc_{model}.csv"] = curve_csv("fpr", "tpr", fpr, tpr)
        files[f"pr_{model}.csv"] = curve_csv("recall", "precision", recall, precision)
        files[f"test_predictions_{model}.csv"] = predictions_csv(ids, labels, probs, names)
    return files


def scores(labels: np.ndarray, results: dict[str, np.ndarray], names: list[str]) -> dict[str, Any]:
    """metrics.json: each model's classification metrics on the same test rows, their count, and whether
    the transformer's macro-F1 differs from the baseline's beyond noise (paired bootstrap and McNemar)."""
    metrics = {model: classification_metrics(labels, probs, names) for model, probs in results.items()}
    if {"transformer", "baseline"} <= results.keys():
        truth = [names[i] for i in labels]
        paired = compare_predictions(
            truth, *([names[i] for i in results[m].argmax(axis=1)] for m in ("baseline", "transformer"))
        )
        metrics["transformer_vs_baseline"] = {
            "macro_f1_difference": paired.difference,
            "interval_low": paired.interval[0],
            "interval_high": paired.interval[1],
            "only_baseline_right": paired.only_a_right,
            "only_transformer_right": paired.only_b_right,
            "mcnemar_p": paired.mcnemar_p,
            "verdict": paired.verdict_for("baseline", "transformer"),
        }
    return metrics | {"test_rows": len(labels)}
