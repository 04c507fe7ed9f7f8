"""clean on real MIME messages of the corpus, dedup and split integrity."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasketch import MinHash, MinHashLSH

from reprolab import paths, storage
from reprolab.data.cleaning import (
    Fingerprinter,
    assign_splits,
    clean_file,
    clean_text,
    html_to_text,
    mail_to_text,
    normalise,
    shingles,
)
from reprolab.data.duplicates import find_duplicates
from reprolab.data.row_rules import RAW_SCHEMA
from reprolab.engines import LocalEngine
from reprolab.errors import StageError
from reprolab.params import CleanParams, SplitParams
from tests.conftest import mail


def text_of(group, number):
    return normalise(mail_to_text(mail(group, number)))


def test_base64_body_is_decoded():
    text = text_of("spam-2", "00009")
    assert text.startswith("[SA] URGENT HELP")
    assert "URGENT AND CONFIDENTIAL" in text  # only present base64-encoded in the raw bytes


def test_quoted_printable_plain_part_preferred_to_html():
    raw = mail("easy-ham-1", "00062")
    assert b"=3D" in raw
    text = text_of("easy-ham-1", "00062")
    assert text.startswith("Tiny DNS Swap I'm using Simple DNS from JHSoft.")
    assert "=3D" not in text and "<META" not in text


def test_html_only_body_becomes_text():
    raw = mail("spam-2", "00002")
    assert b"<" in raw and b"text/plain" not in raw.lower()
    text = text_of("spam-2", "00002")
    assert "Stun Guns" in text and "<" not in text and "font" not in text.lower().split()


def test_gb2312_charset_decoded():
    text = text_of("spam-1", "00040")
    assert "enter Chinese market" in text
    assert "\ufffd" not in text[:200]


def test_html_to_text_drops_scripts_and_styles():
    html = "<html><head><style>p{color:red}</style></head><body><p>Hello</p><script>x()</script>world</body></html>"
    assert normalise(html_to_text(html)) == "Hello world"


def test_normalise_folds_unicode_and_whitespace():
    assert normalise("Ｆｒｅｅ\u200b   money\n\n\tnow\x07") == "Free money now"


def test_unknown_charset_falls_back():
    raw = b"Subject: hi\nContent-Type: text/plain; charset=x-no-such-charset\n\nbody caf\xe9 text here"
    assert normalise(mail_to_text(raw)) == "hi body caf\u00e9 text here"


def clean_params(**overrides) -> CleanParams:
    base = dict(
        min_chars=10,
        max_chars=5000,
        near_duplicate_threshold=0.8,
        shingle_words=3,
        minhash_permutations=128,
        split=SplitParams(val_fraction=0.2, test_fraction=0.2, seed=1),
    )
    return CleanParams(**{**base, **overrides})


def raw_row(row_id, text, label="ham", kind="text", status="absent"):
    return {
        "id": row_id,
        "source": row_id,
        "group": "g",
        "label": label,
        "kind": kind,
        "raw": text if isinstance(text, bytes) else text.encode(),
        "checksum_status": status,
    }


def run_clean(directory: Path, rows: list[dict], p: CleanParams, workers: int = 1):
    """The stage's own streaming function on `rows`: (kept rows by split, rejects, report)."""
    directory.mkdir(parents=True, exist_ok=True)
    storage.write_parquet(pa.Table.from_pylist(rows, schema=RAW_SCHEMA), directory / "raw.parquet")
    outputs = {name: directory / f"{name}.parquet" for name in ("train", "val", "test")}
    with LocalEngine.open(workers) as engine:
        summary = clean_file(directory / "raw.parquet", outputs, directory / "rejects.parquet", p, engine)
    splits = {name: pq.read_table(path).to_pylist() for name, path in outputs.items()}
    return splits, pq.read_table(directory / "rejects.parquet").to_pylist(), summary


