"""Training: fine-tune the pretrained encoder with the task's head on the token splits.

What is trained with what: the accelerator (device, mixed precision, DDP across processes and
machines, gradient accumulation), seeds, AdamW with linear (or cosine) warmup and decay, the
length-grouped batches, full fine-tuning or LoRA adapters (peft), optional class weights; then the
outputs (the model folder with its recipe, train.json, the history CSVs). The loop itself, in the
style of `run_glue_no_trainer.py`, is `reprolab.model.loop`; checkpoints are `reprolab.model.checkpoints`.
On the CPU the run is deterministic: fixed seeds, thread count and deterministic algorithms, fp32; a
checkpointed run resumes to the same weights as an uninterrupted one."""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reprolab import paths, storage
from reprolab.encoding import encoder
from reprolab.errors import StageError
from reprolab.inference import prediction
from reprolab.model import distillation, runtime
from reprolab.model.checkpoints import Checkpointer, LoopState
from reprolab.model.loop import HardLabels, TrainingLoop, TrainResult
from reprolab.params import DistillParams, LoraParams, Params, TrainParams
from reprolab.tasks import catalog
from reprolab.tasks.base import Task


def history_fields(task: Task) -> tuple[str, ...]:
    """The columns of reports/train_history.csv: an epoch's training loss, the task's validation
    scores and the learning rate."""
    return ("epoch", "step", "train_loss", *task.validation_fields, "learning_rate")


STEP_FIELDS = ("step", "epoch", "train_loss", "learning_rate")  # every log_every_steps optimizer steps
# Params that change how a run is observed or where its processes meet, not what it computes: a
# checkpoint stays valid across them (and every machine of a job finds the same one).
_NOT_COMPUTING = {
    "log_every_steps",
    "checkpoint_every_steps",
    "checkpoint_every_minutes",
    "dataloader_workers",
    "machine_rank",
    "main_process_ip",
    "main_process_port",
}
CUDA_WORKERS = 4  # dataloader_workers: auto on CUDA


def seed_everything(seed: int, device: torch.device, num_threads: int | None) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if num_threads:
        torch.set_num_threads(num_threads)
    if device.type == "cuda":
        # GPU results are not bit-stable anyway (bf16, atomics): no deterministic kernels forced there,
        # and fp32 matmuls may use TF32 tensor cores.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        torch.use_deterministic_algorithms(True)


def make_accelerator(p: TrainParams):
    """The Accelerator for `p` on this process: CPU or CUDA, mixed precision, gradient accumulation."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration

    device = runtime.select_device(p.device)
    # accelerate keeps its settings in process-wide singletons; a second run in one process (tests,
    # benchmarks) starts from fresh ones. A launched job's process group is left alone.
    AcceleratorState._reset_state()
    GradientState._reset_state()
    return Accelerator(
        cpu=device.type == "cpu",
        mixed_precision=runtime.mixed_precision(p.mixed_precision, device),
        gradient_accumulation_steps=p.gradient_accumulation_steps,
        # The scheduler is stepped by the loop, once per optimizer step, whatever the number of processes.
        step_scheduler_with_optimizer=False,
        dataloader_config=DataLoaderConfiguration(non_blocking=device.type == "cuda"),
        project_config=ProjectConfiguration(save_on_each_node=True),
    )


def _optimizer(model, p: TrainParams) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, weight in model.named_parameters():
        if weight.requires_grad:
            (no_decay if weight.ndim < 2 or "LayerNorm" in name else decay).append(weight)
    groups = [{"params": decay, "weight_decay": p.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # Fused on the CPU as on CUDA: one kernel over all parameters instead of a loop of per-tensor ops.
    return torch.optim.AdamW(groups, lr=p.learning_rate, fused=True)


def _train_loader(task: Task, train: runtime.TokenData, p: TrainParams, pad_id: int, max_length: int, cuda: bool):
    """The epoch batch sampler (at epoch 1) and a DataLoader over it: collation in worker processes,
    into pinned memory, padded to a multiple of 8 on CUDA."""
    batches = runtime.EpochBatches(train.lengths, p.batch_size, p.seed, p.group_by_length)
    batches.use_epoch(1)
    workers = (CUDA_WORKERS if cuda else 0) if p.dataloader_workers == "auto" else p.dataloader_workers
    loader = torch.utils.data.DataLoader(
        runtime.TokenDataset(train),
        batch_sampler=batches,
        num_workers=workers,
        pin_memory=cuda,
        persistent_workers=workers > 0,
        collate_fn=runtime.Collator(task, pad_id, max_length if p.padding == "max_length" else None, 8 if cuda else 1),
        generator=torch.Generator(),
    )  # its own: the global one draws dropout masks
    return batches, loader


def _scheduler(optimizer: torch.optim.Optimizer, p: TrainParams, steps_per_epoch: int):
    """Warmup then decay over the run's optimizer steps, stepped by the loop once per optimizer step."""
    from transformers import get_scheduler

    total_steps = steps_per_epoch * p.epochs
    return get_scheduler(
        p.lr_scheduler, optimizer, num_warmup_steps=round(p.warmup_ratio * total_steps), num_training_steps=total_steps
    )


