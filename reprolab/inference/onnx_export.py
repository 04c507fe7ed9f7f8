"""The fine-tuned model for cheap inference: ONNX export, an int8 copy, and what each costs and loses.

The model is exported with eager attention (a graph onnxruntime's transformer optimizer can fuse into
its Attention, SkipLayerNormalization and BiasGelu kernels), fused, and saved as the fp32 model; the
int8 copy quantizes its weights per channel (embeddings included) with dynamic activation scales
(onnxruntime's `quantize_dynamic`). The export folder holds both beside the tokenizer and recipe, so
`reprolab predict --model models/export --format onnx-int8` needs nothing else.

`compare_backends` scores the test split with torch fp32, ONNX fp32 and ONNX int8 through the one
prediction path (`prediction.Predictor`), and times them side by side: the rounds alternate between the
backends, on the same rows, batch size and threads, and the median round counts.
"""

from __future__ import annotations

import logging
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import f1_score

from reprolab import storage
from reprolab.errors import StageError
from reprolab.inference.prediction import ONNX_FILES, Predictor
from reprolab.records import provenance

WEIGHTS_FILE = "model.safetensors"
# The figures of a backend that are timed, so differ run to run (the others are exact for given weights).
TIMED_FIELDS = ("latency_ms_p50", "latency_ms_p95", "rows_per_second", "speedup_vs_torch")
# Backend -> the file holding its weights.
WEIGHT_FILES = {"torch": WEIGHTS_FILE, **ONNX_FILES}


def export_folder(model_dir: Path, dest: Path, opset: int) -> None:
    """`dest`: the model's tokenizer, config and recipe with model.onnx (fused fp32) and model.int8.onnx."""
    with storage.atomic_dir(dest) as tmp:
        for item in sorted(model_dir.iterdir()):
            if item.is_file() and item.name != WEIGHTS_FILE:
                shutil.copyfile(item, tmp / item.name)
        raw = tmp / "unfused.onnx"
        export_onnx(model_dir, raw, opset)
        fuse(model_dir, raw, tmp / ONNX_FILES["onnx"])
        raw.unlink()
        quantize_int8(tmp / ONNX_FILES["onnx"], tmp / ONNX_FILES["onnx-int8"])


def export_onnx(model_dir: Path, dest: Path, opset: int) -> None:
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging

    logging.disable_progress_bar()
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, attn_implementation="eager").eval()
    example = torch.ones((2, 8), dtype=torch.long)
    with warnings.catch_warnings(), torch.inference_mode():
        # The TorchScript exporter: it keeps the attention pattern the fusion below recognises. Its tracer
        # warns about shape checks turned constant; with a mask always given (predict gives one) they hold.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example, example),
            str(dest),
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            opset_version=opset,
            dynamo=False,
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                "logits": {0: "batch"},
            },
        )


def fuse(model_dir: Path, source: Path, dest: Path) -> None:
    """onnxruntime's transformer fusions where it knows the architecture; the plain graph otherwise."""
    import json

    from onnxruntime.transformers.optimizer import MODEL_TYPES, optimize_model

    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    kind = config.get("model_type")
    if kind not in MODEL_TYPES:
        print(f"export: onnxruntime has no fusions for model type {kind!r}; the graph stays unfused")
        shutil.copyfile(source, dest)
        return
    optimized = optimize_model(
        str(source), model_type=kind, num_heads=config["num_attention_heads"], hidden_size=config["hidden_size"]
    )
    optimized.save_model_to_file(str(dest))


def quantize_int8(source: Path, dest: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Fused operators (com.microsoft domain) have no ONNX shape inference: their outputs are float. Its
    # advice to pre-process first (shape inference, for static quantization's calibration) is switched off.
    logging.disable(logging.WARNING)
    try:
        quantize_dynamic(
            source,
            dest,
            weight_type=QuantType.QInt8,
            per_channel=True,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        logging.disable(logging.NOTSET)


def _timed(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


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
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _compare(model_dir, export_dir, sequences, labels, batch_size, latency_rows, rounds, threads)
    finally:
        torch.set_num_threads(previous_threads)  # the caller's results depend on its thread count


def _compare(
    model_dir: Path,
    export_dir: Path,
    sequences: list[np.ndarray],
    labels: np.ndarray,
    batch_size: int,
    latency_rows: int,
    rounds: int,
    threads: int,
) -> dict[str, Any]:
    predictors = {
        backend: Predictor(
            model_dir if backend == "torch" else export_dir, backend, batch_size=batch_size, threads=threads
        )
        for backend in WEIGHT_FILES
    }
    singles = [[sequence] for sequence in sequences[:latency_rows]]
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
    torch_labels = probs["torch"].argmax(axis=1)
    classes = list(range(probs["torch"].shape[1]))
    table = {}
    for backend, file in WEIGHT_FILES.items():
        predicted = probs[backend].argmax(axis=1)
        folder = model_dir if backend == "torch" else export_dir
        best_round = int(np.argsort(throughput[backend])[len(throughput[backend]) // 2])  # the median round
        table[backend] = {
            "file": file,
            "size_mb": round((folder / file).stat().st_size / 1e6, 2),
            "macro_f1": float(f1_score(labels, predicted, labels=classes, average="macro", zero_division=0)),
            "agreement_with_torch": float((predicted == torch_labels).mean()),
            "max_probability_difference": float(np.abs(probs[backend] - probs["torch"]).max()),
            "latency_ms_p50": round(float(np.percentile(latencies[backend][best_round], 50)), 2),
            "latency_ms_p95": round(float(np.percentile(latencies[backend][best_round], 95)), 2),
            "rows_per_second": round(throughput[backend][best_round], 1),
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


def check_exportable(model_dir: Path) -> None:
    if not (model_dir / WEIGHTS_FILE).is_file():
        raise StageError(f"{model_dir}: no {WEIGHTS_FILE} to export (run `dvc repro train`)")
