"""What each data stage costs per partition, measured on one core, and what a 100M- and a 1B-row corpus
would need on a cluster (docs/scaling.md#on-paper-100m-and-1b-rows).

Each stage's library call (the one its stage makes) runs in this process on bench/scale_bench.py's
synthetic project of `--rows` rows, on one core (one tokenizer thread, one torch thread). It runs on an
engine that times every batch it maps. Time inside the map is the part an engine spreads across a
cluster's cores: the per-partition cost, printed as rows per second per core. The rest is the stage's
own process, the driver (reading, the components of the duplicate decisions, writing), which runs on
one core whatever the cluster. Ingest runs wholly on the driver today. Clean's duplicate decisions
are timed as mapped: on a cluster they run on its partitions (`Engine.map_grouped`).

Clean also prints the bytes its duplicate decisions' two shuffles move, from the columns' widths:
every row's keys (its LSH band hashes and its exact key, each with the row), then each candidate row
(sharing a key with another) with its fingerprints.

The projection multiplies the measured per-row costs by the rows, assuming time linear in rows
(bench/scale_bench.py measured time per row flat or falling from 100k to 1M rows in every stage).
Hours on C cores = driver seconds + map seconds / C. A model, not a measurement: it leaves out the
network, skew between partitions and Ray's own costs (bench/engine_bench.py measured those on one
machine).
Run: `python bench/partition_costs.py [--rows 100000] [--cores 64 512]`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import common  # first: it calls configure_process() before numpy or torch loads
import torch
from common import params, save
from scale_bench import scratch_project

from reprolab import paths
from reprolab.data import augmentation, cleaning, ingestion, row_rules
from reprolab.encoding import encoder, truncated

SIZES = {"100M": 100_000_000, "1B": 1_000_000_000}
ROW_REF_BYTES = 8  # an int64 rank: which row a key belongs to


class TimedEngine:
    """The in-process engine, timing the mapped function apart from the driver's work around it."""

    workers = 1

    def __init__(self) -> None:
        self.map_seconds = 0.0
        self.grouped_rows: dict[str, int] = {}  # rows of each grouped map, by its key

    def map(self, fn: Callable, items: Iterable) -> Iterator:
        for item in items:  # reading the next item is the driver's time, outside the clock
            yield self._timed(fn, item)

    def map_grouped(self, fn: Callable, table, key: str):
        self.grouped_rows[key] = table.num_rows
        return self._timed(fn, table)  # the duplicate decisions: a cluster's partitions split this work

    def _timed(self, fn: Callable, item):
        start = time.perf_counter()
        result = fn(item)
        self.map_seconds += time.perf_counter() - start
        return result


def timed(work: Callable[[TimedEngine], object]) -> dict:
    engine = TimedEngine()
    start = time.perf_counter()
    work(engine)
    total = time.perf_counter() - start
    return {
        "seconds": round(total, 2),
        "map_seconds": round(engine.map_seconds, 2),
        "grouped_rows": engine.grouped_rows,
    }


def measure_stage(stage: str, root: Path, rows: int) -> dict:
    # The checkout's model, wherever the stage runs from.
    model = params.model.model_copy(update={"name_or_path": str(common.ROOT / params.model.name_or_path)})
    in_project = params.model_copy(update={"model": model})
    project = scratch_project(root, stage, rows)
    os.chdir(project)  # the stages' relative paths (paths.*) resolve in the scratch project
    if stage == "ingest":
        p = params.ingest.model_copy(
            update={"format": "jsonl", "path": "source.jsonl", "id_column": "id", "max_rows_per_label": None}
        )
        rules = row_rules.ROW_RULES[params.task](p)
        return timed(lambda engine: ingestion.ingest_source(p, paths.RAW, paths.rejects("ingest"), rules))
    if stage == "clean":
        splits = {name: paths.clean_split(name) for name in paths.SPLITS}
        return timed(
            lambda engine: cleaning.clean_file(paths.RAW, splits, paths.rejects("clean"), params.clean, engine)
        )
    if stage == "tokenize":
        tokenizer = encoder.load_tokenizer(model.name_or_path)
        inputs = {split: paths.clean_split(split) for split in paths.SPLITS}
        outputs = {split: paths.token_split(split) for split in paths.SPLITS}
        return timed(
            lambda engine: truncated.tokenize_splits(
                tokenizer, params.tokenize, params.ingest.class_names, inputs, outputs, engine
            )
        )
    return timed(
        lambda engine: augmentation.augment_file(
            paths.clean_split("train"), paths.AUGMENTED, in_project, params.ingest.class_names, engine
        )
    )


def dedup_key_bytes() -> dict[str, int]:
    """Bytes per row that clean's duplicate decisions shuffle (reprolab.data.duplicates)."""
    bands = len(cleaning.Fingerprinter(params.clean).band_ranges)
    return {
        "lsh_bands": bands,
        # Grouped by key: each band's uint64 hash and the exact key's first 8 bytes, each with the row.
        "keys_per_row": (bands + 1) * (8 + ROW_REF_BYTES),
        # Grouped by component, for candidate rows only: component, row, rank, label code, SHA-1, bands
        # and signature.
        "per_candidate_row": 4 + ROW_REF_BYTES + 8 + 4 + 20 + bands * 8 + params.clean.minhash_permutations * 4,
    }


def projection(stages: dict[str, dict], rows: int, cores: list[int]) -> dict[str, dict]:
    out = {}
    for name, size in SIZES.items():
        scale = size / rows
        driver = sum(s["seconds"] - s["map_seconds"] for s in stages.values()) * scale
        mapped = sum(s["map_seconds"] for s in stages.values()) * scale
        out[name] = {
            "core_hours": round((driver + mapped) / 3600, 1),
            "driver_hours": round(driver / 3600, 1),
            **{f"hours_on_{c}_cores": round((driver + mapped / c) / 3600, 2) for c in cores},
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--cores", type=int, nargs="+", default=[64, 512])
    args = parser.parse_args()
    # One thread, so the rates are per core: torch's, and the tokenizers' pool (read at its first use).
    torch.set_num_threads(1)
    os.environ["RAYON_NUM_THREADS"] = "1"
    stages = {}
    for stage in ("ingest", "clean", "tokenize", "augment"):
        with tempfile.TemporaryDirectory(prefix="reprolab-partitions-") as tmp:
            stages[stage] = measured = measure_stage(stage, Path(tmp), args.rows)
        os.chdir(common.ROOT)
        driver = measured["seconds"] - measured["map_seconds"]
        measured["map_rows_per_second_per_core"] = (
            round(args.rows / measured["map_seconds"]) if measured["map_seconds"] else None
        )
        measured["driver_rows_per_second"] = round(args.rows / driver)
        print(stage, measured, flush=True)
    keys = dedup_key_bytes()
    # The share of rows that share a key with another (the rows grouped by component), in this corpus.
    keys["candidate_fraction"] = round(stages["clean"]["grouped_rows"].get("component", 0) / args.rows, 4)
    per_row = keys["keys_per_row"] + keys["candidate_fraction"] * keys["per_candidate_row"]
    shuffle = {name: round(size * per_row / 1e9, 1) for name, size in SIZES.items()}
    result = {
        "rows": args.rows,
        "stages": stages,
        "dedup_keys": keys,
        "dedup_shuffle_gb": shuffle,
        "projection": projection(stages, args.rows, args.cores),
    }
    print(result)
    save("partition_costs", result)


if __name__ == "__main__":
    main()