def test_rows_conserved_with_reasons_and_first_by_id_kept(tmp_path):
    long_text = " ".join(f"word{i}" for i in range(60))
    rows = [
        raw_row("a", long_text),
        raw_row("b", long_text.upper()),  # exact duplicate after casefolding
        raw_row("c", long_text.replace("word59", "other")),  # near duplicate
        raw_row("d", "tiny"),
        raw_row("e", "   \n\t "),
        raw_row("f", "a different and long enough message", status="mismatch"),
        raw_row("g", "Subject: fine\n\nreal mail body here", kind="mail"),
        raw_row("h", "one more message, unlike the others"),  # three rows: one for each split
    ]
    # Given in reverse: twins are still judged in id order, and the outputs keep the input's order.
    splits, rejects, summary = run_clean(tmp_path, rows[::-1], clean_params())
    kept = [r["id"] for split in splits.values() for r in split]
    assert sorted(kept) == ["a", "g", "h"]
    assert {r["id"]: r["reason"] for r in rejects} == {
        "b": "exact_duplicate",
        "c": "near_duplicate",
        "d": "too_short",
        "e": "empty_text",
        "f": "checksum_mismatch",
    }
    assert [r["id"] for r in rejects] == ["f", "e", "d", "c", "b"]  # h, g, ... a
    details = {r["id"]: r["detail"] for r in rejects}
    assert details["b"] == "same text as a" and details["c"].endswith("with a")
    assert all(r["raw"] is not None and r["stage"] == "clean" for r in rejects)  # the original bytes are kept
    assert summary["rows_in"] == 8 and summary["rows_kept"] + summary["rows_rejected"] == 8
    assert summary["rejected_by_reason"] == {
        "checksum_mismatch": 1,
        "empty_text": 1,
        "exact_duplicate": 1,
        "near_duplicate": 1,
        "too_short": 1,
    }


def test_rows_lost_on_the_way_to_the_outputs_stop_the_stage_with_outputs_untouched(tmp_path, monkeypatch):
    rows = [
        raw_row("a", "a message that is long enough"),
        raw_row("b", "tiny"),
        raw_row("c", "another message, long enough"),
        raw_row("d", "and a third one for the test split"),
    ]
    (tmp_path / "rejects.parquet").write_bytes(b"previous")
    write = storage.ParquetSink.write

    def drop_rejects(sink, table):  # a rejects writer that loses every row handed to it
        write(sink, table.slice(0, 0) if sink.schema.equals(storage.REJECT_SCHEMA) else table)

    monkeypatch.setattr(storage.ParquetSink, "write", drop_rejects)
    with pytest.raises(AssertionError, match="clean lost rows: 4 rows in, 4 read; wrote .*'rejects': 0"):
        run_clean(tmp_path, rows, clean_params())
    assert (tmp_path / "rejects.parquet").read_bytes() == b"previous"
    assert not (tmp_path / "train.parquet").exists()


def corpus_with_twins() -> list[dict]:
    """Real mails (ham and spam), plus exact copies and near copies (one word dropped) of some."""
    from tests.conftest import CORPUS

    rows = []
    for group, label in (("easy-ham-1", "ham"), ("spam-1", "spam"), ("spam-2", "spam")):
        for path in sorted((CORPUS / group).glob("*.txt"))[:50]:
            rows.append(raw_row(f"{group}/{path.name[:5]}", path.read_bytes(), label, kind="mail", status="ok"))
    for row in rows[::9]:
        text = normalise(mail_to_text(row["raw"]))
        words = text.split(" ")
        rows.append(raw_row(f"copy/{row['id']}", text.upper(), row["label"]))
        rows.append(
            raw_row(f"near/{row['id']}", " ".join(words[:-1] if len(words) > 40 else words + ["x"]), row["label"])
        )
    return rows


def lsh_reference(rows: list[dict], p: CleanParams) -> dict[str, tuple[str, str]]:
    """Near and exact twins as a plain sequential MinHashLSH (the library's own index) finds them."""
    fingerprint = Fingerprinter(p)
    lsh = MinHashLSH(threshold=p.near_duplicate_threshold, num_perm=p.minhash_permutations)
    seen, signatures, verdicts = {}, {}, {}
    for row in sorted(rows, key=lambda r: r["id"]):
        text, problem = clean_text(row, p)
        if problem:
            continue
        key = text.casefold()
        if key in seen:
            verdicts[row["id"]] = ("exact_duplicate", seen[key])
            continue
        seen[key] = row["id"]
        signature = MinHash(**fingerprint.minhash_args)
        signature.update_batch(list(shingles(text, p.shingle_words)))
        candidates = lsh.query(signature)
        if candidates:
            twin = min(candidates, key=lambda other: (-signature.jaccard(signatures[other]), other))
            if signature.jaccard(signatures[twin]) >= p.near_duplicate_threshold:
                verdicts[row["id"]] = ("near_duplicate", twin)
                continue
        lsh.insert(row["id"], signature)
        signatures[row["id"]] = signature
    return verdicts


