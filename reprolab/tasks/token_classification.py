"""Token classification: a tag per word (IOB2 over `ingest.labels`' entity types), named-entity
recognition the classic case. A row of token data is a window of a sentence (`encoding.word_alignment`):
labels per position, IGNORED where nothing is scored, and the word each position scores, so that
validation, evaluation and prediction read one tag per word, never per sub-token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
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
    input_columns = ("tokens", "text")  # words, else a raw text the recipe's pre-tokenizer splits
    input_formats = ("csv", "jsonl", "parquet", "conll", "lines")
    label_column = "tags"
    actual_type = pa.list_(pa.string())
    source_keys = ("tag_scheme", "pre_tokenizer")
    tokenize_keys = ("stride",)
    export_tolerance = 0.01

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
        truth, predicted = self.words(val, probs, names)
        word_count = sum(map(len, truth))
        correct = sum(
            a == b for true, tags in zip(truth, predicted, strict=True) for a, b in zip(true, tags, strict=True)
        )
        return {
            "val_loss": float(log_loss(labels[counted], probs[counted], labels=list(range(len(names))))),
            "val_accuracy": correct / word_count if word_count else 0.0,
            "val_entity_micro_f1": entity_metrics.entity_f1(truth, predicted),
        }

    def words(self, test: TokenData, probs: np.ndarray, names: list[str]) -> tuple[list[list[str]], list[list[str]]]:
        """(true, predicted) tags of each test sentence's words, read back from the windows once."""
        labels = np.concatenate(test.labels)
        _, words = words_of(test.ids, test.word_index, np.column_stack([labels, probs.argmax(axis=1)]))
        truth, predicted = ([[names[i] for i in sentence[:, k]] for sentence in words] for k in (0, 1))
        return truth, predicted

    def backend_scores(
        self, test: TokenData, probs: np.ndarray, reference: np.ndarray, names: list[str]
    ) -> dict[str, float]:
        truth, predicted = self.words(test, probs, names)
        _, expected = self.words(test, reference, names)
        flat, flat_expected = (np.concatenate([np.asarray(s) for s in tags]) for tags in (predicted, expected))
        return {
            self.score: entity_metrics.entity_f1(truth, predicted),
            "word_agreement_with_torch": float((flat == flat_expected).mean()),
            "entity_agreement_with_torch": entity_metrics.entity_agreement(predicted, expected),
        }

    def output_fields(self, names: list[str]) -> list[tuple[str, Any]]:
        return [
            ("text", pa.string()),  # the raw text, or the words given joined by spaces
            ("tokens", pa.list_(pa.string())),
            ("tags", pa.list_(pa.string())),
            ("tag_scores", pa.list_(pa.float64())),  # each word's tag's probability
            ("entities", pa.list_(ENTITY)),
        ]

    def output_columns(self, results: list[np.ndarray], names: list[str], rows: list[dict]) -> dict[str, list]:
        tags = [[names[i] for i in words.argmax(axis=1)] for words in results]
        scores = [words.max(axis=1).astype(np.float64) for words in results]
        return {
            "text": [row["text"] for row in rows],
            "tokens": [row["tokens"] for row in rows],
            "tags": tags,
            "tag_scores": [score.tolist() for score in scores],
            "entities": [
                entity_spans(row, sentence_tags, score)
                for row, sentence_tags, score in zip(rows, tags, scores, strict=True)
            ],
        }


# An entity span in prediction outputs: `start`/`end` are character offsets in the row's text (`end`
# exclusive), the words `first_word` to `end_word` (exclusive); `score` is the mean of its words' tag scores.
ENTITY = pa.struct(
    [
        ("type", pa.string()),
        ("start", pa.int64()),
        ("end", pa.int64()),
        ("text", pa.string()),
        ("score", pa.float64()),
        ("first_word", pa.int64()),
        ("end_word", pa.int64()),
    ]
)


def entity_spans(row: dict, tags: list[str], scores: np.ndarray) -> list[dict[str, Any]]:
    """A sentence's entities (`entity_metrics.spans`, as they are scored) with their place in its text."""
    spans = []
    for kind, first, end in entity_metrics.spans(tags):
        start, stop = row["offsets"][first][0], row["offsets"][end - 1][1]
        spans.append(
            {
                "type": kind,
                "start": start,
                "end": stop,
                "text": row["text"][start:stop],
                "score": float(scores[first:end].mean()),
                "first_word": first,
                "end_word": end,
            }
        )
    return spans
