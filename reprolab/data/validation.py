"""Whether a record makes a row: its first row-level problem (`validate`), as (reason, detail), or
none; and source label values matched to class names as params say (`LabelMatcher`).
"""

from __future__ import annotations

from typing import Any

from reprolab.data.ingest_shared import escaped, sniff_binary, undecodable
from reprolab.params import IngestParams, class_name, preview


class LabelMatcher:
    """Source label values -> class names, as params say: `label_map` first, then `labels`.

    Typed values (JSON, Parquet) match by type and value: the integer 1 is not True. A text value (any
    CSV cell, a JSON string) matches text labels and label_map keys after the optional strip and
    casefold, and integer and boolean labels and label_map keys by their text ("1", "true"): a CSV's
    cells are text, and `label_map: {2: cooking}` is written for them as often as for typed columns.
    """

    def __init__(self, p: IngestParams):
        self.strip, self.casefold = p.label_strip, p.label_casefold
        self.names: dict[tuple[str, Any], str] = {}
        for value, name in [*zip(p.labels, p.class_names, strict=True), *p.label_map.items()]:
            self.names[self._key(value)] = name
        typed = [*zip(p.labels, p.class_names, strict=True), *p.label_map.items()]
        for value, name in typed:  # a text column's "1" or "true"; a text key of the same digits wins
            if not isinstance(value, str):
                self.names.setdefault(("text", self._text(class_name(value))), name)

    def _text(self, text: str) -> str:
        text = text.strip() if self.strip else text
        return text.casefold() if self.casefold else text

    def _key(self, value: Any) -> tuple[str, Any]:
        kind = "bool" if isinstance(value, bool) else "int" if isinstance(value, int) else "text"
        return kind, self._text(value) if kind == "text" else value

    def __call__(self, value: bool | int | str) -> str | None:
        return self.names.get(self._key(value))


def _label_problem(label: Any, p: IngestParams, labels: LabelMatcher) -> tuple[str, str] | None:
    if not isinstance(label, bool | int | str):
        return (
            "wrong_type",
            f"field {p.label_column!r} is {type(label).__name__}, expected text, an integer or a boolean",
        )
    if isinstance(label, str) and undecodable(label):
        return ("undecodable", f"field {p.label_column!r}: not UTF-8: {escaped(label)[:80]}")
    if labels(label) is None:
        mapped = " or a key of ingest.label_map" if p.label_map else ""
        return (
            "unknown_label",
            f"{preview(label)} ({type(label).__name__}) is not one of ingest.labels {p.labels}{mapped}",
        )
    return None


def id_problem(record: dict, p: IngestParams) -> tuple[str, str] | None:
    """A reader's reject, else a problem with the record's id: what every kind of record checks first."""
    if "reject" in record:
        return record["reject"]
    if record["id"] == "":
        return ("missing_id", f"field {p.id_column!r} is empty")
    if undecodable(record["id"]):
        return ("undecodable", f"field {p.id_column!r}: not UTF-8: {escaped(record['id'])[:80]}")
    return None


def split_problem(record: dict, p: IngestParams) -> tuple[str, str] | None:
    """A split column's value that names none of ingest.split_names."""
    if p.split_column and record["split"] not in p.split_names.values():
        missing = record["split"] is None or record["split"] == ""
        return (
            "missing_split" if missing else "unknown_split",
            f"field {p.split_column!r} is {'empty' if missing else preview(record['split'])}; expected one of "
            f"{sorted(p.split_names.values())} (ingest.split_names)",
        )
    return None


def validate(record: dict, p: IngestParams, labels: LabelMatcher, labelled: bool = True) -> tuple[str, str] | None:
    """The first row-level problem of a record as (reason, detail), or None when it is valid; a valid
    record's label is then the class name `labels` gives it. `labelled=False`: a missing label is valid
    (a present one must still be known)."""
    if problem := id_problem(record, p):
        return problem
    label = record["label"]
    if label is None or label == "":
        if labelled:
            return ("missing_label", record.get("label_detail", f"field {p.label_column!r} is empty"))
    elif problem := _label_problem(label, p, labels):
        return problem
    if problem := split_problem(record, p):
        return problem
    if record["kind"] == "mail":
        raw = record["raw"]
        if not raw.strip():
            return ("empty_text", "file is empty")
        what = sniff_binary(raw[:4096])
        if what:
            return ("binary_content", f"file holds {what}")
        if len(raw) > p.max_text_bytes:
            return ("text_too_large", f"over ingest.max_text_bytes={p.max_text_bytes} bytes")
        return None
    text = record["text"]
    if text is None or (isinstance(text, str) and not text.strip()):
        return ("missing_text", f"field {p.text_column!r} is empty")
    if not isinstance(text, str):
        return ("wrong_type", f"field {p.text_column!r} is {type(text).__name__}, expected text")
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        around = escaped(text[max(0, exc.start - 20) : exc.start + 20])
        return ("undecodable", f"field {p.text_column!r}: not UTF-8 at character {exc.start}: ...{around}...")
    if len(encoded) > p.max_text_bytes:
        return ("text_too_large", f"{len(encoded)} bytes > ingest.max_text_bytes={p.max_text_bytes}")
    if sniff_binary(encoded[:4096]):
        return ("binary_content", f"field {p.text_column!r} holds control bytes")
    return None
