"""Evaluation: the fine-tuned model and the task's baseline scored on the same test rows.

metrics.json (each model's `Task.test_scores` and whether their difference is beyond noise), per-row
predictions and ROC / PR curve points as DVC plot data (the figures are
`reprolab.results.evaluation_figures`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

from reprolab import paths, storage
from reprolab.errors import StageError
from reprolab.model import runtime
from reprolab.params import Params
from reprolab.results import baselines, evaluation_figures
from reprolab.results.metrics import scores_for_curves
from reprolab.results.significance import compare_predictions
from reprolab.tasks.base import Task


@dataclass(frozen=True)
class Evaluation:
    """What evaluate writes besides the weights' digest: metrics.json's content, report files (path ->
    text: DVC plot data, tables) and the figures drawn."""

    metrics: dict[str, Any]
    files: dict[Path, str]
    figures: list[Path]


@dataclass(frozen=True)
class Contenders:
    """The model an evaluate stage scores and its reference on the same test rows: the task's classical
    baseline, fitted in the stage (`reference_predictor` None), or another model through the prediction
    path (the student's teacher). The names are their keys in metrics.json and the plot files."""

    name: str
    predictor: Any  # `reprolab.inference.prediction.Predictor`, or anything with its `probabilities`
    reference: str
    reference_predictor: Any = None

    @property
    def versus(self) -> str:
        """metrics.json's key for their paired comparison."""
        return f"{self.name}_vs_{self.reference}"


def contenders_for(task: Task, files: paths.ScoredModel, predictor_of: Callable[[Path], Any]) -> Contenders:
    """The fine-tuned model against the task's baseline; the distilled student against its teacher."""
    if files.is_fine_tuned:
        return Contenders(task.model_name, predictor_of(paths.MODEL_DIR), task.baseline_name)
    student, teacher = task.student_scored
    return Contenders(student, predictor_of(files.model_dir), teacher, predictor_of(paths.MODEL_DIR))


def evaluate_texts(task: Task, params: Params, contenders: Contenders, files: paths.ScoredModel) -> Evaluation:
    """The text classifier and its reference on the test split, each through `probabilities` from the
    token ids on (the prediction path `reprolab predict` and the MLflow model take), or the TF-IDF
    baseline fitted on the clean training texts."""
    names = params.ingest.class_names
    test = runtime.TokenData.read(paths.token_split("test"))
    clean_test = storage.read_parquet(paths.clean_split("test"), ["id", "text"]).to_pydict()
    if clean_test["id"] != test.ids:
        raise StageError(
            f"{paths.token_split('test')} and {paths.clean_split('test')} hold different rows: "
            "run `dvc repro` to bring them in step"
        )
    if contenders.reference_predictor is not None:
        reference = contenders.reference_predictor.probabilities(test.sequences)
    else:
        clean_train = storage.read_parquet(paths.clean_split("train"), ["label", "text"]).to_pydict()
        reference = baselines.tfidf_probs(
            clean_train["text"],
            [names.index(label) for label in clean_train["label"]],
            clean_test["text"],
            params.evaluate.baseline,
            len(names),
            params.train.class_weights,
        )
    results = {contenders.name: contenders.predictor.probabilities(test.sequences), contenders.reference: reference}
    return Evaluation(
        scores(task, test.labels, results, names, contenders),
        {files.plots / name: text for name, text in plot_data(task, test.ids, test.labels, results, names).items()},
        evaluation_figures.test_figures(test.labels, results, names, files.figures),
    )


def curve_csv(x_name: str, y_name: str, x: np.ndarray, y: np.ndarray) -> str:
    return storage.csv_text([x_name, y_name], [[float(a), float(b)] for a, b in zip(x, y, strict=True)])


def predictions_csv(task: Task, ids: list[str], labels: np.ndarray, probs: np.ndarray, names: list[str]) -> str:
    """One row per test example: its true label, the task's prediction columns (those `reprolab predict`
    writes) and the top probability; ids and labels come from user data, so cells are guarded."""
    predicted, *others = [name for name, _ in task.output_fields(names)]
    columns = task.output_columns(probs, names)
    rows = [
        [row_id, names[label], columns[predicted][i], float(prob.max()), *(columns[field][i] for field in others)]
        for i, (row_id, label, prob) in enumerate(zip(ids, labels, probs, strict=True))
    ]
    # The score beside the prediction, as the files of earlier revisions have it (compare reads them).
    return storage.csv_text(["id", "actual", predicted, "score", *others], rows)


def plot_data(
    task: Task, ids: list[str], labels: np.ndarray, results: dict[str, np.ndarray], names: list[str]
) -> dict[str, str]:
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
        files[f"test_predictions_{model}.csv"] = predictions_csv(task, ids, labels, probs, names)
    return files


def scores(
    task: Task, labels: np.ndarray, results: dict[str, np.ndarray], names: list[str], contenders: Contenders
) -> dict[str, Any]:
    """metrics.json: each model's test scores on the same rows, their count, and whether the scored
    model's macro-F1 differs from its reference's beyond noise (paired bootstrap and McNemar)."""
    metrics = {model: task.test_scores(labels, probs, names) for model, probs in results.items()}
    model, reference = contenders.name, contenders.reference
    paired = compare_predictions(
        [names[i] for i in labels], task.predicted(results[reference], names), task.predicted(results[model], names)
    )
    metrics[contenders.versus] = {
        "macro_f1_difference": paired.difference,
        "interval_low": paired.interval[0],
        "interval_high": paired.interval[1],
        f"only_{reference}_right": paired.only_a_right,
        f"only_{model}_right": paired.only_b_right,
        "mcnemar_p": paired.mcnemar_p,
        "verdict": paired.verdict_for(reference, model),
    }
    return metrics | {"test_rows": len(labels)}