def with_lora(model, lora: LoraParams, task: Task):
    """`model` with low-rank adapters on `lora.target_modules` (peft); the task's head trains in full."""
    from peft import LoraConfig, TaskType, get_peft_model

    config = LoraConfig(
        task_type=TaskType[task.peft_task_type],
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
    )
    try:
        return get_peft_model(model, config)
    except ValueError as exc:  # no module matched a name
        raise StageError(f"train.lora.target_modules: {exc}") from None


def class_weights(labels: np.ndarray, num_classes: int, mode: str) -> torch.Tensor | None:
    """Loss weights per class: None, or n / (n_classes * n of the class) (`balanced`), n counting
    every label the loss counts (rows, or tagged positions)."""
    if mode == "none":
        return None
    counts = np.bincount(labels, minlength=num_classes)
    if not counts.all():
        raise StageError(
            f"train.class_weights=balanced: class ids {np.flatnonzero(counts == 0).tolist()} have no "
            "training rows (use none, or give every class rows)"
        )
    return torch.tensor(len(labels) / (num_classes * counts), dtype=torch.float32)


def train_model(
    accelerator,
    task: Task,
    model,
    train: runtime.TokenData,
    val: runtime.TokenData,
    p: TrainParams,
    pad_id: int,
    max_length: int,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    checkpointer: Checkpointer | None = None,
    run_id: str | None = None,
    distill: DistillParams | None = None,
) -> TrainResult:
    """Train in place; on return `model` holds the weights of its best validation epoch (with LoRA,
    the adapters merged in). Every process of a job runs this with the same data and params. With
    `distill`, `model` is a student and `train` holds the teacher's logits: it learns from both."""
    device, processes = accelerator.device, accelerator.num_processes
    cuda = device.type == "cuda"
    precision = {"no": "fp32", "bf16": "bf16 autocast"}.get(accelerator.mixed_precision, "fp16 autocast, loss scaler")
    stage = "train" if distill is None else "distill"
    accelerator.print(f"{stage}: {processes} process(es) on {device.type}, {precision}")  # one voice under DDP
    trained = with_lora(model, p.lora, task) if p.method == "lora" else model
    trainable = sum(w.numel() for w in trained.parameters() if w.requires_grad)
    if processes > 1:
        torch.manual_seed(p.seed + accelerator.process_index)  # independent dropout masks per process
    # Compiled before DDP wraps it. Dynamic padding changes the sequence length from batch to batch:
    # one graph for all of them.
    forward = torch.compile(trained, dynamic=p.padding == "dynamic") if p.torch_compile else trained
    batches, loader = _train_loader(task, train, p, pad_id, max_length, cuda)
    forward, optimizer, loader = accelerator.prepare(forward, _optimizer(trained, p), loader)
    scheduler = _scheduler(optimizer.optimizer, p, math.ceil(len(loader) / p.gradient_accumulation_steps))
    accelerator.register_for_checkpointing(scheduler)
    weight = class_weights(train.scored_labels(), model.config.num_labels, p.class_weights)
    objective = HardLabels(task, None if weight is None else weight.to(device))
    if distill is not None:
        objective = distillation.Distillation(objective, distill.temperature, distill.alpha)
    run = TrainingLoop(
        accelerator,
        task,
        trained,
        forward,
        optimizer,
        scheduler,
        loader,
        batches,
        objective,
        p,
        checkpointer,
        on_step,
        stage,
    )
    run.resume(run_id)
    seconds, samples = run.run(val, pad_id)
    trained.load_state_dict(run.best)
    if p.method == "lora":
        trained.merge_and_unload()  # the adapters folded into `model`'s own weights, which it keeps
    return TrainResult(
        run.state.history,
        run.state.steps,
        run.state.best_epoch,
        samples,
        seconds,
        accelerator.mixed_precision,
        trainable,
    )


