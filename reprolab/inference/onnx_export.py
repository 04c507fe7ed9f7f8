"""The fine-tuned model for cheap inference: an ONNX export and an int8 copy of it.

The model is exported with eager attention (a graph onnxruntime's transformer optimizer can fuse into
its Attention, SkipLayerNormalization and BiasGelu kernels), fused, and saved as the fp32 model; the
int8 copy quantizes its weights per channel (embeddings included) with dynamic activation scales
(onnxruntime's `quantize_dynamic`). The export folder holds both beside the tokenizer and recipe, so
`reprolab predict --model models/export --format onnx-int8` needs nothing else. What each backend
costs and loses is measured by `reprolab.inference.backend_comparison`.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path

import torch

from reprolab import storage
from reprolab.errors import StageError
from reprolab.inference.prediction import ONNX_FILES, Recipe
from reprolab.tasks import catalog
from reprolab.tasks.base import Task

WEIGHTS_FILE = "model.safetensors"


def export_folder(model_dir: Path, dest: Path, opset: int) -> None:
    """`dest`: the model's tokenizer, config and recipe with model.onnx (fused fp32) and model.int8.onnx."""
    with storage.atomic_dir(dest) as tmp:
        for item in sorted(model_dir.iterdir()):
            if item.is_file() and item.name != WEIGHTS_FILE:
                shutil.copyfile(item, tmp / item.name)
        raw = tmp / "unfused.onnx"
        export_onnx(model_dir, raw, opset, catalog.task_named(Recipe.read(model_dir).task))
        fuse(model_dir, raw, tmp / ONNX_FILES["onnx"])
        raw.unlink()
        quantize_int8(tmp / ONNX_FILES["onnx"], tmp / ONNX_FILES["onnx-int8"])


def export_onnx(model_dir: Path, dest: Path, opset: int, task: Task) -> None:
    import transformers
    from transformers.utils import logging

    logging.disable_progress_bar()
    auto_model = getattr(transformers, task.auto_model)
    model = auto_model.from_pretrained(model_dir, attn_implementation="eager").eval()
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
                "logits": task.logits_axes,
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


def check_exportable(model_dir: Path) -> None:
    if not (model_dir / WEIGHTS_FILE).is_file():
        raise StageError(f"{model_dir}: no {WEIGHTS_FILE} to export (run `dvc repro train`)")
