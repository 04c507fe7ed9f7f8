"""What each inference backend costs and loses: torch fp32, ONNX fp32 and ONNX int8 on the test split.

Every backend scores through the one prediction path (`prediction.Predictor`) on the same rows, batch
size and threads. Only figures a rerun reproduces bit for bit are reported here (sizes, macro-F1,
agreement), so the export stage's report is deterministic; the timings are a benchmark
(`bench/export_bench.py`, which calls `time_backends`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reprolab.inference.onnx_export import WEIGHTS_FILE
from reprolab.inference.prediction import ONNX_FILES, Predictor
from reprolab.model.runtime import TokenData

# Backend -> the file holding its weights.
WEIGHT_FILES = {"torch": WEIGHTS_FILE, **ONNX_FILES}


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op thread count set for the block, the caller's restored after (its results depend on it)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def predictors(model_dir: Path, export_dir: Path, batch_size: int, threads: int) -> dict[str, Predictor]:
    """Backend -> its predictor, every one with the same batch size and threads."""
    return {
        backend: Predictor(
            model_dir if backend == "torch" else export_dir, backend, batch_size=batch_size, threads=threads
        )
        for backend in WEIGHT_FILES
    }


def score_backends(model_dir: Path, export_dir: Path, test: TokenData, batch_size: int, threads: int) -> dict[str, Any]:
    """Per backend: weights size, the task's test score and agreement with torch (`Task.backend_scores`:
    per row for a classifier, per word and per entity for a tagger) and the largest probability
    difference from it; the int8 figures against the export targets (size, and the score within the
    task's `export_tolerance`)."""
    with torch_threads(threads):
        scorers = predictors(model_dir, export_dir, batch_size, threads)
        probs = {backend: predictor.probabilities(test.sequences) for backend, predictor in scorers.items()}
    task, names = scorers["torch"].task, scorers["torch"].labels
    table = {}
    for backend, file in WEIGHT_FILES.items():
        table[backend] = {
            "file": file,
            "size_mb": round((scorers[backend].folder / file).stat().st_size / 1e6, 2),
            **task.backend_scores(test, probs[backend], probs["torch"], names),
            "max_probability_difference": float(np.abs(probs[backend] - probs["torch"]).max()),
        }
    reference, int8 = table["torch"], table["onnx-int8"]
    for row in table.values():
        row["size_vs_torch"] = round(row["size_mb"] / reference["size_mb"], 3)
    targets = {
        "int8_size_at_most_35_percent": int8["size_vs_torch"] <= 0.35,
        f"int8_{task.score}_within_{task.export_tolerance}": abs(int8[task.score] - reference[task.score])
        <= task.export_tolerance,
    }
    return {
        "backends": table,
        "targets": targets,
        "test_rows": len(test.sequences),
        "batch_size": batch_size,
        "threads": threads,
    }


def _timed(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def time_backends(
    scorers: dict[str, Predictor], sequences: list[np.ndarray], latency_rows: int, rounds: int
) -> dict[str, dict[str, float]]:
    """Per backend: p50/p95 latency of one row (ms), rows/s in batches and the speed-up over torch, from
    the median of `rounds` rounds that alternate between the backends, so drift on a shared machine
    hits all alike."""
    singles = [[sequence] for sequence in sequences[:latency_rows]]
    throughput: dict[str, list[float]] = {backend: [] for backend in scorers}
    latencies: dict[str, list[list[float]]] = {backend: [] for backend in scorers}
    for _ in range(rounds):
        for backend, predictor in scorers.items():
            throughput[backend].append(len(sequences) / _timed(lambda p=predictor: p.probabilities(sequences)))
            latencies[backend].append(
                [_timed(lambda p=predictor, s=single: p.probabilities(s)) * 1000 for single in singles]
            )
    table = {}
    for backend in scorers:
        median_round = int(np.argsort(throughput[backend])[len(throughput[backend]) // 2])
        table[backend] = {
            "latency_ms_p50": round(float(np.percentile(latencies[backend][median_round], 50)), 2),
            "latency_ms_p95": round(float(np.percentile(latencies[backend][median_round], 95)), 2),
            "rows_per_second": round(throughput[backend][median_round], 1),
        }
    for row in table.values():
        row["speedup_vs_torch"] = round(row["rows_per_second"] / table["torch"]["rows_per_second"], 2)
    return table
