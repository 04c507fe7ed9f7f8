"""Token classification's clean: words normalised one by one (never a sentence cut), duplicates and
conflicts rejected, the split grouped by document and stratified by entity type."""

from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reprolab import paths
from reprolab.data.cleaning import CleanError
from reprolab.data.sentence_cleaning import assign_group_splits, clean_sentences, clean_words
from reprolab.data.sentences import SENTENCE_SCHEMA
from reprolab.data.tag_schemes import mention_types
from reprolab.engines import IN_PROCESS
from reprolab.params import CleanParams, SplitParams

SPLIT = SplitParams(val_fraction=0.2, test_fraction=0.2, seed=7)


def write_raw(path, sentences):
    rows = [
        {"id": f"s{i}", "source": f"s{i}", "group": group or f"s{i}", "tokens": words, "tags": tags, "split": None}
        for i, (words, tags, group) in enumerate(sentences)
    ]
    pq.write_table(pa.Table.from_pylist(rows, schema=SENTENCE_SCHEMA), path)


def cleaned(tmp_path, sentences, p=SPLIT):
    write_raw(tmp_path / "raw.parquet", sentences)
    dests = {split: tmp_path / f"{split}.parquet" for split in paths.SPLITS}
    report = clean_sentences(
        tmp_path / "raw.parquet", dests, tmp_path / "rejects.parquet", CleanParams(split=p), IN_PROCESS
    )
    splits = {split: pq.read_table(dest).to_pylist() for split, dest in dests.items()}
    rejects = pq.read_table(tmp_path / "rejects.parquet").to_pylist()
    assert report["rows_in"] == report["rows_kept"] + report["rows_rejected"] == len(sentences)
    assert sum(len(rows) for rows in splits.values()) == report["rows_kept"] and len(rejects) == report["rows_rejected"]
    return splits, rejects, report


def test_words_are_normalised_one_by_one_and_an_emptied_word_rejects_the_sentence():
    assert clean_words(["ｆｕｌｌ", "wi\u00addth", "ok"]) == (["full", "width", "ok"], 2)
    words, problem = clean_words(["a", "\u200b", "b"])
    assert words is None and problem[0] == "empty_token" and "word 2" in problem[1]


def corpus(documents: int = 12):
    """Documents of two sentences each; PER in every document, LOC in every third, ORG in every fourth."""
    sentences = []
    for d in range(documents):
        for s in range(2):
            words = [f"w{d}_{s}", "Anna", "in", "Rome" if d % 3 == 0 else "town", "Acme" if d % 4 == 0 else "now"]
            tags = ["O", "B-PER", "O", "B-LOC" if d % 3 == 0 else "O", "B-ORG" if d % 4 == 0 else "O"]
            sentences.append((words, tags, f"doc{d}"))
    return sentences


def test_documents_stay_whole_and_every_type_is_in_val_and_test():
    groups = {}
    sizes = Counter()
    for _, tags, group in corpus():
        groups.setdefault(group, Counter()).update(mention_types(tags))
        sizes[group] += 1
    split_of = assign_group_splits(groups, sizes, SPLIT)
    assert set(split_of) == set(groups)
    for split in ("val", "test"):
        assert {kind for group, s in split_of.items() if s == split for kind in groups[group]} == {"PER", "LOC", "ORG"}
    assert Counter(split_of.values())["train"] >= 6  # most documents still train
    assert assign_group_splits(groups, sizes, SPLIT) == split_of  # the seed and the data decide
    other = assign_group_splits(groups, sizes, SplitParams(val_fraction=0.2, test_fraction=0.2, seed=8))
    assert other != split_of


def test_clean_writes_whole_documents_to_splits_and_rejects_duplicates_and_conflicts(tmp_path):
    sentences = corpus()
    sentences.append((["Anna", "in", "Rome"], ["B-PER", "O", "B-LOC"], "extra1"))
    sentences.append((["Anna", "in", "Rome"], ["B-PER", "O", "B-LOC"], "extra2"))  # duplicate
    sentences.append((["Bo", "sings"], ["B-PER", "O"], "extra3"))
    sentences.append((["Bo", "sings"], ["O", "O"], "extra4"))  # conflict: both copies go
    sentences.append((["x", "\u200b"], ["O", "O"], "extra5"))
    splits, rejects, report = cleaned(tmp_path, sentences)
    assert sorted((r["id"], r["reason"]) for r in rejects) == [
        ("s25", "duplicate"),
        ("s26", "conflicting_labels"),
        ("s27", "conflicting_labels"),
        ("s28", "empty_token"),
    ]
    where = {row["group"]: split for split, rows in splits.items() for row in rows}
    for split, rows in splits.items():
        assert all(where[row["group"]] == split for row in rows)  # a document in one split only
    assert report["splits"]["val"]["entities_by_type"].keys() == {"LOC", "ORG", "PER"}
    assert report["splits"]["test"]["entities_by_type"].keys() == {"LOC", "ORG", "PER"}
    assert all(len(row["tokens"]) == len(row["tags"]) for rows in splits.values() for row in rows)


def test_a_type_too_rare_for_three_splits_is_one_clear_error(tmp_path):
    sentences = [([f"Anna{i}"], ["B-PER"], f"d{i}") for i in range(5)] + [(["Rome"], ["B-LOC"], "d9")]
    with pytest.raises(CleanError, match=r"entity type\(s\) \['LOC'\] occur in fewer than 3 groups"):
        cleaned(tmp_path, sentences)
