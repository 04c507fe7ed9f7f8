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
        _, truth = words_of(val.ids, val.word_index, labels)
        _, predicted = words_of(val.ids, val.word_index, probs.argmax(axis=1))
        as_tags = [[names[i] for i in sentence] for sentence in truth], [[names[i] for i in s] for s in predicted]
        words = np.concatenate(truth) if truth else np.zeros(0)
        return {
            "val_loss": float(log_loss(labels[counted], probs[counted], labels=list(range(len(names))))),
            "val_accuracy": float((np.concatenate(predicted) == words).mean()) if len(words) else 0.0,
            "val_entity_micro_f1": entity_metrics.entity_f1(*as_tags),
        }
