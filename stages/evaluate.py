"""evaluate: score the fine-tuned model and a TF-IDF + logistic-regression baseline on the test split.

Writes reports/metrics.json (accuracy, macro-F1, per-class precision/recall/F1, ROC-AUC, PR-AUC for
both models), per-row predictions and ROC / PR curve points as DVC plot data, and PNG figures drawn
offline with matplotlib. The metrics land in the MLflow run that trained the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import label_binarize

from stages import io, modeling, paths, tracking
from stages.errors import run_stage
from stages.params import BaselineParams, load_params

METRICS_PATH = paths.REPORTS / "metrics.json"
MODELS = ("transformer", "baseline")


def _scores(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(truth, score) for curves and AUCs: the positive class when binary, else micro-averaged."""
    if probs.shape[1] == 2:
        return labels == 1, probs[:, 1]
    onehot = label_binarize(labels, classes=list(range(probs.shape[1])))
    return onehot.ravel().astype(bool), probs.ravel()


def classification_metrics(labels: np.ndarray, probs: np.ndarray, names: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class P/R/F1 and support, ROC-AUC and PR-AUC (when both classes occur)."""
    predicted = probs.argmax(axis=1)
    classes = list(range(len(names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=classes, zero_division=0
    )
    metrics: dict[str, Any] = {
        "accuracy": float(accuracy_score(labels, predicted)),
        "macro_f1": float(f1_score(labels, predicted, labels=classes, average="macro", zero_division=0)),
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]),
                   "f1": float(f1[i]), "support": int(support[i])}
            for i, name in enumerate(names)
        },
    }
    truth, score = _scores(labels, probs)
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


def baseline_probs(train_texts: list[str], train_labels: list[int], test_texts: list[str],
                   p: BaselineParams, num_labels: int) -> np.ndarray:
    """TF-IDF (word n-grams, sublinear tf) + logistic regression: the classical peer."""
    vocabulary = top_terms(train_texts, p.ngram_max, p.max_features)
    model = make_pipeline(
        TfidfVectorizer(vocabulary=vocabulary, ngram_range=(1, p.ngram_max), sublinear_tf=True),
        LogisticRegression(C=p.C, max_iter=2000),
    )
    model.fit(train_texts, train_labels)
    probs = np.zeros((len(test_texts), num_labels))
    probs[:, model.classes_] = model.predict_proba(test_texts)
    return probs


def curve_csv(x_name: str, y_name: str, x: np.ndarray, y: np.ndarray) -> str:
    return io.csv_text([x_name, y_name], [[float(a), float(b)] for a, b in zip(x, y, strict=True)])


def predictions_csv(ids: list[str], labels: np.ndarray, probs: np.ndarray, names: list[str]) -> str:
    """One row per test example; ids and labels come from user data, so cells are guarded."""
    rows = [[row_id, names[label], names[int(prob.argmax())], float(prob.max())]
            for row_id, label, prob in zip(ids, labels, probs, strict=True)]
    return io.csv_text(["id", "actual", "predicted", "score"], rows)


def plot_data(ids: list[str], labels: np.ndarray, results: dict[str, np.ndarray], names: list[str]) -> dict[str, str]:
    """DVC plot files (name -> CSV) per model: ROC and PR curve points and per-row predictions. The
    curves are undefined, like the AUCs, where the test split holds one class: header only then."""
    files = {}
    for model, probs in results.items():
        truth, score = _scores(labels, probs)
        fpr = tpr = precision = recall = np.zeros(0)
        if truth.any() and not truth.all():
            fpr, tpr, _ = roc_curve(truth, score)
            precision, recall, _ = precision_recall_curve(truth, score)
        files[f"roc_{model}.csv"] = curve_csv("fpr", "tpr", fpr, tpr)
        files[f"pr_{model}.csv"] = curve_csv("recall", "precision", recall, precision)
        files[f"test_predictions_{model}.csv"] = predictions_csv(ids, labels, probs, names)
    return files


def draw_figures(labels: np.ndarray, results: dict[str, np.ndarray], names: list[str], out: Path) -> list[Path]:
    files = []
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4))
    for ax, (model, probs) in zip(np.atleast_1d(axes), results.items(), strict=True):
        matrix = confusion_matrix(labels, probs.argmax(axis=1), labels=list(range(len(names))))
        ax.imshow(matrix, cmap="Blues")
        for (i, j), count in np.ndenumerate(matrix):
            ax.text(j, i, str(count), ha="center", va="center",
                    color="white" if count > matrix.max() / 2 else "black")
        ax.set(title=f"{model}: confusion matrix", xlabel="predicted", ylabel="actual",
               xticks=range(len(names)), yticks=range(len(names)), xticklabels=names, yticklabels=names)
    files.append(_save(fig, out / "confusion_matrix.png"))
    for kind in ("roc", "pr"):
        fig, ax = plt.subplots(figsize=(5, 4))
        for model, probs in results.items():
            truth, score = _scores(labels, probs)
            if truth.all() or not truth.any():
                continue
            if kind == "roc":
                fpr, tpr, _ = roc_curve(truth, score)
                ax.plot(fpr, tpr, label=f"{model} (AUC {roc_auc_score(truth, score):.3f})")
                ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
            else:
                precision, recall, _ = precision_recall_curve(truth, score)
                ax.plot(recall, precision, label=f"{model} (AP {average_precision_score(truth, score):.3f})")
                ax.set(xlabel="recall", ylabel="precision", title="Precision-recall")
        ax.legend(loc="lower right" if kind == "roc" else "lower left")
        files.append(_save(fig, out / f"{kind}.png"))
    return files


def _save(fig, dest: Path) -> Path:
    # Fixed metadata: PNG bytes stay identical for identical data.
    with io.atomic_path(dest, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return dest


def main() -> None:
    params = load_params()
    names = params.ingest.labels
    test = modeling.TokenData.read(paths.token_split("test"))
    device = modeling.select_device(params.train.device)
    bf16 = modeling.use_bf16(params.train.mixed_precision, device)
    model = modeling.load_classifier(str(paths.MODEL_DIR), names).to(device)
    logits = modeling.predict_logits(
        model, test, params.evaluate.batch_size, model.config.pad_token_id or 0, device, bf16
    )
    clean_train = io.read_parquet(paths.clean_split("train"), ["label", "text"]).to_pydict()
    clean_test = io.read_parquet(paths.clean_split("test"), ["id", "text"]).to_pydict()
    if clean_test["id"] != test.ids:
        raise AssertionError("tokenized and clean test splits are out of step: run dvc repro")
    results = {
        "transformer": modeling.softmax(logits),
        "baseline": baseline_probs(
            clean_train["text"], [names.index(label) for label in clean_train["label"]],
            clean_test["text"], params.evaluate.baseline, len(names),
        ),
    }
    metrics = {model_name: classification_metrics(test.labels, probs, names) for model_name, probs in results.items()}
    metrics["test_rows"] = len(test)
    io.write_json(metrics, METRICS_PATH)
    plot_files = []
    for name, text in plot_data(test.ids, test.labels, results, names).items():
        io.write_text(text, paths.PLOTS / name)
        plot_files.append(paths.PLOTS / name)
    figures = draw_figures(test.labels, results, names, paths.FIGURES)
    for model_name in MODELS:
        print(f"evaluate: {model_name}: macro-F1 {metrics[model_name]['macro_f1']:.4f}, "
              f"accuracy {metrics[model_name]['accuracy']:.4f}")

    model_md5 = io.file_md5(paths.MODEL_DIR / "model.safetensors")
    train_run = tracking.find_run_for_model(model_md5)
    with tracking.StageRun.start("evaluate", params, {"test": paths.token_split("test")},
                                 resume_run_id=train_run) as run:
        if train_run is None:  # lets `reprolab replay` attach this record to its train run later
            run.set_tags({tracking.MODEL_DIGEST_TAG: model_md5})
        run.log_metrics(tracking.flat_metrics(metrics, prefix="test."))
        run.log_artifact(METRICS_PATH, "reports")
        for file in [*plot_files, *figures]:
            run.log_artifact(file, "reports/plots")
        run.log_outputs([METRICS_PATH], prefix="evaluate")


if __name__ == "__main__":
    run_stage(main)