TWINS_PARAMS = dict(min_chars=20, max_chars=20000, near_duplicate_threshold=0.9, shingle_words=5)


def test_duplicates_match_the_sequential_lsh(tmp_path):
    rows = corpus_with_twins()
    p = clean_params(**TWINS_PARAMS)
    _, rejects, _ = run_clean(tmp_path, rows, p, workers=1)
    found = {r["id"]: (r["reason"], r["detail"].rsplit(" ", 1)[-1]) for r in rejects if "duplicate" in r["reason"]}
    expected = lsh_reference(rows, p)
    assert found == expected
    assert {reason for reason, _ in found.values()} == {"exact_duplicate", "near_duplicate"}
    assert len(found) >= 20  # the copies made above, and the corpus's own twins


def test_find_duplicates_keeps_distinct_texts():
    p = clean_params()
    fingerprint = Fingerprinter(p)
    texts = ["the quick brown fox jumps over the lazy dog today", "an entirely unrelated sentence about mail servers"]
    batch = pa.RecordBatch.from_pylist([raw_row(str(i), t) for i, t in enumerate(texts)], schema=RAW_SCHEMA)
    result = fingerprint(batch)
    verdict, twin, _ = find_duplicates(
        np.arange(2),
        np.ones(2, bool),
        result.exact,
        result.bands,
        lambda row: result.signatures[row],
        p.near_duplicate_threshold,
        np.zeros(2, np.int32),
    )
    assert verdict.tolist() == [0, 0] and twin.tolist() == [-1, -1]


def test_split_is_stratified_deterministic_and_leak_free():
    ids = [f"r{i:03d}" for i in range(200)]
    labels = ["spam" if i % 4 == 0 else "ham" for i in range(200)]
    p = SplitParams(val_fraction=0.15, test_fraction=0.15, seed=7)

    def split_by_id(ids, labels, p):
        codes = assign_splits(pa.array(ids), pa.array(labels), p)
        return {row_id: paths.SPLITS[code] for row_id, code in zip(ids, codes, strict=True)}

    splits = split_by_id(ids, labels, p)
    assert set(splits.values()) == {"train", "val", "test"}
    for name, fraction in (("test", 0.15), ("val", 0.15)):
        spam = sum(splits[row_id] == name and label == "spam" for row_id, label in zip(ids, labels, strict=True))
        assert spam == round(50 * fraction)
    assert split_by_id(ids[::-1], labels[::-1], p) == splits  # a row's split depends on its id, not its position
    assert split_by_id(ids, labels, SplitParams(val_fraction=0.15, test_fraction=0.15, seed=8)) != splits


@pytest.mark.parametrize("group", ["easy-ham-1", "spam-2"])
def test_real_messages_clean_to_nonempty_text(group, tmp_path):
    from tests.conftest import CORPUS

    rows = []
    for path in sorted((CORPUS / group).glob("*.txt"))[:40]:
        rows.append(raw_row(f"{group}/{path.name[:5]}", path.read_bytes(), kind="mail", status="ok"))
    splits, rejects, _ = run_clean(tmp_path, rows, clean_params(min_chars=20, max_chars=20000))
    kept = [r for split in splits.values() for r in split]
    assert len(kept) + len(rejects) == 40
    assert len(kept) >= 30
    assert all(len(r["text"]) >= 20 and "\n" not in r["text"] for r in kept)


def test_identical_texts_with_different_labels_are_all_rejected(tmp_path):
    # 100 copies of one text, labelled both ways: no copy may be kept with either label.
    text = "claim your free prize now by replying to this message today"
    rows = [raw_row(f"x{i:03d}", text, label="spam" if i % 2 else "ham") for i in range(100)]
    rows += [
        raw_row(f"{label}{i}", f"an ordinary {label} message number {i} " + "with some words " * i, label=label)
        for label in ("ham", "spam")
        for i in range(3)
    ]
    splits, rejects, summary = run_clean(tmp_path, rows, clean_params())
    assert summary["rejected_by_reason"] == {"conflicting_labels": 100}
    assert all(r["text"] != text for split in splits.values() for r in split)
    details = {r["id"]: r["detail"] for r in rejects}
    assert details["x000"] == "same text as x001, labelled otherwise"  # ham names the first spam
    assert details["x001"] == details["x003"] == "same text as x000, labelled otherwise"


