"""Shared by the benchmark scripts: real texts from the pipeline, timing, and result files."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.chdir(ROOT)

from reprolab.process_settings import configure_process  # noqa: E402

configure_process()  # the stages' settings (offline, CPU kernels), before anything imports torch

from reprolab import paths, storage  # noqa: E402
from reprolab.params import load_params  # noqa: E402
from reprolab.records import provenance  # noqa: E402

RESULTS = ROOT / "reports" / "benchmarks"


def clean_texts() -> tuple[list[str], list[str]]:
    """The clean splits' texts and labels (run `dvc repro -s clean` first)."""
    texts, labels = [], []
    for split in paths.SPLITS:
        table = storage.read_parquet(paths.clean_split(split), ["text", "label"]).to_pydict()
        texts += table["text"]
        labels += table["label"]
    return texts, labels


def best_of(repeats: int, work: Callable[[], object]) -> float:
    """Seconds of the fastest of `repeats` runs (the least disturbed by the rest of the machine)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def machine() -> dict[str, object]:
    cpu = "unknown"
    if Path("/proc/cpuinfo").exists():
        cpu = next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            cpu,
        )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "versions": provenance.package_versions(),
    }


def save(name: str, results: dict[str, object]) -> None:
    results = {
        **results,
        "commit": provenance.git_commit(),
        "dirty_paths": provenance.git_dirty_paths(),
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
    storage.write_json(results, RESULTS / f"{name}.json")
    print(json.dumps({k: v for k, v in results.items() if k != "machine"}, indent=2))


def project_parser(doc: str) -> argparse.ArgumentParser:
    """The options of a benchmark that times backends in rounds on a DVC project's test split."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median one is reported")
    parser.add_argument("--project", default=".", help="the DVC project, from the repository root (examples/ner)")
    return parser


def parse_in_project(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """`parser`'s arguments; the project they name becomes the working directory."""
    args = parser.parse_args()
    os.chdir(ROOT / args.project)
    return args


def backend_timing_args(doc: str) -> argparse.Namespace:
    """The backend benchmarks' options (`project_parser`'s and latency rows), parsed, in the project."""
    parser = project_parser(doc)
    parser.add_argument("--latency-rows", type=int, default=100, help="test rows scored one at a time (p50/p95)")
    return parse_in_project(parser)


def result_name(base: str, project: str) -> str:
    """A benchmark's result name: `base` for the root project, `base_<folder>` for one below it."""
    return base if project == "." else f"{base}_{os.path.basename(project)}"


def median(values: list[float]) -> float:
    return statistics.median(values)


params = load_params()
