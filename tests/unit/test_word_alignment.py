"""Tags on sub-words by `word_ids()`, and windows in which every word is scored exactly once."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reprolab.encoding.labels import IGNORED
from reprolab.encoding.word_alignment import encode_sentences, plan_windows
from reprolab.params import TokenizeParams

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
B_TO_I = [0, 2, 2, 4, 4]  # label_subtokens=all: a word's later sub-tokens take I- of its type


def windows(tokenizer, words, tags, max_length=64, stride=4, continuation=None):
    return [w for _, _, w in encode_sentences(tokenizer, [words], [tags], max_length, stride, continuation)]


def test_the_tag_goes_on_the_first_sub_token_and_the_rest_are_ignored(tokenizer):
    words = ["Huggingface", "hires", "Anna"]
    (window,) = windows(tokenizer, words, [3, 0, 1])
    pieces = tokenizer.convert_ids_to_tokens(window.input_ids)
    assert pieces[0] == "[CLS]" and pieces[-1] == "[SEP]" and len(pieces) > len(words) + 2  # words split
    first = {index: position for position, index in enumerate(window.word_index) if index >= 0}
    assert sorted(first) == [0, 1, 2]
    assert [window.labels[first[w]] for w in range(3)] == [3, 0, 1]
    assert sum(label != IGNORED for label in window.labels) == 3  # only first sub-tokens carry a tag
    (every,) = windows(tokenizer, words, [3, 0, 1], continuation=B_TO_I)
    continuation = [
        label for label, index in zip(every.labels, every.word_index, strict=True) if index < 0 and label != IGNORED
    ]
    assert continuation and set(continuation) <= {4, 0, 2}  # B-LOC's later pieces are I-LOC


def test_a_long_sentence_is_windowed_and_each_word_scored_once_with_left_context(tokenizer):
    words = [f"word{k}" for k in range(40)]
    tags = [k % 5 for k in range(40)]
    cut = windows(tokenizer, words, tags, max_length=16, stride=4)
    assert len(cut) > 3 and all(len(w.input_ids) <= 16 for w in cut)
    scored = [index for w in cut for index in w.word_index if index >= 0]
    assert scored == list(range(40))
    assert all(w.labels[w.word_index.index(i)] == tags[i] for w in cut for i in w.word_index if i >= 0)
    later = cut[1]
    context = [label for label, index in zip(later.labels[1:-1], later.word_index[1:-1], strict=True) if index < 0]
    assert context and set(context) == {IGNORED}  # the words before, unscored


def test_a_word_the_tokenizer_drops_is_still_scored(tokenizer):
    words = ["Anna", "\u0301", "smiles"]  # a lone combining accent: BERT's tokenizer strips it to nothing
    (window,) = windows(tokenizer, words, [1, 0, 0])
    assert sorted(i for i in window.word_index if i >= 0) == [0, 1, 2]


def test_window_plan_partitions_the_words():
    assert plan_windows([1, 1, 1], budget=8, stride=2) == [(0, 0, 3)]
    assert plan_windows([3, 3, 3, 3], budget=6, stride=3) == [(0, 0, 2), (1, 2, 3), (2, 3, 4)]
    assert plan_windows([6, 6], budget=6, stride=3) == [(0, 0, 1), (1, 1, 2)]  # no room for context


WORDS = st.sampled_from(["a", "Anna", "Rome", "antidisestablishmentarianism", "x" * 30, "42", "naïve", "@user", "#tag"])


@settings(max_examples=200, deadline=None)
@given(
    words=st.lists(WORDS, min_size=1, max_size=30),
    max_length=st.integers(3, 24),
    stride=st.integers(0, 8),
    data=st.data(),
)
def test_every_word_is_scored_exactly_once_whatever_the_lengths(tokenizer, words, max_length, stride, data):
    tags = data.draw(st.lists(st.integers(0, 4), min_size=len(words), max_size=len(words)))
    cut = windows(tokenizer, words, tags, max_length=max_length, stride=stride)
    assert all(len(w.input_ids) <= max_length for w in cut)
    scored = [index for w in cut for index in w.word_index if index >= 0]
    assert scored == list(range(len(words)))
    for w in cut:
        assert len(w.input_ids) == len(w.labels) == len(w.word_index)
        for label, index in zip(w.labels, w.word_index, strict=True):
            assert label == (tags[index] if index >= 0 else IGNORED)


def test_no_room_for_a_word_is_an_error(tokenizer):
    with pytest.raises(ValueError, match="max_length=2 leaves no room"):
        windows(tokenizer, ["a"], [0], max_length=2)


def test_a_split_file_becomes_windows_whose_words_map_back(tokenizer, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from reprolab.data.sentence_cleaning import CLEAN_SENTENCE_SCHEMA
    from reprolab.data.tag_schemes import continuation_ids, tag_names
    from reprolab.encoding.word_alignment import tokenize_sentences

    names = tag_names(["PER", "LOC"])
    assert names == ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"] and continuation_ids(names) == [0, 2, 2, 4, 4]
    rows = [
        {
            "id": "a",
            "group": "a",
            "tokens": ["Anna", "visits", "Rome"],
            "tags": ["B-PER", "O", "B-LOC"],
            "replacements": 0,
        },
        {"id": "b", "group": "b", "tokens": [f"w{k}" for k in range(30)], "tags": ["O"] * 30, "replacements": 0},
    ]
    pq.write_table(pa.Table.from_pylist(rows, schema=CLEAN_SENTENCE_SCHEMA), tmp_path / "test.parquet")
    p = TokenizeParams(max_length=16, stride=4, label_subtokens="first", batch_size=8)
    counts = tokenize_sentences(tmp_path / "test.parquet", tmp_path / "w.parquet", tokenizer, names, p)
    windows = pq.read_table(tmp_path / "w.parquet").to_pylist()
    assert counts == {"sentences": 2, "words": 33, "windows": len(windows)} and len(windows) > 2
    assert [(w["id"], w["window"]) for w in windows][:2] == [("a", 0), ("b", 0)]
    for row in rows:  # each word's tag comes back once, from its sentence's windows
        scored = [
            (index, label)
            for w in windows
            if w["id"] == row["id"]
            for index, label in zip(w["word_index"], w["labels"], strict=True)
            if index >= 0
        ]
        assert [names[label] for _, label in sorted(scored)] == row["tags"]


@settings(max_examples=60, deadline=None)
@given(
    sentences=st.lists(
        st.lists(
            st.sampled_from(["Anna", "visits", "Rome", "huggingface", "e\u0301", "\u0301", "@user", "2026"]),
            min_size=1,
            max_size=14,
        ),
        min_size=1,
        max_size=6,
    ),
    label_subtokens=st.sampled_from(["first", "all"]),
    data=st.data(),
)
def test_sentences_aligned_together_equal_sentences_aligned_one_by_one(tokenizer, sentences, label_subtokens, data):
    """windows_table's batched path (sentences that fit one window, in numpy) gives the windows the
    one-by-one path gives, whatever mix of short, long and dropped-word sentences a batch holds."""
    from reprolab.encoding.word_alignment import windows_table

    tags = [data.draw(st.lists(st.sampled_from(range(len(TAGS))), min_size=len(s), max_size=len(s))) for s in sentences]
    p = TokenizeParams(max_length=12, stride=3, label_subtokens=label_subtokens, batch_size=8)
    continuation = B_TO_I if label_subtokens == "all" else None
    ids = [(f"s{i}", f"s{i}") for i in range(len(sentences))]
    table = windows_table(tokenizer, ids, sentences, tags, p, TAGS).to_pydict()
    expected = list(encode_sentences(tokenizer, sentences, tags, p.max_length, p.stride, continuation))
    assert table["id"] == [f"s{sentence}" for sentence, _, _ in expected]
    assert table["window"] == [number for _, number, _ in expected]
    assert table["input_ids"] == [w.input_ids for _, _, w in expected]
    assert table["labels"] == [w.labels for _, _, w in expected]
    assert table["word_index"] == [w.word_index for _, _, w in expected]
