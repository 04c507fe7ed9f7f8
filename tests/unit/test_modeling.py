"""Batching and sampling of token data: pure functions, no weights."""

from collections import Counter

import numpy as np
import pytest

from reprolab.model import runtime


def token_data(labels: list[int]) -> runtime.TokenData:
    return runtime.TokenData(
        [f"r{i}" for i in range(len(labels))],
        [np.arange(3 + i % 7, dtype=np.int32) for i in range(len(labels))],
        np.asarray(labels),
    )


def test_length_grouped_batches_cover_all_rows_once():
    lengths = np.random.default_rng(0).integers(5, 100, size=1000)
    batches = runtime.length_grouped_batches(lengths, 16, np.random.default_rng(1))
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1000))
    spread = np.mean([lengths[b].max() - lengths[b].min() for b in batches])
    random_batches = runtime.length_grouped_batches(lengths, 16, np.random.default_rng(1), group=False)
    assert spread < np.mean([lengths[b].max() - lengths[b].min() for b in random_batches]) / 4


def test_collate_pads_and_masks():
    ids, mask = runtime.collate([np.array([5, 6, 7]), np.array([8])], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    ids, mask = runtime.collate([np.array([5])], pad_id=0, pad_to=4)
    assert ids.shape == (1, 4) and mask.tolist() == [[1, 0, 0, 0]]
    ids, mask = runtime.collate([np.array([5, 6]), np.array([7, 8])], pad_id=0)
    assert ids.tolist() == [[5, 6], [7, 8]] and mask is None  # nothing to mask


def test_max_train_samples_keeps_every_class_in_its_share():
    """The default corpus's training split is stored ham first (2,863 rows) then spam: the first N rows
    would train on ham only for any limit up to 2,863."""
    data = token_data([0] * 2863 + [1] * 1132)
    for limit in (2, 10, 100, 2863):
        sample = data.sample(limit, seed=42)
        counts = Counter(sample.labels.tolist())
        assert len(sample) == limit and set(counts) == {0, 1}, (limit, counts)
        assert counts[1] == pytest.approx(limit * 1132 / 3995, abs=1)
        assert sample.ids == sorted(sample.ids, key=lambda row: int(row[1:]))  # file order kept
        assert all(
            np.array_equal(s, data.sequences[int(i[1:])]) for s, i in zip(sample.sequences, sample.ids, strict=True)
        )


def test_sampling_is_seeded_and_keeps_a_rare_class():
    data = token_data([0] * 500 + [1] * 3 + [2] * 97)
    first, again, other = data.sample(20, 7), data.sample(20, 7), data.sample(20, 8)
    assert first.ids == again.ids and first.ids != other.ids
    assert Counter(first.labels.tolist()) == {0: 16, 1: 1, 2: 3}  # 16.7, 0.1 (at least one), 3.2
    assert data.sample(None, 7) is data and data.sample(600, 7) is data
    assert len(data.sample(2, 7)) == 2  # fewer rows than classes: the largest shares win
