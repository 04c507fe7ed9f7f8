"""Token classification: a tag per word (IOB2 over `ingest.labels`' entity types), named-entity
recognition the classic case. A row of token data is a window of a sentence (`encoding.word_alignment`):
labels per position, IGNORED where nothing is scored, and the word each position scores, so that
validation, evaluation and prediction read one tag per word, never per sub-token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from sklearn.metrics import log_loss

from reprolab.data import tag_schemes
from reprolab.encoding.labels import IGNORED
from reprolab.encoding.word_alignment import words_of
from reprolab.results import entity_metrics
from reprolab.tasks.base import Task

if TYPE_CHECKING:
    from reprolab.model.runtime import TokenData


class TokenClassification(Task):
    name = "token_classification"
    auto_model = "AutoModelForTokenClassification"
    head_config = {}
    peft_task_type = "TOKEN_CLS"
    logits_axes = {0: "batch", 1: "sequence"}
    baseline_title = "CRF"
    score = "entity_micro_f1"
    score_title = "entity micro-F1"
    accuracy = "token_accuracy"
    paired_test = ("randomization_p", "approximate randomization p")
    validation_fields = ("val_loss", "val_accuracy", "val_entity_micro_f1")
    served = False  # predict, serving and ONNX for taggers: the next step (issue 32)

    def label_names(self, classes: list[str]) -> list[str]:
        return tag_schemes.tag_names(classes)

    def collate_labels(self, labels: list[np.ndarray], width: int) -> torch.Tensor:
        out = np.full((len(labels), width), IGNORED, dtype=np.int64)
        for row, values in enumerate(labels):
            out[row, : len(values)] = values
        return torch.from_numpy(out)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(
            logits.float().flatten(0, 1), labels.flatten(), weight=weight, ignore_index=IGNORED
        )

    def validation_scores(self, val: TokenData, probs: np.ndarray, names: list[str]) -> dict[str, float]:
        labels = np.concatenate(val.labels)
        counted = labels != IGNORED
        # Each sentence's words as (true tag id, predicted tag id) rows, read back from the windows once.
        _, words = words_of(val.ids, val.word_index, np.column_stack([labels, probs.argmax(axis=1)]))
        truth, predicted = ([[names[i] for i in sentence[:, k]] for sentence in words] for k in (0, 1))
        flat = np.concatenate(words) if words else np.zeros((0, 2), dtype=np.int64)
        return {
            "val_loss": float(log_loss(labels[counted], probs[counted], labels=list(range(len(names))))),
            "val_accuracy": float((flat[:, 0] == flat[:, 1]).mean()) if len(flat) else 0.0,
            "val_entity_micro_f1": entity_metrics.entity_f1(truth, predicted),
        }
