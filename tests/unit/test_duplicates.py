"""The duplicate rule spread over an engine (`decide_duplicates`) gives every row the verdict, twin and
similarity the rule (`find_duplicates`) gives it over all rows at once: on this machine's engine, and
however a cluster's shuffle deals whole groups into partitions and orders their rows."""

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from reprolab.data.duplicates import (
    CONFLICTING_LABELS,
    EXACT_DUPLICATE,
    NEAR_DUPLICATE,
    decide_duplicates,
    find_duplicates,
)
from reprolab.engines import IN_PROCESS

PERMUTATIONS, BANDS, THRESHOLD = 16, 4, 0.75


class ShufflingEngine:
    """`map_grouped` as a cluster's shuffle may do it: each key's rows dealt together into one of `parts`
    partitions at random, each partition's rows in a random order, the results in a random order."""

    def __init__(self, parts: int, seed: int) -> None:
        self.parts, self.rng = parts, np.random.default_rng(seed)

    def map_grouped(self, fn, table: pa.Table, key: str) -> pa.Table:
        if not table.num_rows:  # as on the Ray engine: fn gives the empty result's columns
            return fn(table)
        _, group = np.unique(table[key].to_numpy(), return_inverse=True)
        part_of = self.rng.integers(0, self.parts, group.max() + 1)[group]
        results = [
            fn(table.take(self.rng.permutation(np.flatnonzero(part_of == part))))
            for part in self.rng.permutation(self.parts)
            if (part_of == part).any()
        ]
        return pa.concat_tables(results)


def colliding_rows(n: int, seed: int) -> dict:
    """Rows whose keys collide often: a few texts, band values and signatures to draw from, so exact
    twins, conflicting labels, shared buckets and near twins either side of the threshold all occur."""
    rng = np.random.default_rng(seed)
    bases = rng.integers(0, 2**32, (4, PERMUTATIONS), dtype=np.uint32)
    signatures = bases[rng.integers(0, len(bases), n)]
    changed = rng.random((n, PERMUTATIONS)) < rng.choice([0.0, 0.1, 0.3])
    signatures[changed] = rng.integers(0, 2**32, changed.sum(), dtype=np.uint32)
    texts = rng.integers(0, max(1, n // 3), n)
    # Half the time every text shares its SHA-1's first 8 bytes (the exact key): a collision that merges
    # all the components into one, which must change no verdict.
    prefix = b"collides" if seed % 2 else b""
    return {
        "rank": rng.permutation(n),
        "eligible": rng.random(n) < 0.9,
        "exact": np.array([(prefix + f"text {t}".encode()).ljust(20, b"-") for t in texts], "S20"),
        "bands": rng.integers(0, 2 * BANDS, (n, BANDS)).astype(np.uint64) * np.uint64(2**61 - 1),
        "signatures": signatures,
        "labels": rng.integers(0, 2, n).astype(np.int32),  # as clean passes them: Arrow dictionary codes
    }


def rule_over_all_rows(f: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return find_duplicates(
        f["rank"], f["eligible"], f["exact"], f["bands"], f["signatures"].__getitem__, THRESHOLD, f["labels"]
    )


def spread(engine, f: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return decide_duplicates(
        engine, f["rank"], f["eligible"], f["exact"], f["bands"], f["signatures"], THRESHOLD, f["labels"]
    )


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 60), st.integers(0, 2**32 - 1), st.integers(1, 6), st.integers(0, 1000))
def test_the_spread_rule_decides_every_row_as_the_rule_over_all_rows(n, seed, parts, shuffle_seed):
    rows = colliding_rows(n, seed)
    expected = rule_over_all_rows(rows)
    for engine in (IN_PROCESS, ShufflingEngine(parts, shuffle_seed)):
        for got, want in zip(spread(engine, rows), expected, strict=True):
            np.testing.assert_array_equal(got, want)


def test_the_colliding_rows_meet_every_verdict():
    """The property above is not vacuous: such rows meet every verdict of the rule."""
    seen = set()
    for seed in range(20):
        verdict, _, _ = rule_over_all_rows(colliding_rows(60, seed))
        seen |= set(verdict.tolist())
    assert seen == {0, EXACT_DUPLICATE, NEAR_DUPLICATE, CONFLICTING_LABELS}
