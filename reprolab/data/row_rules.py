"""What a record of each task becomes: the rules that check a record and make it a raw row (a labelled
text, `TextRules`; a tagged sentence, `sentences.SentenceRules`), shared by ingest and by the prediction
path (`reprolab predict`, the served model), which reads new records by the same rules, unlabelled.
"""

from __future__ import annotations

from typing import Protocol

import pyarrow as pa

from reprolab.data.ingest_shared import escaped
from reprolab.data.sentences import SentenceRules
from reprolab.data.validation import LabelMatcher, validate
from reprolab.params import IngestParams, preview

RAW_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("group", pa.string()),
        ("label", pa.string()),
        ("kind", pa.string()),  # "mail": raw RFC 822 bytes; "text": UTF-8 text
        ("raw", pa.binary()),
        ("checksum_status", pa.string()),  # ok | mismatch | absent
        ("split", pa.string()),  # train | val | test from the source's split column, else null
        ("encoding", pa.string()),  # what a text_dir file was decoded from (detected); null for the others
    ]
)


def _raw_bytes(record: dict) -> bytes | None:
    if "raw" in record:
        return record["raw"]
    text = record.get("text")
    if not isinstance(text, str):
        return None
    try:
        return text.encode("utf-8", "surrogateescape")  # the bytes the source held
    except UnicodeEncodeError:  # a lone surrogate escaped in JSON: no bytes held it
        return text.encode("utf-8", "surrogatepass")


class RowRules(Protocol):
    """How one kind of record becomes a raw row: what the task's records are (a labelled text, a tagged
    sentence). `ingest` checks ids and duplicates for every kind; the rules check the rest."""

    schema: pa.Schema  # of the raw rows
    counted: str  # the report's key for what kept rows are counted by (`counts`)

    def problem(self, record: dict) -> tuple[str, str] | None:
        """The record's first row-level problem (reason, detail), or None."""

    def row(self, record: dict) -> dict:
        """A valid record's raw row."""

    def reject_fields(self, record: dict) -> dict:
        """A reject row's `label` and `raw` (what the source held, to look at)."""

    def counts(self, row: dict) -> list[str]:
        """The names a kept row counts under in the report (its label; its entities' types)."""

    def expected(self) -> list[str]:
        """The names every one of which the kept rows must hold, or the stage fails."""

    def missing(self, empty: list[str], kept: dict[str, int]) -> str:
        """The message when the kept rows hold none of `empty`."""


class TextRules:
    """Labelled texts (sequence classification): `validation.validate`, rows of RAW_SCHEMA, counted by
    label, every class needed."""

    schema = RAW_SCHEMA
    counted = "kept_by_label"

    def __init__(self, p: IngestParams, labelled: bool = True):
        self.p, self.labelled = p, labelled
        self.labels = LabelMatcher(p)
        self.splits = {value: split for split, value in p.split_names.items()} if p.split_column else {}

    def problem(self, record: dict) -> tuple[str, str] | None:
        return validate(record, self.p, self.labels, self.labelled)

    def row(self, record: dict) -> dict:
        return {
            "id": record["id"],
            "source": record["source"],
            "group": record["group"],
            "label": self.labels(record["label"]) if record["label"] not in (None, "") else None,
            "kind": record["kind"],
            "raw": _raw_bytes(record),
            "checksum_status": record["checksum_status"],
            "split": self.splits.get(record.get("split")),
            "encoding": record.get("encoding"),
        }

    def reject_fields(self, record: dict) -> dict:
        label = record.get("label")
        shown = None if label is None else escaped(label if isinstance(label, str) else preview(label))
        return {"label": shown, "raw": _raw_bytes(record)}

    def counts(self, row: dict) -> list[str]:
        return [row["label"]]

    def expected(self) -> list[str]:
        return self.p.class_names

    def missing(self, empty: list[str], kept: dict[str, int]) -> str:
        return f"no row kept for class(es) {empty} of ingest.labels (kept {kept}); a classifier needs every class"


# What a record is, for each task (params.yaml's `task:`): a labelled text or a tagged sentence.
ROW_RULES = {"sequence_classification": TextRules, "token_classification": SentenceRules}
