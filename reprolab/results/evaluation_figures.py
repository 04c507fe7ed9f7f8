"""The evaluate stage's figures of the test split: confusion matrices (counts and row shares), per-class
scores, ROC and precision-recall curves and, for two classes, the threshold plot.

Curves over classes say how they average: for two classes the positive class is the second label;
for more, one-vs-rest scores are pooled (micro-average).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

from reprolab.results.figures import save_png, score_limits, score_text, short
from reprolab.results.metrics import scores_for_curves

BINARY_THRESHOLD = 0.5  # with two classes, argmax predicts the positive class at this probability


def averaging(names: list[str]) -> str:
    """How the ROC and PR curves and AUCs treat the classes, in words."""
    if len(names) == 2:
        return f"positive class: {short(names[1])}"
    return f"micro-average over {len(names)} classes, one-vs-rest"


def _class_ticks(ax, labels: list[str]) -> None:
    """One x tick per class, tilted past three classes so that the names do not run together."""
    many = len(labels) > 3
    ax.set_xticks(range(len(labels)), labels, rotation=45 if many else 0, ha="right" if many else "center")


def row_shares(counts: np.ndarray) -> np.ndarray:
    """Each row of a confusion matrix as shares of its actual class (a class with no rows: zeros)."""
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)


def confusion_matrices(labels: np.ndarray, results: dict[str, np.ndarray], names: list[str], dest: Path) -> Path:
    """Per model, the counts beside the row-normalised matrix (the share of each actual class). Both are
    coloured by the share, so a small class's correct cell is as dark as a large one's."""
    size = max(4.0, 0.6 * len(names) + 2)
    fig, axes = plt.subplots(len(results), 2, figsize=(2 * size + 1, size * len(results)), squeeze=False)
    for (count_ax, share_ax), (model, probs) in zip(axes, results.items(), strict=True):
        counts = confusion_matrix(labels, probs.argmax(axis=1), labels=list(range(len(names))))
        shares = row_shares(counts)
        for ax, text, title in (
            (count_ax, counts.astype(str), "counts"),
            (share_ax, np.char.mod("%.2f", shares), "share of each actual class"),
        ):
            ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
            for (i, j), cell in np.ndenumerate(text):
                ax.text(j, i, cell, ha="center", va="center", color="white" if shares[i, j] > 0.5 else "black")
            ax.set(title=f"{model}: {title}", xlabel="predicted", ylabel="actual")
            _class_ticks(ax, [short(n) for n in names])
            ax.set_yticks(range(len(names)), [short(n) for n in names])
    fig.tight_layout()
    return save_png(fig, dest)


def per_class_bars(labels: np.ndarray, results: dict[str, np.ndarray], names: list[str], dest: Path) -> Path:
    return save_png(per_class_figure(labels, results, names), dest)


def per_class_figure(labels: np.ndarray, results: dict[str, np.ndarray], names: list[str]):
    """Precision, recall and F1 of each class as points (not bars: the axis starts near the lowest
    score, so that 0.95 and 1.00 differ visibly), each value written, one panel per model on one shared
    range, the support under each class."""
    scores = {
        model: precision_recall_fscore_support(
            labels, probs.argmax(axis=1), labels=list(range(len(names))), zero_division=0
        )
        for model, probs in results.items()
    }
    limits = score_limits(np.concatenate([np.concatenate(values[:3]) for values in scores.values()]))
    fig, axes = plt.subplots(1, len(results), figsize=(max(5.0, 1.6 * len(names) + 2) * len(results), 4), squeeze=False)
    x = np.arange(len(names))
    for ax, (model, values) in zip(axes[0], scores.items(), strict=True):
        for k, (metric, column) in enumerate(zip(("precision", "recall", "F1"), values[:3], strict=True)):
            ax.plot(x + (k - 1) * 0.25, column, marker="os^"[k], linestyle="none", label=metric)
            for position, value in zip(x + (k - 1) * 0.25, column, strict=True):
                ax.annotate(
                    score_text(value),
                    (position, value),
                    textcoords="offset points",
                    xytext=(0, 6),
                    ha="center",
                    fontsize=7,
                )
        ax.set(title=f"{model}: per class", ylim=limits, ylabel="score", xlim=(-0.6, len(names) - 0.4))
        _class_ticks(ax, [f"{short(n)}\n(n={s})" for n, s in zip(names, values[3], strict=True)])
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="upper center", ncol=3, bbox_to_anchor=(0.5, 1.06))
    fig.tight_layout()
    return fig


def roc_and_pr(labels: np.ndarray, results: dict[str, np.ndarray], names: list[str], out: Path) -> list[Path]:
    """ROC and precision-recall curves of every model, the averaging over classes in the title."""
    files = []
    for kind in ("roc", "pr"):
        fig, ax = plt.subplots(figsize=(5, 4))
        for model, probs in results.items():
            truth, score = scores_for_curves(labels, probs)
            if truth.all() or not truth.any():
                continue
            if kind == "roc":
                fpr, tpr, _ = roc_curve(truth, score)
                ax.plot(fpr, tpr, label=f"{model} (AUC {score_text(roc_auc_score(truth, score))})")
                ax.set(xlabel="false positive rate", ylabel="true positive rate")
            else:
                precision, recall, _ = precision_recall_curve(truth, score)
                ax.plot(recall, precision, label=f"{model} (AP {score_text(average_precision_score(truth, score))})")
                ax.set(xlabel="recall", ylabel="precision")
        ax.set_title(f"{'ROC' if kind == 'roc' else 'Precision-recall'} ({averaging(names)})", fontsize=10)
        ax.legend(loc="lower right" if kind == "roc" else "lower left")
        files.append(save_png(fig, out / f"{kind}.png"))
    return files


def threshold_scores(
    positive: np.ndarray, score: np.ndarray, thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F1 of the positive class when a row is called positive at score >= each
    threshold (precision 1 where nothing is called positive, as sklearn's curves have it)."""
    called = score[None, :] >= thresholds[:, None]
    hits = (called & positive).sum(axis=1)
    precision = np.divide(hits, called.sum(axis=1), out=np.ones(len(thresholds)), where=called.any(axis=1))
    recall = hits / max(int(positive.sum()), 1)
    f1 = np.divide(
        2 * precision * recall, precision + recall, out=np.zeros(len(thresholds)), where=precision + recall > 0
    )
    return precision, recall, f1


