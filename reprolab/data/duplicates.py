"""Duplicate decisions: the rule (`find_duplicates`, over one set of rows) and the same rule spread over
an engine (`decide_duplicates`), which gives every row the verdict the rule gives it among all rows.

The rule takes rows in (split, id) order and keeps the first of twins, so a row's verdict depends on
the rows before it, but only on those it shares a key with (its exact text, or one of its LSH bands),
and on theirs in turn. The rows therefore fall into independent components of "shares a key", and the
rule run on each component alone decides every row as it does on all of them. `decide_duplicates`:

1. groups every row's keys on the engine (a shuffle by key on a cluster: `Engine.map_grouped`); each
   key that several rows hold links them;
2. finds the components of those links on the driver (scipy): a graph of only the rows that share a
   key with another, the shape of datatrove's MinHash dedup, whose clustering step reads every
   duplicate pair in one task;
3. groups those rows with their fingerprints by component on the engine, and decides each partition
   of whole components with `find_duplicates`.

A row that shares no key is kept unread. Two components merged by a collision of 64-bit keys are
decided as one set, which changes no verdict: what must never happen is a component cut in two, and
the engines keep each key's rows, and then each component's, in one partition.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from functools import partial

import numpy as np
import pyarrow as pa
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from reprolab.engines import Engine

EXACT_DUPLICATE, NEAR_DUPLICATE, CONFLICTING_LABELS = 1, 2, 3


def find_duplicates(
    rank: np.ndarray,
    eligible: np.ndarray,
    exact: np.ndarray,
    bands: np.ndarray,
    signature_of: Callable[[int], np.ndarray],
    threshold: float,
    labels: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: verdict (0 kept, EXACT_DUPLICATE, NEAR_DUPLICATE, CONFLICTING_LABELS), twin row (-1)
    and similarity.

    Rows are taken in `rank` order (id order), so the first of twins is kept. Rows whose casefolded
    texts are identical but whose `labels` (codes) differ are all rejected, each naming a twin with
    another label. An exact duplicate repeats the casefolded text of an earlier row. A near
    duplicate has an estimated Jaccard at or above `threshold` with an earlier kept row sharing an
    LSH band; its twin is the most similar (then the first). Only rows sharing a band with another
    row reach the sequential part, and `signature_of` reads just their signatures, so memory holds
    a few numbers per row.
    """
    n = len(rank)
    verdict, twin, similarity = np.zeros(n, np.int8), np.full(n, -1, np.int64), np.zeros(n)
    rows = np.flatnonzero(eligible)
    by_text = rows[np.lexsort((rank[rows], exact[rows]))]
    first = np.r_[True, exact[by_text][1:] != exact[by_text][:-1]] if len(rows) else np.zeros(0, bool)
    start_of = np.maximum.accumulate(np.where(first, np.arange(len(by_text)), 0))
    original = by_text[start_of]
    verdict[by_text[~first]], twin[by_text[~first]] = EXACT_DUPLICATE, original[~first]
    conflicted = labels[by_text] != labels[original]  # a row whose label differs from its group's first
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(by_text)]
    for start in np.unique(start_of[conflicted]):
        group = by_text[start : ends[np.searchsorted(starts, start)]]
        other = group[labels[group] != labels[group[0]]][0]  # the first row with another label
        verdict[group] = CONFLICTING_LABELS
        twin[group] = np.where(labels[group] == labels[group[0]], other, group[0])
    first &= verdict[by_text] != CONFLICTING_LABELS

    # Each LSH bucket holding several distinct texts: its members in rank order.
    distinct = by_text[first]
    buckets: list[np.ndarray] = []
    for band in range(bands.shape[1]):
        ordered = distinct[np.lexsort((rank[distinct], bands[distinct, band]))]
        values = bands[ordered, band]
        edges = np.flatnonzero(np.r_[True, values[1:] != values[:-1], True])
        buckets += [ordered[a:b] for a, b in zip(edges[:-1], edges[1:], strict=True) if b - a > 1]
    members = np.concatenate(buckets) if buckets else np.zeros(0, np.int64)
    bucket_of = np.repeat(np.arange(len(buckets)), [len(b) for b in buckets])
    by_rank = np.lexsort((bucket_of, rank[members]))
    kept_in: list[list[int]] = [[] for _ in buckets]
    for row, grouped in itertools.groupby(
        zip(members[by_rank].tolist(), bucket_of[by_rank].tolist(), strict=True), key=lambda pair: pair[0]
    ):
        own = [bucket for _, bucket in grouped]
        candidates = {other for bucket in own for other in kept_in[bucket]}
        if candidates:
            signature = signature_of(row)
            scores = {c: np.count_nonzero(signature == signature_of(c)) / len(signature) for c in candidates}
            best = min(candidates, key=lambda c: (-scores[c], rank[c]))
            if scores[best] >= threshold:
                verdict[row], twin[row], similarity[row] = NEAR_DUPLICATE, best, scores[best]
                continue
        for bucket in own:
            kept_in[bucket].append(row)
    return verdict, twin, similarity


