"""Every malformed input in tests/fixtures/malformed, and what ingest must make of it.

A file-level problem stops the stage with one message naming the file (and line); a row-level
problem sends that row to the rejects with its reason, and every other row is kept.
"""

from pathlib import Path

import pytest

from reprolab.ingestion import IngestError, ingest, records_from_source
from reprolab.params import IngestParams
from tests.conftest import kept_and_rejected

FIXTURES = Path(__file__).parent.parent / "fixtures" / "malformed"

# file -> ("error", message pattern) or ("rows", rows kept, {reason: rows rejected})
EXPECTED = {
    "missing_text_column.csv": ("error", r"missing_text_column.csv: missing column\(s\) \['text'\]"),
    "missing_label_column.jsonl": ("error", r"missing_label_column.jsonl: missing column\(s\) \['label'\]"),
    "unknown_label.csv": ("rows", 1, {"unknown_label": 1}),
    "null_text.parquet": ("rows", 1, {"missing_text": 1}),
    "null_label.jsonl": ("rows", 1, {"missing_label": 1}),
    "wrong_type_label.jsonl": ("rows", 1, {"wrong_type": 1}),
    "wrong_type_text.parquet": ("rows", 0, {"wrong_type": 2}),
    "nested_text.jsonl": ("rows", 1, {"wrong_type": 1}),
    "undecodable_bytes.csv": ("rows", 1, {"undecodable": 1}),
    "binary_content.jsonl": ("rows", 1, {"binary_content": 1}),
    "text_too_large.csv": ("rows", 1, {"text_too_large": 1}),
    "duplicate_ids.csv": ("rows", 2, {"duplicate_id": 1}),
    "empty.csv": ("error", r"empty.csv: file is empty"),
    "empty.jsonl": ("error", r"empty.jsonl: file is empty"),
    "zip_named.csv": ("error", r"zip_named.csv: file holds a zip archive, not CSV"),
    "json_named.parquet": ("error", r"json_named.parquet: not a readable Parquet file"),
    "csv_named.jsonl": ("error", r"csv_named.jsonl: line 1: not JSON Lines"),
    "semicolon_delimited.csv": ("error", r"semicolon_delimited.csv: missing column.*delimiter"),
    "unclosed_quote.csv": ("error", r"unclosed_quote.csv: line \d+: CSV quoting error"),
    "extra_fields.csv": ("rows", 1, {"malformed_row": 1}),
    "header_only.csv": ("error", r"header_only.csv: file has no rows"),
    "truncated.jsonl": ("rows", 1, {"malformed_json": 1}),
    "no_rows.parquet": ("error", r"no_rows.parquet: file has no rows"),
    "whitespace_text.jsonl": ("rows", 1, {"missing_text": 1}),
    "utf16.csv": ("error", r"utf16.csv: file is UTF-16.*UTF-8"),
    "mail_dir": ("rows", 1, {"empty_text": 1, "binary_content": 1, "missing_label": 1}),
}


def params_for(name: str) -> IngestParams:
    path = FIXTURES / name
    if name == "mail_dir":
        return IngestParams(format="mail_dir", path=str(path), labels=["ham", "spam"],
                            folder_labels={"ham": "ham", "spam": "spam"})
    return IngestParams(format=path.suffix.lstrip("."), path=str(path), labels=["ham", "spam"],
                        id_column="id" if name.startswith("duplicate_ids") else None, max_text_bytes=1000)


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.iterdir()))
def test_malformed_input(name):
    expected = EXPECTED[name]  # a fixture without an expectation fails here
    p = params_for(name)
    if expected[0] == "error":
        with pytest.raises(IngestError, match=expected[1]):
            list(ingest(records_from_source(p), p))
        return
    kept, rejects = kept_and_rejected(ingest(records_from_source(p), p))
    reasons: dict[str, int] = {}
    for reject in rejects:
        reasons[reject["reason"]] = reasons.get(reject["reason"], 0) + 1
        assert reject["source"] and reject["detail"]  # names where the row came from and why
    assert (len(kept), reasons) == expected[1:]