def test_a_class_too_small_for_every_split_stops_clean_naming_it(tmp_path):
    rows = [raw_row(f"h{i}", f"a ham message with its own words, number {i} " + "more " * i) for i in range(6)]
    rows += [raw_row("s0", "the only spam message left after cleaning", label="spam"), raw_row("s1", "tiny", "spam")]
    with pytest.raises(
        StageError,
        match=r"class 'spam' has 1 row\(s\) after cleaning: too few for one in each of "
        r"train, val, test.*; the commonest clean rejects: too_short x1",
    ):
        run_clean(tmp_path, rows, clean_params())
    assert not (tmp_path / "train.parquet").exists()


def test_a_class_that_loses_every_row_stops_clean_with_the_reasons(tmp_path):
    rows = [raw_row(f"h{i}", f"a ham message with its own words, number {i} " + "more " * i) for i in range(6)]
    rows += [raw_row("s0", "tiny", "spam"), raw_row("s1", "short", "spam")]
    with pytest.raises(StageError, match=r"class\(es\) \['spam'\] lost every row of 8 rows in .*too_short x2"):
        run_clean(tmp_path, rows, clean_params())
    assert not (tmp_path / "train.parquet").exists()


def split_row(row_id, text, split, label="ham"):
    return raw_row(row_id, text, label) | {"split": split}


def test_the_sources_own_splits_are_kept_and_a_twin_across_them_is_rejected_from_the_later(tmp_path):
    rows = [
        split_row(f"{split}{i}-{label}", f"a {label} message for {split}, number {i} " + "pad " * i, split, label)
        for split in ("train", "val", "test")
        for label in ("ham", "spam")
        for i in range(2)
    ]
    shared = "an identical text that the source put in two splits"
    rows += [
        split_row("a-test", shared, "test"),
        split_row("z-train", shared, "train"),  # train's copy stays
        split_row("b-train", "twice in train, the same words here", "train"),
        split_row("c-train", "twice in train, the same words here", "train"),
    ]
    splits, rejects, summary = run_clean(tmp_path, rows, clean_params())
    assert summary["splits_from"] == "source"
    assert {r["id"]: r["reason"] for r in rejects} == {"a-test": "cross_split_duplicate", "c-train": "exact_duplicate"}
    assert {r["id"]: r["detail"] for r in rejects}["a-test"] == "same text as z-train in train"
    by_split = {name: sorted(r["id"] for r in split) for name, split in splits.items()}
    assert by_split["test"] == ["test0-ham", "test0-spam", "test1-ham", "test1-spam"]  # never re-split
    assert "z-train" in by_split["train"] and "b-train" in by_split["train"]


def test_a_source_split_without_a_class_stops_clean(tmp_path):
    rows = [
        split_row(f"{split}{i}", f"a ham message for {split}, number {i}", split)
        for split in ("train", "val", "test")
        for i in range(2)
    ]
    rows += [
        split_row("s1", "the only spam message, in train", "train", "spam"),
        split_row("s2", "another spam message, in val", "val", "spam"),
    ]
    with pytest.raises(StageError, match=r"the source's test split keeps no row of class\(es\) \['spam'\]"):
        run_clean(tmp_path, rows, clean_params())


def test_replacement_characters_from_a_mail_charset_are_counted_per_row_and_in_the_report(tmp_path):
    broken = b"Subject: prices\nContent-Type: text/plain; charset=utf-8\n\nonly \xff\xfe left in stock, order now"
    rows = [raw_row(f"h{i}", f"an ordinary ham message, number {i} " + "x " * i) for i in range(3)]
    rows += [raw_row("s0", broken, "spam", kind="mail")]
    rows += [raw_row(f"s{i}", f"an ordinary spam message, number {i} " + "y " * i, "spam") for i in range(1, 3)]
    splits, _, summary = run_clean(tmp_path, rows, clean_params())
    by_id = {r["id"]: r for split in splits.values() for r in split}
    assert by_id["s0"]["replacements"] == 2 and by_id["s0"]["text"].count("\ufffd") == 2
    assert all(r["replacements"] == 0 for row_id, r in by_id.items() if row_id != "s0")
    assert summary["replacement_characters"] == {"rows": 1, "characters": 2}
