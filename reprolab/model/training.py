"""Training: fine-tune the pretrained encoder with a classification head on the token splits.

One loop on Hugging Face `accelerate` (as in `run_glue_no_trainer.py`): it places the model and
batches on the device, runs mixed precision, DDP across processes and machines (each process takes
whole batches of the epoch's order), gradient accumulation, and checkpoints (`reprolab.model.checkpoints`).
AdamW with linear (or cosine) warmup and decay, clipping, dynamic padding with length-grouped
batches, early stopping on validation macro-F1, full fine-tuning or LoRA adapters (peft), optional
class weights. On the CPU the run is deterministic: fixed seeds, thread count and deterministic
algorithms, fp32; a checkpointed run resumes to the same weights as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score, log_loss
from tqdm import tqdm

from reprolab import paths, storage
from reprolab.encoding import encoder
from reprolab.errors import StageError
from reprolab.inference import prediction
from reprolab.model import runtime
from reprolab.model.checkpoints import Checkpointer, LoopState, TrainingInterrupted
from reprolab.params import LoraParams, Params, TrainParams

HISTORY_FIELDS = ("epoch", "train_loss", "val_loss", "val_accuracy", "val_macro_f1", "learning_rate")
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


@dataclass
class TrainResult:
    history: list[dict[str, float]]  # per epoch, HISTORY_FIELDS
    steps: list[dict[str, float]]  # per logged step, STEP_FIELDS (a resumed run's include those before)
    best_epoch: int
    samples_seen: int  # by all processes in this run (a resumed run counts from its checkpoint)
    seconds: float  # training only, validation excluded
    mixed_precision: str  # accelerate's: no (fp32), bf16 or fp16
    trainable_parameters: int


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


def _train_loader(train: runtime.TokenData, p: TrainParams, pad_id: int, max_length: int, cuda: bool):
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
        collate_fn=runtime.Collator(pad_id, max_length if p.padding == "max_length" else None, 8 if cuda else 1),
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


def with_lora(model, lora: LoraParams):
    """`model` with low-rank adapters on `lora.target_modules` (peft); the classifier head trains in full."""
    from peft import LoraConfig, TaskType, get_peft_model

    config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
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
    """Loss weights per class: None, or n_rows / (n_classes * rows of the class) (`balanced`)."""
    if mode == "none":
        return None
    counts = np.bincount(labels, minlength=num_classes)
    if not counts.all():
        raise StageError(
            f"train.class_weights=balanced: class ids {np.flatnonzero(counts == 0).tolist()} have no "
            "training rows (use none, or give every class rows)"
        )
    return torch.tensor(len(labels) / (num_classes * counts), dtype=torch.float32)


def validate(accelerator, model, val: runtime.TokenData, p: TrainParams, pad_id: int) -> dict:
    """Validation scores; each process scores its share of the rows and every process gets them all."""
    rows = list(range(len(val)))
    with accelerator.split_between_processes(rows) as mine:
        logits = runtime.predict_logits(
            model,
            [val.sequences[i] for i in mine],
            p.eval_batch_size,
            pad_id,
            accelerator.device,
            accelerator.mixed_precision == "bf16",
        )
    shares = accelerator.gather_for_metrics([logits], use_gather_object=True)  # in process order: row order
    probs = runtime.softmax(np.concatenate([share for share in shares if len(share)]))
    predicted = probs.argmax(axis=1)
    return {
        "val_loss": float(log_loss(val.labels, probs, labels=list(range(probs.shape[1])))),
        "val_accuracy": float(accuracy_score(val.labels, predicted)),
        "val_macro_f1": float(f1_score(val.labels, predicted, average="macro")),
    }


def _sum(accelerator, value: torch.Tensor) -> float:
    """A per-process number summed over the processes (a collective: all of them call it together)."""
    if accelerator.num_processes == 1:
        return float(value)
    return float(accelerator.reduce(value.to(accelerator.device, copy=True), "sum"))


def train_model(
    accelerator,
    model,
    train: runtime.TokenData,
    val: runtime.TokenData,
    p: TrainParams,
    pad_id: int,
    max_length: int,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    checkpointer: Checkpointer | None = None,
    run_id: str | None = None,
) -> TrainResult:
    """Train in place; on return `model` holds the weights of its best validation epoch (with LoRA,
    the adapters merged in). Every process of a job runs this with the same data and params."""
    device, processes = accelerator.device, accelerator.num_processes
    say = accelerator.print  # one voice under DDP
    cuda = device.type == "cuda"
    precision = {"no": "fp32", "bf16": "bf16 autocast"}.get(accelerator.mixed_precision, "fp16 autocast, loss scaler")
    say(f"train: {processes} process(es) on {device.type}, {precision}")
    trained = with_lora(model, p.lora) if p.method == "lora" else model
    trainable = sum(w.numel() for w in trained.parameters() if w.requires_grad)
    if processes > 1:
        torch.manual_seed(p.seed + accelerator.process_index)  # independent dropout masks per process
    # Compiled before DDP wraps it. Dynamic padding changes the sequence length from batch to batch:
    # one graph for all of them.
    forward = torch.compile(trained, dynamic=p.padding == "dynamic") if p.torch_compile else trained
    batches, loader = _train_loader(train, p, pad_id, max_length, cuda)
    forward, optimizer, loader = accelerator.prepare(forward, _optimizer(trained, p), loader)
    scheduler = _scheduler(optimizer.optimizer, p, math.ceil(len(loader) / p.gradient_accumulation_steps))
    accelerator.register_for_checkpointing(scheduler)
    weight = class_weights(train.labels, model.config.num_labels, p.class_weights)
    weight = None if weight is None else weight.to(device)

    state, best = LoopState(run_id=run_id), None
    resumed = checkpointer.load(accelerator) if checkpointer else None
    if resumed:
        state, best = resumed
        say(f"train: resuming from the checkpoint at epoch {state.epoch}, step {state.step}")
    samples_before = _sum(accelerator, torch.tensor(state.samples_seen))
    # Running sums stay on the device (float64: the order of additions is the only rounding); they are
    # read at logging steps and epoch ends only, so no step waits for the device.
    epoch_loss = torch.tensor(state.epoch_loss, dtype=torch.float64, device=device)
    window_loss = torch.tensor(state.window_loss, dtype=torch.float64, device=device)
    samples = torch.tensor(state.samples_seen, dtype=torch.int64, device=device)

    def snapshot() -> LoopState:
        """The loop state with its sums over all processes, for a checkpoint."""
        return LoopState(
            **{
                **state.to_json(),
                "epoch_loss": _sum(accelerator, epoch_loss),
                "window_loss": _sum(accelerator, window_loss),
                "samples_seen": int(_sum(accelerator, samples)),
            }
        )

    def stop_or_save(due_here: bool) -> None:
        """Agree over the processes whether a signal arrived or a save is due; save, and stop on a signal."""
        flags = torch.tensor([checkpointer.stop_requested, due_here], device=device)
        if processes > 1:
            flags = accelerator.gather(flags).view(processes, 2).amax(dim=0)
        stop, due = int(flags[0]), bool(flags[1])
        if stop or due:
            checkpointer.save(accelerator, snapshot(), best)
        if stop:
            checkpointer.stop_requested = stop
            raise TrainingInterrupted(f"checkpoint saved at step {state.step}")

    started, validation_seconds = time.perf_counter(), 0.0
    while state.epoch <= p.epochs:
        batches.use_epoch(state.epoch)
        forward.train()
        epoch_batches = accelerator.skip_first_batches(loader, state.batch) if state.batch else loader
        progress = tqdm(
            total=len(loader),
            initial=state.batch,
            desc=f"epoch {state.epoch}",
            unit="batch",
            mininterval=10,
            disable=not accelerator.is_local_main_process,
        )
        for batch in epoch_batches:
            labels = batch.pop("labels")
            with accelerator.accumulate(forward):
                logits = forward(**batch).logits
                loss = torch.nn.functional.cross_entropy(logits.float(), labels, weight=weight)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(forward.parameters(), p.max_grad_norm)
                optimizer.step()
                if accelerator.sync_gradients and not accelerator.optimizer_step_was_skipped:
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            epoch_loss += loss.detach()
            window_loss += loss.detach()
            samples += len(labels)
            state.batch += 1
            state.window_batches += 1
            progress.update()
            if not accelerator.sync_gradients:
                continue
            state.step += 1
            logging_step = state.step % p.log_every_steps == 0
            if logging_step:
                mean = _sum(accelerator, window_loss) / (state.window_batches * processes)
                state.steps.append(
                    {
                        "step": state.step,
                        "epoch": state.epoch,
                        "train_loss": mean,
                        "learning_rate": scheduler.get_last_lr()[0],
                    }
                )
                window_loss.zero_()
                state.window_batches = 0
                if on_step:
                    on_step(state.step, {k: state.steps[-1][k] for k in ("train_loss", "learning_rate")})
            # One process checks every step; a job agrees at logging steps and step-count checkpoints,
            # so no step waits on a collective. An epoch's last step saves after validation.
            step_due = bool(checkpointer and checkpointer.every_steps and state.step % checkpointer.every_steps == 0)
            if checkpointer and state.batch < len(loader) and (processes == 1 or logging_step or step_due):
                stop_or_save(checkpointer.due_here(state.step))
        progress.close()
        validation_started = time.perf_counter()
        scores = validate(accelerator, trained, val, p, pad_id)
        validation_seconds += time.perf_counter() - validation_started
        train_loss = _sum(accelerator, epoch_loss) / (state.batch * processes)
        state.history.append(
            {"epoch": state.epoch, "train_loss": train_loss, **scores, "learning_rate": scheduler.get_last_lr()[0]}
        )
        say(f"train: epoch {state.epoch}: " + ", ".join(f"{k}={v:.4f}" for k, v in state.history[-1].items()))
        if scores["val_macro_f1"] > state.best_f1:
            state.best_f1, state.best_epoch, state.stale = scores["val_macro_f1"], state.epoch, 0
            best = {k: v.detach().clone() for k, v in trained.state_dict().items()}
        else:
            state.stale += 1
        state.epoch, state.batch = state.epoch + 1, 0
        epoch_loss.zero_()
        if state.stale >= p.early_stopping_patience:
            say(f"train: early stop after epoch {state.epoch - 1} (best epoch {state.best_epoch})")
            break
        if checkpointer and state.epoch <= p.epochs:
            stop_or_save(True)
    seconds = time.perf_counter() - started - validation_seconds
    trained.load_state_dict(best)
    if p.method == "lora":
        trained.merge_and_unload()  # the adapters folded into `model`'s own weights, which it keeps
    return TrainResult(
        state.history,
        state.steps,
        state.best_epoch,
        int(_sum(accelerator, samples) - samples_before),
        seconds,
        accelerator.mixed_precision,
        trainable,
    )


def history_csv(history: list[dict[str, float]], fields: tuple[str, ...] = HISTORY_FIELDS) -> str:
    """Per-epoch rows (HISTORY_FIELDS) or, with STEP_FIELDS, per-step rows as CSV."""
    return storage.csv_text(list(fields), [[row[f] for f in fields] for row in history])


def save_model(model, model_source: str, params: Params) -> None:
    """Weights as safetensors, config and tokenizer: a self-contained Hugging Face directory, with the
    recipe (`prediction.Recipe`: cleaning, max_length, truncation) that new records need to be scored as
    the test split was. The tokenizer truncates from the side nearest tokenize.truncation, for whoever
    uses it on its own."""
    recipe = prediction.Recipe.of(params)
    tokenizer = encoder.load_tokenizer(model_source, recipe.truncation.tokenizer_side)
    with storage.atomic_dir(paths.MODEL_DIR) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        recipe.write(tmp)


def checkpoint_dir(params: Params, inputs: dict[str, Path]) -> Path:
    """One directory per (params, inputs): a checkpoint is never resumed into a different run."""
    computing = {k: v for k, v in params.train.model_dump().items() if k not in _NOT_COMPUTING}
    key = json.dumps(
        {
            "train": computing,
            "max_length": params.tokenize.max_length,
            "model": params.model.name_or_path,
            "labels": params.ingest.class_names,
            "inputs": {name: storage.file_md5(path) for name, path in inputs.items()},
        },
        sort_keys=True,
    )
    return paths.CHECKPOINT_ROOT / hashlib.sha256(key.encode()).hexdigest()[:16]


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
