"""Every malformed input in tests/fixtures/malformed, and what ingest must make of it.

A file-level problem stops the stage with one message naming the file (and line); a row-level
problem sends that row to the rejects with its reason, and every other row is kept.
"""

from pathlib import Path

import pytest

from reprolab.data.ingest_shared import IngestError, SourceCount
from reprolab.data.ingestion import ingest
from reprolab.data.readers import records_from_source
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
    "mail_dir_mixed": ("rows", 1, {"empty_text": 1, "binary_content": 1, "missing_label": 1}),
    # Tables: headers, fields, encodings, nesting, damaged files
    "duplicate_header.csv": ("error", r"duplicate_header.csv: line 1: column name\(s\) \['label'\] repeated"),
    "duplicate_columns.parquet": ("error", r"duplicate_columns.parquet: .*\['label'\] repeated"),
    "undecodable_label.csv": ("rows", 1, {"undecodable": 1}),
    "latin1.csv": ("rows", 1, {"undecodable": 1}),
    "long_field.csv": ("rows", 2, {}),  # 150,000 characters: over csv's own limit, under max_text_bytes
    "field_over_limit.csv": ("rows", 1, {"text_too_large": 1}),
    "empty_id.csv": ("rows", 1, {"missing_id": 2}),
    "null_id.jsonl": ("rows", 1, {"missing_id": 1}),
    "bom_crlf.csv": ("rows", 2, {}),
    "quoted_newlines.csv": ("rows", 2, {}),
    "no_final_newline.csv": ("rows", 2, {}),
    "nul_in_text.csv": ("error", r"nul_in_text.csv: file holds binary data, not CSV text"),
    "label_case.csv": ("rows", 1, {"unknown_label": 1}),
    "deep_nesting.jsonl": ("rows", 1, {"malformed_json": 1}),
    "deep_nesting_first_line.jsonl": ("error", r"deep_nesting_first_line.jsonl: line 1: not JSON Lines \(nested"),
    "lone_surrogate.jsonl": ("rows", 1, {"undecodable": 1}),
    "lone_surrogate_label.jsonl": ("rows", 1, {"undecodable": 1}),
    "undecodable_line.jsonl": ("rows", 1, {"undecodable": 1}),
    "array_line.jsonl": ("rows", 1, {"malformed_json": 1}),
    "number_text.jsonl": ("rows", 1, {"wrong_type": 1}),
    "bool_label.jsonl": ("rows", 1, {"unknown_label": 1}),  # true is not "ham" or "spam"
    "nan_text.jsonl": ("rows", 1, {"wrong_type": 1}),
    "blank_lines.jsonl": ("rows", 2, {}),  # blank lines are not rows
    "repeated_key.jsonl": ("rows", 1, {"malformed_json": 1}),
    "very_long_line.jsonl": ("rows", 2, {"text_too_large": 1}),  # the line after it is still read
    "truncated.parquet": ("error", r"truncated.parquet: not a readable Parquet file"),
    "corrupt_page.parquet": ("error", r"corrupt_page.parquet: row 1001 on: unreadable Parquet data"),
    "int_label.parquet": ("rows", 0, {"unknown_label": 2}),  # 0 and 1 are no class here
    "struct_text.parquet": ("rows", 0, {"wrong_type": 2}),
    "undecodable_string.parquet": ("rows", 1, {"undecodable": 1}),  # Parquet does not check UTF-8
    # Folders of tables
    "csvdir_folder_named_csv": ("error", r"csvdir_folder_named_csv/b.csv: not a regular file"),
    "csvdir_link": ("error", r"csvdir_link/b.csv: not a regular file"),
    "csvdir_stray_file": ("rows", 2, {}),  # README.md counted in skipped_by_rule
    # Mail folders: links (committed as links), hidden, nested and loose files, sizes
    "mail_link_out": ("rows", 2, {"not_a_regular_file": 1}),
    "mail_linked_folder": ("rows", 2, {"not_a_regular_file": 1}),
    "mail_broken_link": ("rows", 2, {"not_a_regular_file": 1}),
    "mail_loop_link": ("rows", 2, {"not_a_regular_file": 1}),
    "mail_hidden": ("rows", 2, {"hidden_file": 2}),
    "mail_nested": ("rows", 2, {"nested_file": 1}),
    "mail_top_level_file": ("rows", 2, {"not_in_folder": 1}),
    "mail_too_large": ("rows", 2, {"text_too_large": 1}),
    # Tar archives of mail folders
    "mail_links.tar": ("rows", 2, {"not_a_regular_file": 2}),
    "mail_escaping_paths.tar": ("rows", 2, {"outside_source": 3}),
    "mail_devices.tar": ("rows", 2, {"not_a_regular_file": 2}),
    "mail_non_utf8_name.tar": ("rows", 2, {"undecodable_name": 1}),
    "mail_hidden_nested.tar": ("rows", 2, {"hidden_file": 1, "nested_file": 1, "not_in_folder": 1}),
    "mail_empty_member.tar": ("rows", 2, {"empty_text": 1}),
    "mail_large_member.tar.gz": ("rows", 2, {"text_too_large": 1}),
    "mail_unsorted.tar.gz": ("rows", 3, {}),
    "mail_over_archive_limit.tar": (
        "error",
        r"mail_over_archive_limit.tar: members add up to more than "
        r"ingest.max_archive_bytes=200 bytes",
    ),
    "mail_truncated.tar.gz": ("error", r"mail_truncated.tar.gz: the archive is damaged or truncated"),
    "mail_not_a_tar.tar": ("error", r"mail_not_a_tar.tar: neither a folder nor a readable tar archive"),
}


# Params beyond each case's defaults (below).
OVERRIDES = {
    "long_field.csv": {"max_text_bytes": 1_000_000},
    "mail_over_archive_limit.tar": {"max_archive_bytes": 200},
}


def params_for(name: str) -> IngestParams:
    """mail_* and *.tar*: a mail folder (or tar of one) with ham/ and spam/; csvdir_*: a folder of CSV
    files; else a table whose format is its extension. Texts over 1000 bytes are too large."""
    path = FIXTURES / name
    base = dict(path=str(path), labels=["ham", "spam"], max_text_bytes=1000)
    if name.startswith("mail_"):
        base |= dict(format="mail_dir", folder_labels={"ham": "ham", "spam": "spam"})
    else:
        base |= dict(
            format="csv" if name.startswith("csvdir_") else path.suffix.lstrip("."),
            id_column="id" if name.startswith(("duplicate_ids", "empty_id", "null_id")) else None,
        )
    return IngestParams(**base | OVERRIDES.get(name, {}))


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.iterdir()))
def test_malformed_input(name):
    expected = EXPECTED[name]  # a fixture without an expectation fails here
    p = params_for(name)
    if expected[0] == "error":
        with pytest.raises(IngestError, match=expected[1]):
            list(ingest(records_from_source(p), p))
        return
    count = SourceCount()
    kept, rejects = kept_and_rejected(ingest(records_from_source(p, count), p))
    reasons: dict[str, int] = {}
    for reject in rejects:
        reasons[reject["reason"]] = reasons.get(reject["reason"], 0) + 1
        assert reject["source"] and reject["detail"]  # names where the row came from and why
        reject["source"].encode("utf-8")  # undecodable names are shown escaped, so they can be written
    assert (len(kept), reasons) == expected[1:]
    assert count.rows == len(kept) + len(rejects)  # every entry the reader met is a row
