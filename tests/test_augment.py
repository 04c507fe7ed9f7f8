import random
from collections import Counter

from stages.augment import (
    augment_rows,
    random_deletion,
    random_insertion,
    random_swap,
    synonym_replacement,
    synonyms,
)
from stages.params import AugmentParams

TEXT = "Please review the attached quarterly report before the meeting with our new client tomorrow"


def params(**overrides) -> AugmentParams:
    base = dict(enabled=True, seed=3, fraction=1.0, copies_per_example=2, synonym_replacement=0.2,
                random_insertion=0.2, random_swap=0.2, random_deletion=0.2, max_words=50)
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
