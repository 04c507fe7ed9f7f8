"""CoNLL and list-column sources through ingest as tagged sentences: every layout and scheme on
hand-made files, rows conserved, each malformed sentence a reject with its reason."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reprolab.data.ingest_shared import IngestError
from reprolab.data.ingestion import ingest, ingest_source
from reprolab.data.sentences import SentenceRules
from reprolab.params import IngestParams

TYPES = ["PER", "LOC", "ORG"]


def ner_params(path, fmt="conll", **overrides) -> IngestParams:
    return IngestParams(**{"format": fmt, "path": str(path), "labels": TYPES, **overrides})


def ingested(p, tmp_path):
    tally = ingest_source(p, tmp_path / "raw.parquet", tmp_path / "rejects.parquet", SentenceRules(p))
    report = tally.report()
    assert report["rows_in"] == report["rows_kept"] + report["rows_rejected"]
    rows = pq.read_table(tmp_path / "raw.parquet").to_pylist()
    rejects = pq.read_table(tmp_path / "rejects.parquet").to_pylist()
    assert (len(rows), len(rejects)) == (report["rows_kept"], report["rows_rejected"])
    return rows, rejects, report


def test_two_columns_blank_lines_of_spaces_crlf_and_a_bom(tmp_path):
    """WNUT-16's layout: a tab between word and tag, sentences ended by a line holding one tab."""
    path = tmp_path / "ner.txt"
    path.write_bytes(
        "\ufeffEmpire\tB-LOC\r\nState\tI-LOC\r\nis\tO\r\n\t\r\nAnna\tB-PER\r\nsmiles\tO\r\n\r\n\r\nAcme\tB-ORG\n".encode()
    )
    rows, rejects, report = ingested(ner_params(path), tmp_path)
    assert [(r["tokens"], r["tags"]) for r in rows] == [
        (["Empire", "State", "is"], ["B-LOC", "I-LOC", "O"]),
        (["Anna", "smiles"], ["B-PER", "O"]),
        (["Acme"], ["B-ORG"]),
    ]
    assert [r["id"] for r in rows] == ["ner.txt:1", "ner.txt:5", "ner.txt:9"]
    assert [r["group"] for r in rows] == [r["id"] for r in rows]  # no documents: each sentence its own
    assert report["entities_by_type"] == {"LOC": 1, "ORG": 1, "PER": 1} and not rejects


def test_a_twelve_column_file_reads_the_first_and_last_columns_and_documents_group_sentences(tmp_path):
    """CoNLL-2003's POS and chunk columns, or a tagger's features, sit between word and tag."""
    features = " ".join(f"f{k}" for k in range(10))
    path = tmp_path / "eng.conll"
    path.write_text(
        "-DOCSTART- -X- -X- O\n\n"
        f"EU  {features}  B-ORG\nrejects {features}\tO\n\n"
        f"Peter {features} B-PER\n\n"
        "-DOCSTART- -X- -X- O\n\n"
        f"Paris {features} B-LOC\n"
    )
    rows, rejects, _ = ingested(ner_params(path), tmp_path)
    assert [(r["tokens"], r["tags"]) for r in rows] == [
        (["EU", "rejects"], ["B-ORG", "O"]),
        (["Peter"], ["B-PER"]),
        (["Paris"], ["B-LOC"]),
    ]
    assert [r["group"] for r in rows] == ["eng.conll#doc1", "eng.conll#doc1", "eng.conll#doc2"]
    assert not rejects


@pytest.mark.parametrize(
    ("scheme", "tags"),
    [
        ("iob1", ["I-PER", "I-PER", "B-PER", "O", "I-LOC"]),
        ("bioes", ["B-PER", "E-PER", "S-PER", "O", "S-LOC"]),
        ("iob2", ["B-PER", "I-PER", "B-PER", "O", "B-LOC"]),
    ],
)
def test_every_scheme_is_stored_as_iob2(tmp_path, scheme, tags):
    words = ["Anna", "Lee", "Bo", "in", "Rome"]
    path = tmp_path / "s.conll"
    path.write_text("".join(f"{w} {t}\n" for w, t in zip(words, tags, strict=True)))
    rows, _, report = ingested(ner_params(path, tag_scheme=scheme, labels=["PER", "LOC"]), tmp_path)
    assert rows[0]["tags"] == ["B-PER", "I-PER", "B-PER", "O", "B-LOC"]
    assert report["entities_by_type"] == {"LOC": 1, "PER": 2}


