"""Entity-level scores of tag sequences: the one implementation every NER figure comes from (train's
validation, evaluate, the export's backends, the significance tests).

seqeval in its default mode, which is conlleval's (the CoNLL shared tasks' scorer, what papers report):
an entity is a maximal run of B-/I- tags of one type, and a stray I- starts one. Strict mode (IOB2
entities only) is one argument away and is recorded beside every score (`MODE`). The headline is the
entity micro-F1; macro-F1 averages the types; token accuracy counts every word's tag, O included.
"""

from __future__ import annotations

from typing import Any

from seqeval.metrics import accuracy_score, classification_report, f1_score, precision_score, recall_score
from seqeval.metrics.sequence_labeling import get_entities
from seqeval.scheme import IOB2

MODE = "conlleval"  # seqeval's default; "strict" counts only entities that are well-formed IOB2


def _strict(mode: str) -> dict[str, Any]:
    if mode not in ("conlleval", "strict"):
        raise ValueError(f"entity scoring mode {mode!r}: conlleval or strict")
    return {"mode": "strict", "scheme": IOB2} if mode == "strict" else {}


def entity_f1(truth: list[list[str]], predicted: list[list[str]], mode: str = MODE) -> float:
    """Entity micro-F1 (0 where nothing is predicted or true)."""
    return float(f1_score(truth, predicted, average="micro", zero_division=0, **_strict(mode)))


def entity_scores(truth: list[list[str]], predicted: list[list[str]], mode: str = MODE) -> dict[str, Any]:
    """Micro and macro precision, recall and F1 over entities, token accuracy, and each type's
    precision, recall, F1 and support (true entities), as metrics.json holds them."""
    strict = _strict(mode)
    report = classification_report(truth, predicted, output_dict=True, zero_division=0, **strict)
    per_type = {
        kind: {
            "precision": float(row["precision"]),
            "recall": float(row["recall"]),
            "f1": float(row["f1-score"]),
            "support": int(row["support"]),
        }
        for kind, row in report.items()
        if kind not in ("micro avg", "macro avg", "weighted avg")
    }
    return {
        "entity_micro_f1": entity_f1(truth, predicted, mode),
        "entity_micro_precision": float(precision_score(truth, predicted, average="micro", zero_division=0, **strict)),
        "entity_micro_recall": float(recall_score(truth, predicted, average="micro", zero_division=0, **strict)),
        "entity_macro_f1": float(f1_score(truth, predicted, average="macro", zero_division=0, **strict)),
        "token_accuracy": float(accuracy_score(truth, predicted)),
        "entities": sum(row["support"] for row in per_type.values()),
        "per_type": per_type,
        "mode": mode,
    }


def spans(tags: list[str]) -> list[tuple[str, int, int]]:
    """One sentence's entities as the scores above count them (conlleval): (type, first word, end word,
    exclusive)."""
    return [(kind, start, end + 1) for kind, start, end in get_entities(list(tags))]


def entity_agreement(first: list[list[str]], second: list[list[str]]) -> float:
    """How far two taggers find the same entities (type and words) in the same sentences: the entities
    both find over those either finds (1.0 where neither finds any)."""
    both = either = 0
    for a, b in zip(first, second, strict=True):
        found_a, found_b = set(spans(a)), set(spans(b))
        both += len(found_a & found_b)
        either += len(found_a | found_b)
    return both / either if either else 1.0