def decide_duplicates(
    engine: Engine,
    rank: np.ndarray,
    eligible: np.ndarray,
    exact: np.ndarray,
    bands: np.ndarray,
    signatures: np.ndarray,
    threshold: float,
    labels: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`find_duplicates`'s verdict, twin and similarity for every row, its work on the `engine`:
    `signatures` (rows, permutations), a memory map read for the rows that share a key only."""
    n = len(rank)
    verdict, twin, similarity = np.zeros(n, np.int8), np.full(n, -1, np.int64), np.zeros(n)
    rows = np.flatnonzero(eligible)
    # The exact key as the first 8 bytes of the text's SHA-1: twins share all their bands anyway, and
    # a collision only merges components.
    exact_keys = exact[rows].view(np.uint8).reshape(len(rows), exact.dtype.itemsize)[:, :8].copy().view(np.uint64)
    keys = pa.table(
        {
            "key": np.concatenate([exact_keys.ravel(), bands[rows].T.ravel()]),
            "row": np.tile(rows, 1 + bands.shape[1]),
        }
    )
    links = engine.map_grouped(_links, keys, "key")
    del keys
    if not links.num_rows:
        return verdict, twin, similarity
    linked, other = links["row"].to_numpy(), links["first"].to_numpy()
    candidates, ends = np.unique(np.concatenate([linked, other]), return_inverse=True)
    graph = coo_matrix(
        (np.ones(len(linked), np.int8), (ends[: len(linked)], ends[len(linked) :])), shape=(len(candidates),) * 2
    )
    _, component = connected_components(graph, directed=False)
    table = pa.table(
        {
            "component": component,
            "row": candidates,
            "rank": rank[candidates],
            "label": labels[candidates],
            "exact": _fixed_width(exact[candidates]),
            "bands": _fixed_width(bands[candidates]),
            "signature": _fixed_width(np.asarray(signatures[candidates])),
        }
    )
    decided = engine.map_grouped(partial(_decide, threshold), table, "component")
    at = decided["row"].to_numpy()
    verdict[at] = decided["verdict"].to_numpy()
    twin[at] = decided["twin"].to_numpy()
    similarity[at] = decided["similarity"].to_numpy()
    return verdict, twin, similarity


def _links(partition: pa.Table) -> pa.Table:
    """For every key several rows hold: each of them but the first (smallest row) linked to the first."""
    key, row = partition["key"].to_numpy(), partition["row"].to_numpy()
    order = np.lexsort((row, key))
    key, row = key[order], row[order]
    starts = np.r_[True, key[1:] != key[:-1]]
    first = row[np.maximum.accumulate(np.where(starts, np.arange(len(key)), 0))]
    linked = row != first  # the first itself, or a row holding the key twice (two bands alike), links nothing
    return pa.table({"row": row[linked], "first": first[linked]})


def _decide(threshold: float, partition: pa.Table) -> pa.Table:
    """`find_duplicates` over a partition of whole components: its rejected rows, their twins and similarities."""
    row = partition["row"].to_numpy()
    signatures = _rows_of(partition["signature"], np.uint32)
    verdict, twin, similarity = find_duplicates(
        partition["rank"].to_numpy(),
        np.ones(len(row), bool),
        _rows_of(partition["exact"], "S20")[:, 0],
        _rows_of(partition["bands"], np.uint64),
        signatures.__getitem__,
        threshold,
        partition["label"].to_numpy(),
    )
    rejected = np.flatnonzero(verdict)
    return pa.table(
        {
            "row": row[rejected],
            "verdict": verdict[rejected],
            "twin": row[twin[rejected]],
            "similarity": similarity[rejected],
        }
    )


def _fixed_width(values: np.ndarray) -> pa.FixedSizeBinaryArray:
    """Each row of `values` (a row of numbers, or fixed-width bytes) as one fixed-width binary value."""
    values = np.ascontiguousarray(values)
    width = values.itemsize * (values.shape[1] if values.ndim > 1 else 1)
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(values), [None, pa.py_buffer(values)])


def _rows_of(column: pa.ChunkedArray, dtype) -> np.ndarray:
    """`_fixed_width`'s inverse: (rows, values per row) of `dtype`."""
    array = column.combine_chunks()
    width = array.type.byte_width
    data = np.frombuffer(array.buffers()[1], np.uint8, count=len(array) * width, offset=array.offset * width)
    return data.view(dtype).reshape(len(array), -1)
