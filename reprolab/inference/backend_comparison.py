"""What each inference backend costs and loses: torch fp32, ONNX fp32 and ONNX int8 on the test split.

Every backend scores through the one prediction path (`prediction.Predictor`) and is timed side by
side: the rounds alternate between the backends, on the same rows, batch size and threads, and the
median round counts. The int8 figures are held against the export issue's targets.
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
from reprolab.records import provenance
from reprolab.results.metrics import macro_f1

# The figures of a backend that are timed, so differ run to run (the others are exact for given weights).
TIMED_FIELDS = ("latency_ms_p50", "latency_ms_p95", "rows_per_second", "speedup_vs_torch")
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


def _timed(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def _alternating_rounds(predictors: dict[str, Predictor], sequences: list[np.ndarray], singles: list, rounds: int):
    """Per backend: its probabilities for `sequences`, rows/s of each round, and each round's one-row latencies (ms)."""
    probs: dict[str, np.ndarray] = {}
    throughput: dict[str, list[float]] = {backend: [] for backend in predictors}
    latencies: dict[str, list[list[float]]] = {backend: [] for backend in predictors}
    for _ in range(rounds):
        for backend, predictor in predictors.items():  # alternating: drift on a shared machine hits all alike
            seconds = _timed(lambda p=predictor, b=backend: probs.__setitem__(b, p.probabilities(sequences)))
            throughput[backend].append(len(sequences) / seconds)
            latencies[backend].append(
                [_timed(lambda p=predictor, s=single: p.probabilities(s)) * 1000 for single in singles]
            )
    return probs, throughput, latencies


def compare_backends(
    model_dir: Path,
    export_dir: Path,
    sequences: list[np.ndarray],
    labels: np.ndarray,
    batch_size: int,
    latency_rows: int,
    rounds: int,
    threads: int,
) -> dict[str, Any]:
    """Per backend: weights size, test macro-F1, agreement with torch, p50/p95 latency of one row, rows/s
    in batches; the int8 figures against the issue's targets."""
    folders = {backend: model_dir if backend == "torch" else export_dir for backend in WEIGHT_FILES}
    with torch_threads(threads):
        predictors = {
            backend: Predictor(folder, backend, batch_size=batch_size, threads=threads)
            for backend, folder in folders.items()
        }
        singles = [[sequence] for sequence in sequences[:latency_rows]]
        probs, throughput, latencies = _alternating_rounds(predictors, sequences, singles, rounds)
    torch_predictor = predictors["torch"]
    names = torch_predictor.labels
    truth = [names[i] for i in labels]
    predicted = {backend: np.array(torch_predictor.task.predicted(p, names)) for backend, p in probs.items()}
    table = {}
    for backend, file in WEIGHT_FILES.items():
        median_round = int(np.argsort(throughput[backend])[len(throughput[backend]) // 2])
        table[backend] = {
            "file": file,
            "size_mb": round((folders[backend] / file).stat().st_size / 1e6, 2),
            "macro_f1": macro_f1(truth, predicted[backend], names),
            "agreement_with_torch": float((predicted[backend] == predicted["torch"]).mean()),
            "max_probability_difference": float(np.abs(probs[backend] - probs["torch"]).max()),
            "latency_ms_p50": round(float(np.percentile(latencies[backend][median_round], 50)), 2),
            "latency_ms_p95": round(float(np.percentile(latencies[backend][median_round], 95)), 2),
            "rows_per_second": round(throughput[backend][median_round], 1),
        }
    reference, int8 = table["torch"], table["onnx-int8"]
    for row in table.values():
        row["size_vs_torch"] = round(row["size_mb"] / reference["size_mb"], 3)
        row["speedup_vs_torch"] = round(row["rows_per_second"] / reference["rows_per_second"], 2)
    targets = {
        "int8_speedup_at_least_2x": int8["speedup_vs_torch"] >= 2.0,
        "int8_size_at_most_35_percent": int8["size_vs_torch"] <= 0.35,
        "int8_macro_f1_within_0.005": abs(int8["macro_f1"] - reference["macro_f1"]) <= 0.005,
    }
    return {
        "backends": table,
        "targets": targets,
        "test_rows": len(sequences),
        "batch_size": batch_size,
        "latency_rows": len(singles),
        "rounds": rounds,
        "threads": threads,
        "device": "cpu",
        "cpu": provenance.cpu_info("model name") or "unknown",
    }


def measured_on_this_run(report: dict[str, Any], keep: bool = True) -> dict[str, Any]:
    """Each backend's timed figures in an export report (`keep=False`: its other figures, which a rerun
    reproduces)."""
    return {
        name: {k: v for k, v in row.items() if (k in TIMED_FIELDS) == keep}
        for name, row in report.get("backends", {}).items()
    }
