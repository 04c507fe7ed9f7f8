"""Sequence classification: one label per text (spam or ham), the pipeline's first task."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import torch
from sklearn.metrics import accuracy_score, log_loss

from reprolab.results import metrics
from reprolab.tasks.base import Task

if TYPE_CHECKING:
    from reprolab.model.runtime import TokenData


def probability_column(label: str) -> str:
    """The column of a class's probability in prediction outputs."""
    return f"prob_{label}"


class SequenceClassification(Task):
    name = "sequence_classification"
    auto_model = "AutoModelForSequenceClassification"
    # Set at load, not by the first forward: a compiled model would compile its graph twice.
    head_config = {"problem_type": "single_label_classification"}
    peft_task_type = "SEQ_CLS"
    logits_axes = {0: "batch"}
    baseline_title = "TF-IDF"
    score = "macro_f1"
    score_title = "macro-F1"
    accuracy = "accuracy"
    paired_test = ("mcnemar_p", "McNemar p")
    validation_fields = ("val_loss", "val_accuracy", "val_macro_f1")
    input_columns = ("text",)
    input_formats = ("csv", "jsonl", "parquet", "spam_assassin", "mail_dir", "text_dir", "lines")
    label_column = "label"
    actual_type = pa.string()
    export_tolerance = 0.005

    def collate_labels(self, labels: list[int], width: int) -> torch.Tensor:
        return torch.tensor(labels, dtype=torch.int64)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(logits.float(), labels, weight=weight)

    def validation_scores(self, val: TokenData, probs: np.ndarray, names: list[str]) -> dict[str, float]:
        labels = val.labels
        classes = list(range(probs.shape[1]))
        predicted = probs.argmax(axis=1)
        return {
            "val_loss": float(log_loss(labels, probs, labels=classes)),
            "val_accuracy": float(accuracy_score(labels, predicted)),
            "val_macro_f1": metrics.macro_f1(labels, predicted, classes),
        }

    def test_scores(self, labels: np.ndarray, probs: np.ndarray, names: list[str]) -> dict[str, Any]:
        return metrics.classification_metrics(labels, probs, names)

    def predicted(self, probs: np.ndarray, names: list[str]) -> list[str]:
        return [names[i] for i in probs.argmax(axis=1)]

    def output_fields(self, names: list[str]) -> list[tuple[str, pa.DataType]]:
        return [("predicted", pa.string()), *[(probability_column(name), pa.float64()) for name in names]]

    def output_columns(self, probs: np.ndarray, names: list[str], rows: list[dict] | None = None) -> dict[str, list]:
        return {
            "predicted": self.predicted(probs, names),
            **{probability_column(name): probs[:, i].astype(np.float64).tolist() for i, name in enumerate(names)},
        }

    def backend_scores(
        self, test: TokenData, probs: np.ndarray, reference: np.ndarray, names: list[str]
    ) -> dict[str, float]:
        predicted, expected = probs.argmax(axis=1), reference.argmax(axis=1)
        return {
            self.score: metrics.macro_f1(test.labels, predicted, list(range(len(names)))),
            "agreement_with_torch": float((predicted == expected).mean()),
        }
