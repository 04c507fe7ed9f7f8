"""The training loop: epochs of accumulated, clipped optimizer steps on accelerate, with step logging,
validation, early stopping on validation macro-F1 and checkpoints the processes agree on.

`TrainingLoop` receives what `training.train_model` prepared (the model accelerate wraps, optimizer,
scheduler, loader, the objective: the task's loss, or a student's distillation loss) and runs it;
its state is a `checkpoints.LoopState`, so a run resumed from a checkpoint continues with the batch,
sums and history it stopped at.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from tqdm import tqdm

from reprolab.model import runtime
from reprolab.model.checkpoints import Checkpointer, LoopState, TrainingInterrupted
from reprolab.params import TrainParams
from reprolab.tasks.base import Task


@dataclass
class TrainResult:
    history: list[dict[str, float]]  # per epoch, training.history_fields
    steps: list[dict[str, float]]  # per logged step, training.STEP_FIELDS (a resumed run's include those before)
    best_epoch: int
    samples_seen: int  # by all processes in this run (a resumed run counts from its checkpoint)
    seconds: float  # training only, validation excluded
    mixed_precision: str  # accelerate's: no (fp32), bf16 or fp16
    trainable_parameters: int


class Objective(Protocol):
    """A batch's training loss, from the model's logits, the true labels and, for a student, the
    teacher's logits (None otherwise)."""

    def __call__(
        self, logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor | None
    ) -> torch.Tensor: ...


@dataclass(frozen=True)
class HardLabels:
    """Fine-tuning's objective: the task's loss of the true labels, class weights optional."""

    task: Task
    weight: torch.Tensor | None

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor | None = None):
        return self.task.loss(logits, labels, self.weight)


def summed(accelerator, value: torch.Tensor) -> float:
    """A per-process number summed over the processes (a collective: all of them call it together)."""
    if accelerator.num_processes == 1:
        return float(value)
    return float(accelerator.reduce(value.to(accelerator.device, copy=True), "sum"))


def validate(accelerator, task: Task, model, val: runtime.TokenData, p: TrainParams, pad_id: int) -> dict:
    """The task's validation scores; each process scores its share of the rows and every process gets them all."""
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
    config = model.config
    return task.validation_scores(val, probs, [config.id2label[i] for i in range(config.num_labels)])


