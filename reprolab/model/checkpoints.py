"""Training checkpoints: accelerate's `save_state` / `load_state` plus the loop's position.

A checkpoint is a folder `step-<N>` under `checkpoints/train/<fingerprint>/` (outside DVC's outputs,
which DVC deletes before a stage re-runs): the weights (safetensors), optimizer, scheduler and every
process's RNG states as accelerate writes them, and `loop.json` (epoch, step, losses so far, history).
`latest.json` names the newest complete one; it is written last, so a run killed while saving resumes
from the previous checkpoint. The best epoch's weights are written once, when that epoch ends, not
with every checkpoint. Each machine keeps its own copy (accelerate's `save_on_each_node`).

Loading is device-agnostic: accelerate loads weights and optimizer state onto the CPU and then into
the model wherever it lives, so a checkpoint saved on a GPU resumes on the CPU and the other way round.
The CUDA RNG state is saved where there is one and restored where there is a GPU.
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from reprolab import storage

LATEST = "latest.json"
LOOP = "loop.json"


class TrainingInterrupted(Exception):
    """SIGINT/SIGTERM arrived; a checkpoint was saved first."""


@dataclass
class LoopState:
    """Everything besides tensors that a resumed run needs to continue exactly where it stopped.

    The loss and sample sums are this process's own while training; in a checkpoint they are the
    sums over all processes, which process 0 takes back on resuming (the others start from zero)."""

    epoch: int = 1  # current epoch, from 1
    batch: int = 0  # micro-batches of the epoch this process has done
    step: int = 0  # optimizer steps taken
    samples_seen: int = 0
    epoch_loss: float = 0.0
    window_loss: float = 0.0
    window_batches: int = 0
    best_f1: float = -1.0
    best_epoch: int = 0
    stale: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    steps: list[dict[str, float]] = field(default_factory=list)  # the logged steps, training.STEP_FIELDS
    run_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Checkpointer:
    """Saves and restores the training state in `directory`: every `every_steps` optimizer steps, every
    `every_minutes` of wall clock (0 turns either off), at epoch ends, and when a signal asks."""

    def __init__(self, directory: Path, every_steps: int = 0, every_minutes: float = 0.0, stage: str = "train"):
        self.directory, self.stage = directory, stage
        self.every_steps = every_steps
        self.every_seconds = every_minutes * 60
        self.stop_requested = 0  # the signal number once SIGINT/SIGTERM arrived
        self.last_save = time.monotonic()

    def due_here(self, step: int) -> bool:
        """Whether this process wants a checkpoint after `step` (the processes agree before saving)."""
        return bool(
            self.stop_requested
            or (self.every_steps and step % self.every_steps == 0)
            or (self.every_seconds and time.monotonic() - self.last_save >= self.every_seconds)
        )

    def _latest(self) -> Path | None:
        pointer = self.directory / LATEST
        if not pointer.exists():
            return None
        return self.directory / json.loads(pointer.read_text())["checkpoint"]

    def peek(self) -> LoopState | None:
        latest = self._latest()
        return LoopState(**json.loads((latest / LOOP).read_text())) if latest else None

    def _best_file(self, epoch: int) -> Path:
        return self.directory / f"best-epoch-{epoch}.safetensors"

    def save(self, accelerator, state: LoopState, best: dict[str, torch.Tensor] | None) -> None:
        """Every process calls this together; `state` holds the sums over all processes."""
        folder = self.directory / f"step-{state.step}"
        local_main = accelerator.is_local_main_process
        if local_main:
            shutil.rmtree(folder, ignore_errors=True)  # a save killed halfway, never named in latest.json
            folder.mkdir(parents=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(folder))
        if local_main:
            if best is not None and not self._best_file(state.best_epoch).exists():
                # Atomic: a file cut short by a kill would exist, and so never be written again.
                with storage.atomic_path(self._best_file(state.best_epoch)) as tmp:
                    save_file({k: v.contiguous() for k, v in best.items()}, tmp)
            (folder / LOOP).write_text(json.dumps(state.to_json()))
        accelerator.wait_for_everyone()  # every process's RNG file is in place
        if local_main:
            storage.write_json({"checkpoint": folder.name}, self.directory / LATEST)
            keep = (folder, self._best_file(state.best_epoch))
            for old in self.directory.iterdir():
                if old.name.startswith(("step-", "best-epoch-")) and old not in keep:
                    shutil.rmtree(old) if old.is_dir() else old.unlink()
        self.last_save = time.monotonic()

    def load(self, accelerator) -> tuple[LoopState, dict[str, torch.Tensor] | None] | None:
        """Restore the prepared model, optimizer, registered scheduler and RNG states from the latest
        checkpoint; the loop state, with the sums given to process 0 only, and the best weights."""
        latest = self._latest()
        if latest is None:
            return None
        accelerator.load_state(str(latest), map_location="cpu")
        state = LoopState(**json.loads((latest / LOOP).read_text()))
        if not accelerator.is_main_process:
            state.samples_seen, state.epoch_loss, state.window_loss = 0, 0.0, 0.0
        best_file = self._best_file(state.best_epoch)
        return state, (load_file(best_file) if best_file.exists() else None)

    def clear(self, accelerator) -> None:
        if accelerator.is_local_main_process:
            shutil.rmtree(self.directory, ignore_errors=True)

    def stop_on_signals(self) -> None:
        """SIGINT and SIGTERM ask for a checkpoint at the next point where the processes agree, after
        which the run stops (the loop raises TrainingInterrupted)."""

        def request_stop(signum, _frame):
            self.stop_requested = signum
            print(f"{self.stage}: {signal.Signals(signum).name}: saving a checkpoint at the next step", file=sys.stderr)

        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, request_stop)