def test_malformed_sentences_are_rejects_with_their_reasons_and_rows_add_up(tmp_path):
    path = tmp_path / "bad.conll"
    path.write_text(
        "Anna B-PER\nsmiles O\n\n"  # kept
        "Anna B-PER\nlonely\nRome B-LOC\n\n"  # a line of one column
        "in O\nRome I-LOC\n\n"  # a stray I- under IOB2
        "Acme B-COMPANY\n\n"  # a type not in ingest.labels
        "Oslo B-LOC\n\n"  # kept (every type of ingest.labels must be kept somewhere)
        "Acme B-ORG\n\n"
        + "x O\n" * 40  # 160 bytes of words: over max_text_bytes
        + "\nword X-PER\n"  # a tag outside the scheme
    )
    rows, rejects, report = ingested(ner_params(path, max_text_bytes=100), tmp_path)
    assert [r["tokens"] for r in rows] == [["Anna", "smiles"], ["Oslo"], ["Acme"]]
    assert [(r["id"], r["reason"]) for r in rejects] == [
        ("bad.conll:4", "malformed_line"),
        ("bad.conll:8", "invalid_tag_sequence"),
        ("bad.conll:11", "unknown_label"),
        ("bad.conll:17", "text_too_large"),
        ("bad.conll:58", "malformed_tag"),
    ]
    details = {r["reason"]: r["detail"] for r in rejects}
    assert details["malformed_line"].startswith("line 5: one column ('lonely')")
    assert "set ingest.tag_scheme: iob1" in details["invalid_tag_sequence"]
    assert "entity type 'COMPANY' is not one of ingest.labels" in details["unknown_label"]
    assert rejects[0]["raw"] == b"Anna B-PER\nlonely\nRome B-LOC\n"  # the sentence as the file held it
    assert report["rows_in"] == 8 and rejects[3]["raw"] is None  # past the limit, its lines were not held


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "file is empty"),
        (b"\n\n-DOCSTART- O\n\n", "no sentences"),
        ("Anna B-PER\n".encode("utf-16"), "UTF-16"),
    ],
)
def test_file_level_problems_are_one_message(tmp_path, content, message):
    path = tmp_path / "f.conll"
    path.write_bytes(content)
    with pytest.raises(IngestError, match=message):
        ingested(ner_params(path, labels=["PER", "LOC"]), tmp_path)


def test_a_line_past_the_limit_is_read_past_in_pieces_and_a_compressed_file_reads_as_plain(tmp_path):
    import gzip

    text = "Anna B-PER\nin O\nRome B-LOC\n\n" + "x" * 5000 + " O\n\nOslo B-LOC\n"
    path = tmp_path / "f.conll.gz"
    path.write_bytes(gzip.compress(text.encode(), mtime=0))
    rows, rejects, _ = ingested(ner_params(path, labels=["PER", "LOC"], max_text_bytes=1000), tmp_path)
    assert [r["tokens"] for r in rows] == [["Anna", "in", "Rome"], ["Oslo"]]
    assert [(r["id"], r["reason"]) for r in rejects] == [("f.conll.gz:5", "text_too_large")]


def test_list_columns_of_jsonl_and_parquet_are_sentences_and_their_problems_rejects(tmp_path):
    rows = [
        {"id": "a", "tokens": ["Anna", "in", "Rome"], "tags": ["B-PER", "O", "B-LOC"]},
        {"id": "b", "tokens": ["Anna", "in"], "tags": ["B-PER"]},
        {"id": "c", "tokens": "Anna in Rome", "tags": ["B-PER", "O", "B-LOC"]},
        {"id": "d", "tokens": ["Anna", 7], "tags": ["B-PER", "O"]},
        {"id": "e", "tokens": ["Anna", " "], "tags": ["B-PER", "O"]},
        {"id": "f", "tokens": [], "tags": []},
        {"id": "g", "tokens": ["Acme", "Inc"], "tags": ["B-ORG", "I-ORG"]},
    ]
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    columns = {"id_column": "id", "text_column": "tokens", "label_column": "tags"}
    kept, rejects, report = ingested(ner_params(tmp_path / "s.jsonl", "jsonl", **columns), tmp_path)
    assert [(r["id"], r["tokens"], r["tags"]) for r in kept] == [
        ("a", ["Anna", "in", "Rome"], ["B-PER", "O", "B-LOC"]),
        ("g", ["Acme", "Inc"], ["B-ORG", "I-ORG"]),
    ]
    assert [(r["id"], r["reason"]) for r in rejects] == [
        ("b", "length_mismatch"),
        ("c", "wrong_type"),
        ("d", "wrong_type"),
        ("e", "empty_token"),
        ("f", "missing_text"),
    ]
    assert json.loads(rejects[0]["raw"]) == {"tokens": ["Anna", "in"], "tags": ["B-PER"]}
    assert report["entities_by_type"] == {"LOC": 1, "ORG": 1, "PER": 1}
    table = pa.table(
        {"id": ["a", "g"], "tokens": [rows[0]["tokens"], rows[6]["tokens"]], "tags": [rows[0]["tags"], rows[6]["tags"]]}
    )
    pq.write_table(table, tmp_path / "s.parquet")
    parquet, _, _ = ingested(ner_params(tmp_path / "s.parquet", "parquet", **columns), tmp_path)
    fields = ("id", "group", "tokens", "tags")
    assert [[r[f] for f in fields] for r in parquet] == [[r[f] for f in fields] for r in kept]
    assert [r["group"] for r in kept] == ["a", "g"]  # no documents in a table: each sentence its own


