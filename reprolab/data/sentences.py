"""Tagged sentences (token classification): a record's words and tags checked, stored as IOB2.

A record holds its words in `text` and their tags in `label`, as lists: the CoNLL reader puts them
there, and a JSONL or Parquet table's list columns (`ingest.text_column`, `ingest.label_column`) do.
A sentence is refused with its reason for: no words, a word or tag that is not text, as many words as
tags not, an empty word, a word that is not UTF-8, more than `ingest.max_text_bytes` of words, tags
that break `ingest.tag_scheme` (`tag_schemes`), or an entity type not in `ingest.labels`. Kept rows
hold the words as read and the tags in IOB2, and are counted by the entity types they hold.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from reprolab.data import tag_schemes
from reprolab.data.ingest_shared import escaped, undecodable
from reprolab.data.validation import id_problem, split_problem
from reprolab.params import IngestParams

SENTENCE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("group", pa.string()),  # the document (CoNLL's -DOCSTART-), else the sentence itself
        ("tokens", pa.list_(pa.string())),
        ("tags", pa.list_(pa.string())),  # IOB2, one a word
        ("split", pa.string()),  # train | val | test from the source's split column, else null
    ]
)


def sentence_json(tokens: Any, tags: Any) -> bytes:
    """A sentence as a reject row's `raw`: its words and tags as JSON (anything not JSON as its repr)."""
    shown = {"tokens": tokens, "tags": tags}
    return json.dumps(shown, ensure_ascii=False, default=repr).encode("utf-8", "surrogateescape")


def _list_problem(value: Any, what: str, field: str) -> tuple[str, str] | None:
    if not isinstance(value, list):
        return ("wrong_type", f"field {field!r} is {type(value).__name__}, expected a list of {what}s")
    for position, item in enumerate(value):
        if not isinstance(item, str):
            return ("wrong_type", f"field {field!r}: {what} {position + 1} is {type(item).__name__}, expected text")
    return None


class SentenceRules:
    """`ingestion.RowRules` for tagged sentences: rows of SENTENCE_SCHEMA, counted by entity type, every
    type of ingest.labels needed."""

    schema = SENTENCE_SCHEMA
    counted = "entities_by_type"

    def __init__(self, p: IngestParams):
        self.p = p
        self.types = p.class_names
        self.splits = {value: split for split, value in p.split_names.items()} if p.split_column else {}

    def problem(self, record: dict) -> tuple[str, str] | None:
        p = self.p
        if problem := id_problem(record, p):
            return problem
        words, tags = record["text"], record["label"]
        if words is None or words == []:
            return ("missing_text", f"field {p.text_column!r}: no words")
        if tags is None:
            return ("missing_label", f"field {p.label_column!r} is empty")
        if problem := _list_problem(words, "word", p.text_column) or _list_problem(tags, "tag", p.label_column):
            return problem
        if len(words) != len(tags):
            return ("length_mismatch", f"{len(words)} words but {len(tags)} tags")
        size = 0
        for position, word in enumerate(words):
            if not word.strip():
                return ("empty_token", f"word {position + 1} is empty")
            if undecodable(word):
                return ("undecodable", f"word {position + 1}: not UTF-8: {escaped(word)[:80]}")
            size += len(word.encode("utf-8"))
        if size > p.max_text_bytes:
            return ("text_too_large", f"{size} bytes of words > ingest.max_text_bytes={p.max_text_bytes}")
        try:
            iob2 = tag_schemes.to_iob2(tags, p.tag_scheme)
        except tag_schemes.TagError as refused:
            return (refused.reason, refused.detail)
        for position, tag in enumerate(iob2):
            if tag != tag_schemes.OUTSIDE and tag[2:] not in self.types:
                return (
                    "unknown_label",
                    f"word {position + 1}: entity type {tag[2:]!r} is not one of ingest.labels {self.types}",
                )
        return split_problem(record, p)

    def row(self, record: dict) -> dict:
        return {
            "id": record["id"],
            "source": record["source"],
            "group": record.get("document") or record["id"],  # documents are known from CoNLL's -DOCSTART-
            "tokens": record["text"],
            "tags": tag_schemes.to_iob2(record["label"], self.p.tag_scheme),
            "split": self.splits.get(record.get("split")),
        }

    def reject_fields(self, record: dict) -> dict:
        raw = record.get("raw")
        if "raw" not in record and isinstance(record.get("text"), list):  # a table's row, as JSON
            raw = sentence_json(record["text"], record.get("label"))
        return {"label": None, "raw": raw}

    def counts(self, row: dict) -> list[str]:
        return tag_schemes.mention_types(row["tags"])

    def expected(self) -> list[str]:
        return self.types

    def missing(self, empty: list[str], kept: dict[str, int]) -> str:
        return (
            f"no entity of type(s) {empty} of ingest.labels in the kept sentences (entities kept: {kept}); "
            "a tagger needs examples of every type"
        )
