import random
from collections import Counter

import pyarrow as pa
import pytest

from reprolab import storage
from reprolab.data.augmentation import (
    augment_rows,
    augmented_tables,
    random_deletion,
    random_insertion,
    random_swap,
    synonym_replacement,
    synonyms,
)
from reprolab.data.cleaning import SPLIT_SCHEMA
from reprolab.encoding import encoder
from reprolab.errors import StageError
from reprolab.params import AugmentParams

TEXT = "Please review the attached quarterly report before the meeting with our new client tomorrow"


def params(**overrides) -> AugmentParams:
    base = dict(
        enabled=True,
        seed=3,
        fraction=1.0,
        copies_per_example=2,
        synonym_replacement=0.2,
        random_insertion=0.2,
        random_swap=0.2,
        random_deletion=0.2,
        max_words=50,
    )
    return AugmentParams(**{**base, **overrides})


ROWS = [{"id": f"r{i}", "label": "ham" if i % 2 else "spam", "text": f"{TEXT} number {i}"} for i in range(20)]


def test_wordnet_synonyms_offline():
    assert "glad" in synonyms("happy")
    assert synonyms("the") == ()  # stop words are never replaced


def test_augmentation_is_deterministic_and_row_independent():
    first = augment_rows(ROWS, params())
    assert first == augment_rows(ROWS, params())
    alone = augment_rows(ROWS[5:6], params())
    assert alone == [r for r in first if r["origin_id"] == "r5"]
    assert first != augment_rows(ROWS, params(seed=4))


def test_copies_keep_label_and_origin():
    out = augment_rows(ROWS, params())
    assert len(out) == 40
    by_id = {r["id"]: r for r in ROWS}
    for row in out:
        assert row["id"].startswith(row["origin_id"] + "#aug")
        assert row["label"] == by_id[row["origin_id"]]["label"]
    assert sum(r["text"] != by_id[r["origin_id"]]["text"] for r in out) >= 35


def test_fraction_and_enabled():
    assert augment_rows(ROWS, params(enabled=False)) == []
    assert augment_rows(ROWS, params(fraction=0.0)) == []
    some = {r["origin_id"] for r in augment_rows(ROWS, params(fraction=0.5, copies_per_example=1))}
    assert 3 <= len(some) <= 17


def test_operations():
    words = TEXT.split()
    rng = random.Random(0)
    assert Counter(random_swap(words, 3, rng)) == Counter(words)
    assert len(random_insertion(words, 2, rng)) == len(words) + 2
    assert random_deletion(["only"], 0.99, rng) == ["only"]
    replaced = synonym_replacement(words, 2, rng)
    assert len(replaced) >= len(words) and replaced != words


def test_streamed_copies_equal_the_whole_split_augmented_then_encoded(tmp_path, monkeypatch, tokenizer):
    source = tmp_path / "train.parquet"
    storage.write_parquet(pa.Table.from_pylist(ROWS, schema=SPLIT_SCHEMA), source)
    monkeypatch.setattr("reprolab.data.augmentation.BATCH_ROWS", 7)  # 20 rows: batches of 7, 7 and 6
    encoded_per_call = []

    def encode(texts):
        encoded_per_call.append(len(texts))
        return encoder.encode(tokenizer, texts, 32)

    streamed = pa.concat_tables(
        augmented_tables(source, params(), encode, ["ham", "spam"], encoder.Truncation())
    ).to_pylist()
    whole = augment_rows(ROWS, params())
    assert encoded_per_call == [14, 14, 12]  # two copies of every row, encoded batch by batch
    assert [(r["id"], r["origin_id"], r["label"]) for r in streamed] == [
        (r["id"], r["origin_id"], ["ham", "spam"].index(r["label"])) for r in whole
    ]
    assert [r["input_ids"] for r in streamed] == encoder.encode(tokenizer, [r["text"] for r in whole], 32)


def test_a_missing_training_split_names_the_file(tmp_path):
    with pytest.raises(StageError, match="absent.parquet: missing input"):
        list(
            augmented_tables(
                tmp_path / "absent.parquet", params(), lambda texts: [], ["ham", "spam"], encoder.Truncation()
            )
        )


def test_copies_are_made_of_the_words_truncation_keeps():
    text = " ".join(f"w{i}" for i in range(40))
    row = [{"id": "long", "label": "ham", "text": text}]
    only_deletion = params(
        copies_per_example=1,
        synonym_replacement=0,
        random_insertion=0,
        random_swap=0,
        random_deletion=1e-9,
        max_words=8,
    )  # deletes nothing: the copy is its words
    kept = {
        kind: augment_rows(row, only_deletion, encoder.Truncation(kind, 0.25))[0]["text"]
        for kind in ("head", "tail", "head_tail")
    }
    assert kept == {
        "head": "w0 w1 w2 w3 w4 w5 w6 w7",
        "tail": "w32 w33 w34 w35 w36 w37 w38 w39",
        "head_tail": "w0 w1 w34 w35 w36 w37 w38 w39",
    }
