"""Label-preserving augmentation of tagged sentences: types and extents kept, IOB2 valid on every copy,
seeded."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reprolab.data.sentence_augmentation import (
    augment_sentence,
    mention_replacement,
    mentions_by_type,
    segments,
    shuffle_within_segments,
    synonym_replacement,
)
from reprolab.data.tag_schemes import to_iob2

WORDS = ["Anna", "Lee", "bought", "a", "big", "car", "in", "New", "York", "City"]
TAGS = ["B-PER", "I-PER", "O", "O", "O", "O", "O", "B-LOC", "I-LOC", "I-LOC"]
TRAIN = [(WORDS, TAGS), (["Bo", "visited", "Oslo"], ["B-PER", "O", "B-LOC"]), (["Carla", "Diaz"], ["B-PER", "I-PER"])]
MENTIONS = mentions_by_type(TRAIN)


def test_segments_and_the_training_mentions():
    assert segments(["B-PER", "I-PER", "O", "O", "B-LOC", "B-LOC", "I-LOC"]) == [
        (0, 2, "PER"),
        (2, 4, None),
        (4, 5, "LOC"),
        (5, 7, "LOC"),
    ]
    assert MENTIONS == {
        "LOC": [("New", "York", "City"), ("Oslo",)],
        "PER": [("Anna", "Lee"), ("Bo",), ("Carla", "Diaz")],
    }


def test_mention_replacement_keeps_types_and_writes_b_then_i():
    words, tags = mention_replacement(WORDS, TAGS, 1.0, random.Random(3), MENTIONS)
    kinds = [kind for _, _, kind in segments(tags) if kind]
    assert kinds == ["PER", "LOC"] and to_iob2(tags, "iob2") == tags
    assert words[tags.index("O") : tags.index("O") + 5] == ["bought", "a", "big", "car", "in"]


def test_synonyms_replace_only_o_words_and_shuffles_keep_the_tags():
    words, tags = synonym_replacement(WORDS, TAGS, 1.0, random.Random(1))
    assert words[:2] == ["Anna", "Lee"] and words[-3:] == ["New", "York", "City"] and words != WORDS
    assert tags[:2] == ["B-PER", "I-PER"] and set(tags[2:-3]) == {"O"}
    shuffled, same_tags = shuffle_within_segments(WORDS, TAGS, 1.0, random.Random(5))
    assert same_tags == TAGS and sorted(shuffled[7:]) == sorted(WORDS[7:]) and sorted(shuffled) == sorted(WORDS)


def test_copies_are_seeded_and_unknown_operations_refused():
    rates = {"synonym_replacement": 0.5, "mention_replacement": 0.5, "shuffle_within_segments": 0.5}
    first = augment_sentence("s1", WORDS, TAGS, 42, 4, rates, MENTIONS)
    assert first == augment_sentence("s1", WORDS, TAGS, 42, 4, rates, MENTIONS) and first
    assert first != augment_sentence("s2", WORDS, TAGS, 42, 4, rates, MENTIONS)
    assert all(copy != (WORDS, TAGS) for copy in first)  # a copy equal to its sentence is dropped
    with pytest.raises(ValueError, match=r"unknown sentence augmentation\(s\) \['random_swap'\]"):
        augment_sentence("s1", WORDS, TAGS, 42, 1, {"random_swap": 0.1}, MENTIONS)


TAG = st.sampled_from(["O", "B-PER", "I-PER", "B-LOC", "I-LOC"])


@settings(max_examples=200, deadline=None)
@given(tags=st.lists(TAG, min_size=1, max_size=12), seed=st.integers(0, 99))
def test_every_copy_is_valid_iob2_with_the_same_entity_types_in_order(tags, seed):
    tags = to_iob2(tags, "iob1")  # any sequence, read as IOB1: a valid IOB2 one
    words = [f"word{k}" if tag == "O" else f"Name{k}" for k, tag in enumerate(tags)]
    rates = {"synonym_replacement": 0.7, "mention_replacement": 0.7, "shuffle_within_segments": 0.7}
    for new_words, new_tags in augment_sentence("s", words, tags, seed, 3, rates, MENTIONS):
        assert len(new_words) == len(new_tags) and to_iob2(new_tags, "iob2") == new_tags
        assert [k for _, _, k in segments(new_tags) if k] == [k for _, _, k in segments(tags) if k]
