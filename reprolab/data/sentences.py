"""Tagged sentences (token classification): a record's words and tags checked, stored as IOB2.

A record holds its words in `text` and their tags in `label`, as lists: the CoNLL reader puts them
there, and a JSONL or Parquet table's list columns (`ingest.text_column`, `ingest.label_column`) do.
A sentence is refused with its reason for: no words, a word or tag that is not text, as many words as
tags not, an empty word, a word that is not UTF-8, more than `ingest.max_text_bytes` of words, tags
that break `ingest.tag_scheme` (`tag_schemes`), or an entity type not in `ingest.labels`. Kept rows
hold the words as read and the tags in IOB2, and are counted by the entity types they hold.

Unlabelled (`reprolab predict`, the served model), a record's tags may be missing, and its `text` may
be a raw text instead of words: it is split into words by `ingest.pre_tokenizer` (`pre_tokenize`),
each word keeping its character offsets, and refused as a text is (empty, not UTF-8, too large). Words
given alone stand for the text they make joined by spaces; a served request may give the text they
came from beside them (`words_text`), which must hold them in order (else `words_text_mismatch`).
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from reprolab.data import tag_schemes
from reprolab.data.ingest_shared import escaped, undecodable
from reprolab.data.validation import id_problem, split_problem
from reprolab.params import IngestParams

# ingest.pre_tokenizer -> the tokenizers library's pre-tokenizer that splits a raw text into words.
PRE_TOKENIZERS = {"whitespace": "WhitespaceSplit", "words_and_punctuation": "Whitespace"}

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


def pre_tokenize(text: str, kind: str) -> list[tuple[str, tuple[int, int]]]:
    """A raw text's words, each with its (start, end) character offsets in `text`."""
    from tokenizers import pre_tokenizers

    return getattr(pre_tokenizers, PRE_TOKENIZERS[kind])().pre_tokenize_str(text)


def joined(words: list[str]) -> tuple[str, list[tuple[int, int]]]:
    """Words given as words: the text they make joined by single spaces, and each one's offsets in it."""
    offsets, start = [], 0
    for word in words:
        offsets.append((start, start + len(word)))
        start += len(word) + 1
    return " ".join(words), offsets


def located(words: list[str], text: str) -> list[tuple[int, int]] | tuple[int, int]:
    """Each word's offsets in `text`, the words found in order with only whitespace around them; where
    one is not, (its position, the offset it was looked for at): len(words) where the text goes on
    past the last word."""
    offsets, start = [], 0
    for position, word in enumerate(words):
        while start < len(text) and text[start].isspace():
            start += 1
        if not text.startswith(word, start):
            return position, start
        offsets.append((start, start + len(word)))
        start += len(word)
    if text[start:].strip():
        return len(words), start
    return offsets


def _list_problem(value: Any, what: str, field: str) -> tuple[str, str] | None:
    if not isinstance(value, list):
        return ("wrong_type", f"field {field!r} is {type(value).__name__}, expected a list of {what}s")
    for position, item in enumerate(value):
        if not isinstance(item, str):
            return ("wrong_type", f"field {field!r}: {what} {position + 1} is {type(item).__name__}, expected text")
    return None


class SentenceRules:
    """`row_rules.RowRules` for tagged sentences: rows of SENTENCE_SCHEMA, counted by entity type, every
    type of ingest.labels needed. `labelled=False` (predict): tags optional, a raw text split into words,
    and each row's `text` and word `offsets` kept beside its words."""

    schema = SENTENCE_SCHEMA
    counted = "entities_by_type"

    def __init__(self, p: IngestParams, labelled: bool = True):
        self.p, self.labelled = p, labelled
        self.types = p.class_names
        self.splits = {value: split for split, value in p.split_names.items()} if p.split_column else {}

    def _raw_text(self, record: dict) -> bool:
        return not self.labelled and isinstance(record["text"], str)

    def _text_problem(self, text: str) -> tuple[str, str] | None:
        p = self.p
        if undecodable(text):
            return ("undecodable", f"field {p.text_column!r}: not UTF-8: {escaped(text)[:80]}")
        if len(text.encode("utf-8")) > p.max_text_bytes:
            return ("text_too_large", f"field {p.text_column!r}: over the model's limit of {p.max_text_bytes} bytes")
        if not text.strip():
            return ("missing_text", f"field {p.text_column!r}: no words")
        return None

    def _words(self, record: dict) -> tuple[list[str], str, list[tuple[int, int]]]:
        """The record's words, the text they stand in, and each word's offsets in that text (a served
        request's words may come with their text, `words_text`)."""
        if self._raw_text(record):
            split = pre_tokenize(record["text"], self.p.pre_tokenizer)
            return [word for word, _ in split], record["text"], [offsets for _, offsets in split]
        if isinstance(record.get("words_text"), str):
            return record["text"], record["words_text"], located(record["text"], record["words_text"])
        return record["text"], *joined(record["text"])

    def problem(self, record: dict) -> tuple[str, str] | None:
        p = self.p
        if problem := id_problem(record, p):
            return problem
        words, tags = record["text"], record["label"]
        if self._raw_text(record):
            if problem := self._text_problem(words):
                return problem
            words = self._words(record)[0]
        if words is None or words == []:
            return ("missing_text", f"field {p.text_column!r}: no words")
        if tags is None and self.labelled:
            return ("missing_label", f"field {p.label_column!r} is empty")
        if problem := _list_problem(words, "word", p.text_column):
            return problem
        if tags is not None and (problem := _list_problem(tags, "tag", p.label_column)):
            return problem
        if tags is not None and len(words) != len(tags):
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
        if problem := self._words_text_problem(record):
            return problem
        if tags is None:
            return split_problem(record, p)
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

    def _words_text_problem(self, record: dict) -> tuple[str, str] | None:
        """Words given with their text (a served request's `tokens` and `text`) that the text does not hold."""
        text = record.get("words_text")
        if text is None or self._raw_text(record):
            return None
        if not isinstance(text, str):
            return ("wrong_type", f"the text beside the words is {type(text).__name__}, expected text")
        if problem := self._text_problem(text):
            return problem
        found = located(record["text"], text)
        if isinstance(found, tuple):
            position, offset = found
            where = (
                f"word {position + 1} ({escaped(record['text'][position])[:40]!r}) is not at character {offset}"
                if position < len(record["text"])
                else f"the text goes on past the last word, at character {offset}"
            )
            return ("words_text_mismatch", f"{where} of the text: give the text's words in order, or the words alone")
        return None

    def row(self, record: dict) -> dict:
        tags = record["label"]
        row = {
            "id": record["id"],
            "source": record["source"],
            "group": record.get("document") or record["id"],  # documents are known from CoNLL's -DOCSTART-
            "tokens": record["text"],
            "tags": None if tags is None else tag_schemes.to_iob2(tags, self.p.tag_scheme),
            "split": self.splits.get(record.get("split")),
        }
        if self.labelled:
            return row
        row["tokens"], text, offsets = self._words(record)
        # `raw`: what a reject row shows should a later step (clean's normalisation) refuse the sentence.
        return row | {"text": text, "offsets": offsets, "raw": sentence_json(row["tokens"], tags)}

    def reject_fields(self, record: dict) -> dict:
        raw = record.get("raw")
        if "raw" not in record and isinstance(record.get("text"), list):  # a table's row, as JSON
            raw = sentence_json(record["text"], record.get("label"))
        elif "raw" not in record and isinstance(record.get("text"), str):  # a raw text (predict)
            raw = record["text"].encode("utf-8", "surrogateescape")
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
