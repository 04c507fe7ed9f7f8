"""Training: fine-tune the pretrained encoder with a classification head on the token splits.

AdamW with linear (or cosine) warmup and decay, gradient accumulation and clipping, dynamic padding
with length-grouped batches, early stopping on validation macro-F1, bf16 autocast on CUDA. On the
CPU the run is deterministic: fixed seeds, thread count and deterministic algorithms.

Checkpoints (weights and best weights as safetensors, optimizer, scheduler, RNG states, position in
the epoch) are written every `train.checkpoint_every_steps` optimizer steps and on SIGINT/SIGTERM,
outside DVC's outputs (DVC deletes those before a stage re-runs). The next run with the same inputs
and params resumes from the last one and, on the CPU, ends with the same weights as an
uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import signal
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from sklearn.metrics import accuracy_score, f1_score, log_loss
from tqdm import tqdm

from reprolab import distributed, encoding, modeling, paths, prediction, storage
from reprolab.params import Params, TrainParams

HISTORY_FIELDS = ("epoch", "train_loss", "val_loss", "val_accuracy", "val_macro_f1", "learning_rate")
STEP_FIELDS = ("step", "epoch", "train_loss", "learning_rate")  # every log_every_steps optimizer steps
# Params that change how a run is observed, not what it computes: a checkpoint stays valid across them.
_OBSERVATION_ONLY = {"log_every_steps", "checkpoint_every_steps"}


class TrainingInterrupted(Exception):
    """SIGINT/SIGTERM arrived; a checkpoint was saved first."""


@dataclass
class LoopState:
    """Everything besides tensors that a resumed run needs to continue exactly where it stopped."""

    epoch: int = 1  # current epoch, from 1
    batch: int = 0  # next batch of the epoch
    step: int = 0  # optimizer steps taken
    samples_seen: int = 0
    epoch_loss: float = 0.0
    window_loss: float = 0.0
    window_batches: int = 0
    best_f1: float = -1.0
    best_epoch: int = 0
    stale: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    steps: list[dict[str, float]] = field(default_factory=list)  # the logged steps, STEP_FIELDS
    epoch_rng: dict[str, Any] | None = None  # batch-order RNG state at the start of the epoch
    rng: dict[str, Any] | None = None  # batch-order RNG state when the checkpoint was taken
    run_id: str | None = None


@dataclass
class TrainResult:
    history: list[dict[str, float]]  # per epoch, HISTORY_FIELDS
    steps: list[dict[str, float]]  # per logged step, STEP_FIELDS (a resumed run's include those before)
    best_epoch: int
    samples_seen: int  # by this process (a resumed run counts from its checkpoint)
    seconds: float  # training only, validation excluded


class Checkpointer:
    """Saves and restores training state in `directory`, each save atomic (a new dir swapped in)."""

    def __init__(self, directory: Path, every_steps: int, context: distributed.Context = distributed.SINGLE_PROCESS):
        self.directory = directory
        self.every_steps = every_steps
        self.context = context  # under DDP rank 0 writes; every rank keeps its own dropout RNG
        self.stop_requested = 0  # the signal number once SIGINT/SIGTERM arrived

    def due(self, step: int) -> bool:
        return bool(self.stop_requested) or (self.every_steps > 0 and step % self.every_steps == 0)

    def save(self, state: LoopState, generator: np.random.Generator, model, optimizer, scheduler,
             best: dict | None) -> None:
        state.rng = generator.bit_generator.state
        torch_rngs = distributed.gather(torch.get_rng_state().tolist(), self.context)
        if self.context.is_main:
            with storage.atomic_dir(self.directory) as tmp:
                save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp / "model.safetensors")
                if best is not None:
                    save_file({k: v.contiguous() for k, v in best.items()}, tmp / "best.safetensors")
                torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
                extra = {"scheduler": scheduler.state_dict(), "torch_rng": torch_rngs}
                (tmp / "state.json").write_text(json.dumps({"loop": asdict(state), **extra}))
        distributed.barrier(self.context)

    def after_step(self, state: LoopState, generator: np.random.Generator, model, optimizer, scheduler,
                   best: dict | None, epoch_end: bool) -> None:
        """After an optimizer step (mid-epoch) or an epoch's validation, on every process: agree on
        whether a signal arrived anywhere, save if one did, if a save is due or at an epoch's end,
        then stop the run if a signal arrived."""
        self.stop_requested = distributed.any_process(self.stop_requested, self.context)
        if epoch_end or self.due(state.step):
            self.save(state, generator, model, optimizer, scheduler, best)
            if self.stop_requested:
                raise TrainingInterrupted(f"checkpoint saved at step {state.step}")

    def _saved(self) -> dict | None:
        file = self.directory / "state.json"
        return json.loads(file.read_text()) if file.exists() else None

    def peek(self) -> LoopState | None:
        saved = self._saved()
        return LoopState(**saved["loop"]) if saved else None

    def load(self, generator: np.random.Generator, model, optimizer, scheduler) -> tuple[LoopState, dict | None] | None:
        saved = self._saved()
        if saved is None:
            return None
        state = LoopState(**saved["loop"])
        generator.bit_generator.state = state.rng
        model.load_state_dict(load_file(self.directory / "model.safetensors"))
        # weights_only: a checkpoint file is never unpickled into arbitrary objects.
        optimizer.load_state_dict(torch.load(self.directory / "optimizer.pt", weights_only=True))
        scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(torch.tensor(saved["torch_rng"][self.context.rank], dtype=torch.uint8))
        best_file = self.directory / "best.safetensors"
        return state, (load_file(best_file) if best_file.exists() else None)

    def clear(self) -> None:
        if self.context.is_main:
            shutil.rmtree(self.directory, ignore_errors=True)


def seed_everything(seed: int, device: torch.device, num_threads: int | None) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if num_threads:
        torch.set_num_threads(num_threads)
    if device.type == "cuda":
        # bf16 and atomics are not bit-stable on GPUs: results match within tolerance only.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch.use_deterministic_algorithms(True)


def _optimizer(model, p: TrainParams) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, weight in model.named_parameters():
        (no_decay if weight.ndim < 2 or "LayerNorm" in name else decay).append(weight)
    groups = [{"params": decay, "weight_decay": p.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # Fused on the CPU as on CUDA: one kernel over all parameters instead of a loop of per-tensor ops.
    return torch.optim.AdamW(groups, lr=p.learning_rate, fused=True)


def validate(model, val: modeling.TokenData, p: TrainParams, pad_id: int, device, bf16: bool) -> dict:
    logits = modeling.predict_logits(model, val.sequences, p.eval_batch_size, pad_id, device, bf16)
    probs = modeling.softmax(logits)
    predicted = probs.argmax(axis=1)
    return {
        "val_loss": float(log_loss(val.labels, probs, labels=list(range(probs.shape[1])))),
        "val_accuracy": float(accuracy_score(val.labels, predicted)),
        "val_macro_f1": float(f1_score(val.labels, predicted, average="macro")),
    }


def train_model(
    model,
    train: modeling.TokenData,
    val: modeling.TokenData,
    p: TrainParams,
    pad_id: int,
    max_length: int,
    device: torch.device,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    checkpointer: Checkpointer | None = None,
    run_id: str | None = None,
    context: distributed.Context = distributed.SINGLE_PROCESS,
) -> TrainResult:
    """Train in place; on return the model holds the weights of its best validation epoch.

    Under DDP (`context.distributed`) every process runs this with the same data and params; each
    takes its slice of every batch, and rank 0 validates for all.
    """
    bf16 = modeling.use_bf16(p.mixed_precision, device)
    say = print if context.is_main else (lambda *_: None)  # one voice under DDP
    forward = model
    if context.distributed:
        from torch.nn.parallel import DistributedDataParallel

        # Broadcasts rank 0's weights, so every process starts from the same classifier head.
        forward = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        torch.manual_seed(p.seed + context.rank)  # independent dropout masks per process
    if p.torch_compile:
        # Dynamic padding changes the sequence length from batch to batch: one graph for all of them.
        forward = torch.compile(forward, dynamic=p.padding == "dynamic")
    generator = np.random.default_rng(p.seed)
    batches_per_epoch = math.ceil(len(train) / p.batch_size)
    total_steps = math.ceil(batches_per_epoch / p.gradient_accumulation_steps) * p.epochs
    optimizer = _optimizer(model, p)
    from transformers import get_scheduler

    scheduler = get_scheduler(
        p.lr_scheduler, optimizer,
        num_warmup_steps=round(p.warmup_ratio * total_steps), num_training_steps=total_steps,
    )
    state, best_state = LoopState(run_id=run_id), None
    resumed = checkpointer.load(generator, model, optimizer, scheduler) if checkpointer else None
    if resumed:
        state, best_state = resumed
        say(f"train: resuming from the checkpoint at epoch {state.epoch}, step {state.step}")
    samples_before = state.samples_seen
    pad_to = max_length if p.padding == "max_length" else None
    started, validation_seconds = time.perf_counter(), 0.0
    while state.epoch <= p.epochs:
        if state.batch == 0:
            state.epoch_rng = generator.bit_generator.state
        else:  # resuming mid-epoch: draw this epoch's batch order again
            generator.bit_generator.state = state.epoch_rng
        batches = modeling.length_grouped_batches(train.lengths, p.batch_size, generator, p.group_by_length)
        forward.train()
        progress = tqdm(total=len(batches), initial=state.batch, desc=f"epoch {state.epoch}",
                        unit="batch", mininterval=10, disable=not context.is_main)
        for i in range(state.batch, len(batches)):
            index = batches[i]
            rows, weight = distributed.shard(index, context)
            input_ids, mask = modeling.collate([train.sequences[j] for j in rows], pad_id, pad_to)
            labels = modeling.to_device(torch.from_numpy(train.labels[rows]), device)
            steps_now = not (i + 1) % p.gradient_accumulation_steps or i + 1 == len(batches)
            # DDP all-reduces gradients only on the micro-batch that ends an accumulation.
            with forward.no_sync() if context.distributed and not steps_now else nullcontext():
                with modeling.autocast(device, bf16):
                    loss = forward(input_ids=modeling.to_device(input_ids, device),
                                   attention_mask=modeling.to_device(mask, device), labels=labels).loss
                (loss * weight / p.gradient_accumulation_steps).backward()
            batch_loss = distributed.sum_over_processes(loss.item() * weight, context) / context.world_size
            state.epoch_loss += batch_loss
            state.window_loss += batch_loss
            state.window_batches += 1
            state.samples_seen += len(index)
            progress.update()
            if not steps_now:
                continue
            torch.nn.utils.clip_grad_norm_(model.parameters(), p.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.batch = i + 1
            if state.step % p.log_every_steps == 0:
                state.steps.append({"step": state.step, "epoch": state.epoch,
                                    "train_loss": state.window_loss / state.window_batches,
                                    "learning_rate": scheduler.get_last_lr()[0]})
                state.window_loss, state.window_batches = 0.0, 0
                if on_step:
                    on_step(state.step, {k: state.steps[-1][k] for k in ("train_loss", "learning_rate")})
            if checkpointer and state.batch < len(batches):  # an epoch's last step saves after validation
                checkpointer.after_step(state, generator, model, optimizer, scheduler, best_state, epoch_end=False)
        progress.close()
        validation_started = time.perf_counter()
        scores = distributed.from_main(validate(model, val, p, pad_id, device, bf16) if context.is_main else None,
                                    context)
        validation_seconds += time.perf_counter() - validation_started
        state.history.append({"epoch": state.epoch, "train_loss": state.epoch_loss / len(batches), **scores,
                              "learning_rate": scheduler.get_last_lr()[0]})
        say(f"train: epoch {state.epoch}: " + ", ".join(f"{k}={v:.4f}" for k, v in state.history[-1].items()))
        if scores["val_macro_f1"] > state.best_f1:
            state.best_f1, state.best_epoch, state.stale = scores["val_macro_f1"], state.epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            state.stale += 1
        state.epoch, state.batch, state.epoch_loss = state.epoch + 1, 0, 0.0
        if state.stale >= p.early_stopping_patience:
            say(f"train: early stop after epoch {state.epoch - 1} (best epoch {state.best_epoch})")
            break
        if checkpointer and state.epoch <= p.epochs:
            checkpointer.after_step(state, generator, model, optimizer, scheduler, best_state, epoch_end=True)
    model.load_state_dict(best_state)
    return TrainResult(state.history, state.steps, state.best_epoch, state.samples_seen - samples_before,
                       time.perf_counter() - started - validation_seconds)


def history_csv(history: list[dict[str, float]], fields: tuple[str, ...] = HISTORY_FIELDS) -> str:
    """Per-epoch rows (HISTORY_FIELDS) or, with STEP_FIELDS, per-step rows as CSV."""
    return storage.csv_text(list(fields), [[row[f] for f in fields] for row in history])


def save_model(model, model_source: str, params: Params) -> None:
    """Weights as safetensors, config and tokenizer: a self-contained Hugging Face directory, with the
    recipe (`prediction.Recipe`: cleaning, max_length, truncation) that new records need to be scored as
    the test split was. The tokenizer truncates from the side nearest tokenize.truncation, for whoever
    uses it on its own."""
    recipe = prediction.Recipe.of(params)
    tokenizer = encoding.load_tokenizer(model_source, recipe.truncation.tokenizer_side)
    with storage.atomic_dir(paths.MODEL_DIR) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        recipe.write(tmp)


def checkpoint_dir(params: Params, inputs: dict[str, Path]) -> Path:
    """One directory per (params, inputs): a checkpoint is never resumed into a different run."""
    computing = {k: v for k, v in params.train.model_dump().items() if k not in _OBSERVATION_ONLY}
    key = json.dumps({"train": computing, "max_length": params.tokenize.max_length,
                      "model": params.model.name_or_path, "labels": params.ingest.class_names,
                      "inputs": {name: storage.file_md5(path) for name, path in inputs.items()}}, sort_keys=True)
    return paths.CHECKPOINT_ROOT / hashlib.sha256(key.encode()).hexdigest()[:16]



def stop_on_signals(checkpointer: Checkpointer) -> None:
    """SIGINT and SIGTERM ask for a checkpoint at the next step, after which the run stops
    (`Checkpointer.after_step` raises TrainingInterrupted)."""

    def request_stop(signum, _frame):
        checkpointer.stop_requested = signum
        print(f"train: {signal.Signals(signum).name}: saving a checkpoint at the next step", file=sys.stderr)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, request_stop)


def train_report(result: TrainResult, device: torch.device, train_rows: int,
                 cpu_kernels: dict[str, str]) -> dict[str, Any]:
    """reports/train.json: the best epoch's validation scores and where the weights were computed; on the
    CPU, which kernels they are exact for (`reprolab audit` compares them)."""
    best = result.history[result.best_epoch - 1]
    report = {"best_epoch": result.best_epoch, "epochs_run": len(result.history), "device": device.type,
              "train_rows": train_rows, **{f"best_{k}": v for k, v in best.items() if k.startswith("val_")}}
    if device.type == "cpu":
        report["cpu_kernels"] = cpu_kernels
    return report