class TrainingLoop:
    """One run of the prepared pieces over `p.epochs`; every process of a job runs it with the same data."""

    def __init__(
        self,
        accelerator,
        task: Task,
        model,
        forward,
        optimizer,
        scheduler,
        loader,
        batches: runtime.EpochBatches,
        objective: Objective,
        p: TrainParams,
        checkpointer: Checkpointer | None = None,
        on_step: Callable[[int, dict[str, float]], None] | None = None,
        stage: str = "train",  # who speaks in its messages: train, or distill
    ):
        self.accelerator, self.task, self.model, self.forward = accelerator, task, model, forward
        self.optimizer, self.scheduler, self.loader, self.batches = optimizer, scheduler, loader, batches
        self.objective, self.p, self.checkpointer, self.on_step = objective, p, checkpointer, on_step
        self.processes, self.stage = accelerator.num_processes, stage
        self.state = LoopState()
        self.best: dict[str, torch.Tensor] | None = None  # the best epoch's weights

    def resume(self, run_id: str | None) -> None:
        """Continue from the checkpointer's latest checkpoint, if there is one; else start, as `run_id`."""
        self.state = LoopState(run_id=run_id)
        resumed = self.checkpointer.load(self.accelerator) if self.checkpointer else None
        if resumed:
            self.state, self.best = resumed
            self.accelerator.print(
                f"{self.stage}: resuming from the checkpoint at epoch {self.state.epoch}, step {self.state.step}"
            )

    def run(self, val: runtime.TokenData, pad_id: int) -> tuple[float, int]:
        """Train to the last epoch or an early stop: (seconds training, validation excluded; samples this run)."""
        state, device = self.state, self.accelerator.device
        samples_before = summed(self.accelerator, torch.tensor(state.samples_seen))
        # Running sums stay on the device (float64: the order of additions is the only rounding); they are
        # read at logging steps and epoch ends only, so no step waits for the device.
        self.epoch_loss = torch.tensor(state.epoch_loss, dtype=torch.float64, device=device)
        self.window_loss = torch.tensor(state.window_loss, dtype=torch.float64, device=device)
        self.samples = torch.tensor(state.samples_seen, dtype=torch.int64, device=device)
        started, validation_seconds = time.perf_counter(), 0.0
        while state.epoch <= self.p.epochs:
            self._train_epoch()
            validation_started = time.perf_counter()
            scores = validate(self.accelerator, self.task, self.model, val, self.p, pad_id)
            validation_seconds += time.perf_counter() - validation_started
            if self._end_epoch(scores):
                break
        seconds = time.perf_counter() - started - validation_seconds
        return seconds, int(summed(self.accelerator, self.samples) - samples_before)

    def _train_epoch(self) -> None:
        state = self.state
        self.batches.use_epoch(state.epoch)
        self.forward.train()
        epoch_batches = self.accelerator.skip_first_batches(self.loader, state.batch) if state.batch else self.loader
        progress = tqdm(
            total=len(self.loader),
            initial=state.batch,
            desc=f"epoch {state.epoch}",
            unit="batch",
            mininterval=10,
            disable=not self.accelerator.is_local_main_process,
        )
        for batch in epoch_batches:
            self._train_batch(batch)
            progress.update()
            if self.accelerator.sync_gradients:
                self._after_step()
        progress.close()

    def _train_batch(self, batch: dict[str, torch.Tensor]) -> None:
        accelerator, p = self.accelerator, self.p
        labels = batch.pop("labels")
        teacher_logits = batch.pop("teacher_logits", None)
        with accelerator.accumulate(self.forward):
            loss = self.objective(self.forward(**batch).logits, labels, teacher_logits)
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(self.forward.parameters(), p.max_grad_norm)
            self.optimizer.step()
            if accelerator.sync_gradients and not accelerator.optimizer_step_was_skipped:
                self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.epoch_loss += loss.detach()
        self.window_loss += loss.detach()
        self.samples += len(labels)
        self.state.batch += 1
        self.state.window_batches += 1

    def _after_step(self) -> None:
        """Log every log_every_steps optimizer steps; check for a signal or a due checkpoint."""
        state, checkpointer = self.state, self.checkpointer
        state.step += 1
        logging_step = state.step % self.p.log_every_steps == 0
        if logging_step:
            self._log_step()
        # One process checks every step; a job agrees at logging steps and step-count checkpoints,
        # so no step waits on a collective. An epoch's last step saves after validation.
        step_due = bool(checkpointer and checkpointer.every_steps and state.step % checkpointer.every_steps == 0)
        if checkpointer and state.batch < len(self.loader) and (self.processes == 1 or logging_step or step_due):
            self._stop_or_save(checkpointer.due_here(state.step))

    def _log_step(self) -> None:
        state = self.state
        mean = summed(self.accelerator, self.window_loss) / (state.window_batches * self.processes)
        state.steps.append(
            {
                "step": state.step,
                "epoch": state.epoch,
                "train_loss": mean,
                "learning_rate": self.scheduler.get_last_lr()[0],
            }
        )
        self.window_loss.zero_()
        state.window_batches = 0
        if self.on_step:
            self.on_step(state.step, {k: state.steps[-1][k] for k in ("train_loss", "learning_rate")})

    def _end_epoch(self, scores: dict[str, float]) -> bool:
        """Record the epoch, keep its weights if best; True when early stopping ends the run."""
        state = self.state
        train_loss = summed(self.accelerator, self.epoch_loss) / (state.batch * self.processes)
        state.history.append(
            {
                "epoch": state.epoch,
                "step": state.step,
                "train_loss": train_loss,
                **scores,
                "learning_rate": self.scheduler.get_last_lr()[0],
            }
        )
        self.accelerator.print(
            f"{self.stage}: epoch {state.epoch} (step {state.step}): "
            + ", ".join(f"{k}={v:.4f}" for k, v in state.history[-1].items() if k not in ("epoch", "step"))
        )
        if scores[self.task.selection_score] > state.best_f1:
            state.best_f1, state.best_epoch, state.stale = scores[self.task.selection_score], state.epoch, 0
            self.best = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        else:
            state.stale += 1
        state.epoch, state.batch = state.epoch + 1, 0
        self.epoch_loss.zero_()
        if state.stale >= self.p.early_stopping_patience:
            self.accelerator.print(
                f"{self.stage}: early stop after epoch {state.epoch - 1} (best epoch {state.best_epoch})"
            )
            return True
        if self.checkpointer and state.epoch <= self.p.epochs:
            self._stop_or_save(True)
        return False

    def _snapshot(self) -> LoopState:
        """The loop state with its sums over all processes, for a checkpoint."""
        return LoopState(
            **{
                **self.state.to_json(),
                "epoch_loss": summed(self.accelerator, self.epoch_loss),
                "window_loss": summed(self.accelerator, self.window_loss),
                "samples_seen": int(summed(self.accelerator, self.samples)),
            }
        )

    def _stop_or_save(self, due_here: bool) -> None:
        """Agree over the processes whether a signal arrived or a save is due; save, and stop on a signal."""
        flags = torch.tensor([self.checkpointer.stop_requested, due_here], device=self.accelerator.device)
        if self.processes > 1:
            flags = self.accelerator.gather(flags).view(self.processes, 2).amax(dim=0)
        stop, due = int(flags[0]), bool(flags[1])
        if stop or due:
            self.checkpointer.save(self.accelerator, self._snapshot(), self.best)
        if stop:
            self.checkpointer.stop_requested = stop
            raise TrainingInterrupted(f"checkpoint saved at step {self.state.step}")