def threshold_curves(labels: np.ndarray, results: dict[str, np.ndarray], names: list[str], dest: Path) -> Path:
    """Two classes: the positive class's precision, recall and F1 against the decision threshold on its
    probability, one panel per model, the threshold the predictions use marked."""
    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4), squeeze=False)
    thresholds = np.linspace(0.01, 0.99, 99)
    for ax, (model, probs) in zip(axes[0], results.items(), strict=True):
        for values, name in zip(
            threshold_scores(labels == 1, probs[:, 1], thresholds), ("precision", "recall", "F1"), strict=True
        ):
            ax.plot(thresholds, values, label=name)
        ax.axvline(BINARY_THRESHOLD, color="grey", linestyle="--", label=f"used: {BINARY_THRESHOLD} (argmax)")
        ax.set(
            title=f"{model}: {short(names[1])} against the threshold",
            xlabel=f"threshold on P({short(names[1])})",
            ylabel="score",
            ylim=(0, 1.05),
        )
        ax.legend(loc="lower center", fontsize=8)
    return save_png(fig, dest)


def test_figures(labels: np.ndarray, results: dict[str, np.ndarray], names: list[str], out: Path) -> list[Path]:
    """Every evaluate figure of the test split; the threshold plot only for two classes."""
    files = [
        confusion_matrices(labels, results, names, out / "confusion_matrix.png"),
        per_class_bars(labels, results, names, out / "per_class.png"),
        *roc_and_pr(labels, results, names, out),
    ]
    if len(names) == 2:
        files.append(threshold_curves(labels, results, names, out / "threshold.png"))
    return files