def test_a_type_with_no_entity_kept_stops_ingest_naming_it(tmp_path):
    path = tmp_path / "f.conll"
    path.write_text("Anna B-PER\n\nRome B-LOC\n")
    with pytest.raises(IngestError, match=r"no entity of type\(s\) \['ORG'\] of ingest.labels in the kept sentences"):
        ingested(ner_params(path), tmp_path)


def predict_rows(p, records):
    """Records through ingest's rules unlabelled, as `reprolab predict` reads them."""
    rules = SentenceRules(p, labelled=False)
    return [(rules.problem(r), rules.row(r) if rules.problem(r) is None else None) for r in records]


def record(text, label=None, **extra) -> dict:
    return {"id": "r", "source": "s", "text": text, "label": label, "split": None, **extra}


def test_unlabelled_a_raw_text_is_split_into_words_keeping_offsets_and_words_alone_are_joined(tmp_path):
    text = "Anna  met\tAcme's boss."
    [(problem, row)] = predict_rows(ner_params("x.jsonl", "jsonl"), [record(text)])
    assert problem is None and row["tokens"] == ["Anna", "met", "Acme's", "boss."] and row["tags"] is None
    assert [text[a:b] for a, b in row["offsets"]] == row["tokens"] and row["text"] == text
    p = ner_params("x.jsonl", "jsonl", pre_tokenizer="words_and_punctuation")
    [(_, row)] = predict_rows(p, [record(text)])
    assert row["tokens"] == ["Anna", "met", "Acme", "'", "s", "boss", "."]
    assert [text[a:b] for a, b in row["offsets"]] == row["tokens"]
    [(_, row)] = predict_rows(p, [record(["Anna", "met", "Acme"], ["B-PER", "O", "B-ORG"])])
    assert row["text"] == "Anna met Acme" and row["offsets"] == [(0, 4), (5, 8), (9, 13)]
    assert row["tags"] == ["B-PER", "O", "B-ORG"]


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        (record("   "), "missing_text"),
        (record([]), "missing_text"),
        (record(12), "wrong_type"),
        (record(["Anna", 3]), "wrong_type"),
        (record(["Anna", " "]), "empty_token"),
        (record("x " * 80), "text_too_large"),
        (record(["Anna", "met"], ["B-PER"]), "length_mismatch"),
        (record(["Anna"], ["B-CITY"]), "unknown_label"),
        (record(["Anna", "met"], words_text="Anna meets"), "words_text_mismatch"),
        (record(["Anna"], words_text=5), "wrong_type"),
        (record(["Anna"], words_text="Anna met Acme"), "words_text_mismatch"),  # words the model would not tag
    ],
)
def test_unlabelled_bad_records_are_refused_with_a_reason(given, reason):
    [(problem, _)] = predict_rows(ner_params("x.jsonl", "jsonl", max_text_bytes=100), [given])
    assert problem is not None and problem[0] == reason, problem


def test_words_given_with_their_text_are_found_in_it():
    [(problem, row)] = predict_rows(
        ner_params("x.jsonl", "jsonl"), [record(["Anna", "met", "Acme"], words_text=" Anna\nmet  Acme \n")]
    )
    assert problem is None and row["text"] == " Anna\nmet  Acme \n" and row["offsets"] == [(1, 5), (6, 9), (11, 15)]


def test_unlabelled_conll_takes_words_alone_but_not_a_sentence_half_tagged(tmp_path):
    from reprolab.data.ingest_shared import SourceCount
    from reprolab.data.readers import records_from_source

    path = tmp_path / "new.conll"
    path.write_text("Anna\nmet\n\nAnna B-PER\nmet O\n\nAnna B-PER\nmet\n")
    p = ner_params(path)
    count = SourceCount()
    records = list(records_from_source(p, count, labelled=False))
    results = predict_rows(p, records)
    assert [r["label"] for r in records[:2]] == [None, ["B-PER", "O"]] and count.rows == 3
    assert [problem for problem, _ in results[:2]] == [None, None]
    assert results[2][0][0] == "malformed_line" and "tag every word of a sentence, or none" in results[2][0][1]
    labelled = ingest(records_from_source(p, SourceCount()), p, rules=SentenceRules(p))  # as ingest reads it
    assert [row.get("reason") for _, row in labelled] == ["malformed_line", None, "malformed_line"]