def history_csv(history: list[dict[str, float]], fields: tuple[str, ...]) -> str:
    """Per-epoch rows (`history_fields`) or, with STEP_FIELDS, per-step rows as CSV."""
    return storage.csv_text(list(fields), [[row[f] for f in fields] for row in history])


def save_model(model, model_source: str, params: Params, dest: Path = paths.MODEL_DIR) -> None:
    """Weights as safetensors, config and tokenizer: a self-contained Hugging Face directory, with the
    recipe (`prediction.Recipe`: task, cleaning, max_length, truncation) that new records need to be scored as
    the test split was. The tokenizer truncates from the side nearest tokenize.truncation, for whoever
    uses it on its own."""
    recipe = prediction.Recipe.of(params)
    tokenizer = encoder.load_tokenizer(model_source, recipe.truncation.tokenizer_side)
    with storage.atomic_dir(dest) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        recipe.write(tmp)


def training_inputs() -> dict[str, Path]:
    """What train learns from, by MLflow input context: the training split, the augmented rows (read
    after it, in this order) and the validation split."""
    return {"train": paths.token_split("train"), "train_augmented": paths.AUGMENTED, "val": paths.token_split("val")}


def checkpoint_dir(
    params: Params,
    inputs: dict[str, Path],
    p: TrainParams,
    root: Path = paths.CHECKPOINT_ROOT,
    distill: DistillParams | None = None,
) -> Path:
    """One directory per (params, inputs) under `root`: a checkpoint is never resumed into a different
    run. `p`: the run's train settings (a student's are train's with its own epochs and learning rate)."""
    computing = {k: v for k, v in p.model_dump().items() if k not in _NOT_COMPUTING}
    key = json.dumps(
        {
            "task": params.task,
            "train": computing,
            **({"distill": distill.model_dump()} if distill else {}),  # a student's: its layers and objective
            "max_length": params.tokenize.max_length,
            "model": params.model.name_or_path,
            "labels": params.ingest.class_names,
            "inputs": {name: storage.file_md5(path) for name, path in inputs.items()},
            # What a checkpoint's state records: a checkpoint of another layout is not resumed.
            "state": [
                sorted(field.name for field in fields(LoopState)),
                history_fields(catalog.task_named(params.task)),
                STEP_FIELDS,
            ],
        },
        sort_keys=True,
    )
    return root / hashlib.sha256(key.encode()).hexdigest()[:16]


def train_report(
    result: TrainResult, device: torch.device, train_rows: int, cpu_kernels: dict[str, str]
) -> dict[str, Any]:
    """reports/train.json: the best epoch's validation scores and where the weights were computed; on the
    CPU, which kernels they are exact for (`reprolab audit` compares them)."""
    best = result.history[result.best_epoch - 1]
    report = {
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "device": device.type,
        "mixed_precision": result.mixed_precision,
        "train_rows": train_rows,
        **{f"best_{k}": v for k, v in best.items() if k.startswith("val_")},
    }
    if device.type == "cpu":
        report["cpu_kernels"] = cpu_kernels
    return report
