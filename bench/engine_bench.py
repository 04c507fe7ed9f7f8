"""The data stages on Ray beside the local engine, on this machine: time, peak memory and output bytes.

For each stage (clean, tokenize, augment) and size, bench/scale_bench.py's synthetic project is built
once and the real stage (`python -m stages.<name>`) runs there on `engine.name: local` and on
`engine.name: ray` (a Ray cluster of this machine's cores that the stage starts and stops, as
`dvc repro` would run it), in alternating order, round after round, on the same input files. Each run
reports wall seconds and the peak summed PSS of the stage's process tree (Ray's head, raylet and
workers included). Printed per stage: the median ratio ray/local of seconds and of memory, and
whether the two engines wrote the same bytes (they must). On 2 cores Ray can only add its overhead:
start-up, shipping batches through its object store, a driver that still reads and writes every
row; what it buys is room past one machine (docs/scaling.md).

What differs between the two sides: nothing but `engine.name`. Same rows, params, batch sizes and
worker count (engine.workers: 0, one per core; tokenize and augment run in the stage's own process on
the local engine, as on it the tokenizer's threads already use every core).
Run: `python bench/engine_bench.py [--stage clean tokenize augment] [--rows 1000000] [--rounds 1]`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import common  # noqa: F401  first: it calls configure_process() before numpy or torch loads
import yaml
from common import save
from scale_bench import run_measured, scratch_project

from reprolab import paths, storage

OUTPUTS = {
    "clean": [*map(paths.clean_split, paths.SPLITS), paths.rejects("clean")],
    "tokenize": [*map(paths.token_split, paths.SPLITS)],
    "augment": [paths.AUGMENTED],
}
ENGINES = ("local", "ray")


def on_engine(project: Path, name: str) -> None:
    config = yaml.safe_load((project / "params.yaml").read_text())
    config["engine"]["name"] = name
    (project / "params.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def compare(stage: str, rows: int, rounds: int) -> dict[str, object]:
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in ENGINES}
    written: dict[str, set[tuple[str, ...]]] = {name: set() for name in ENGINES}
    with tempfile.TemporaryDirectory(prefix="reprolab-engines-") as tmp:
        project = scratch_project(Path(tmp), stage, rows)
        for round_number in range(rounds):
            order = ENGINES if round_number % 2 == 0 else ENGINES[::-1]
            for name in order:
                on_engine(project, name)
                runs[name].append(run_measured([sys.executable, "-m", f"stages.{stage}"], project))
                written[name].add(tuple(storage.file_md5(project / output) for output in OUTPUTS[stage]))
                print(stage, rows, name, runs[name][-1], flush=True)

    def median(name: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[name])

    return {
        "stage": stage,
        "rows": rows,
        "runs": runs,
        "same_bytes": len(written["local"] | written["ray"]) == 1,
        "ray_vs_local_seconds": round(median("ray", "seconds") / median("local", "seconds"), 2),
        "ray_vs_local_peak_memory": round(median("ray", "peak_tree_pss_mb") / median("local", "peak_tree_pss_mb"), 2),
        "local_rows_per_second": round(rows / median("local", "seconds")),
        "ray_rows_per_second": round(rows / median("ray", "seconds")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", nargs="+", choices=list(OUTPUTS), default=list(OUTPUTS))
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds; medians are reported")
    args = parser.parse_args()
    results = []
    for stage in args.stage:
        results.append(result := compare(stage, args.rows, args.rounds))
        print(
            f"{result['stage']} at {result['rows']} rows: ray/local seconds {result['ray_vs_local_seconds']}, "
            f"peak memory {result['ray_vs_local_peak_memory']}, same bytes: {result['same_bytes']}"
        )
        save("engines", {"rounds": args.rounds, "stages": results})  # after each stage: a long run keeps its part


if __name__ == "__main__":
    main()
