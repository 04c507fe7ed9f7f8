"""Knowledge distillation (Hinton et al. 2015): a student with fewer encoder layers, trained on the
fine-tuned teacher's temperature-softened outputs beside the true labels.

The student keeps chosen layers of an encoder with their weights, as DistilBERT was made from BERT
(every other layer): the teacher's, head included, or the pretrained encoder's with a fresh head.
The teacher's logits of the training rows are computed once (`teacher_logits`, the teacher_logits
stage) and stored a row each, so the student's epochs, and experiments on its temperature, alpha or
layers, never run the teacher again. The objective (`Distillation`) takes either task's logits, per
text (rows, classes) or per position (rows, positions, classes): it counts the rows or positions the
task's loss counts (labels not IGNORED).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from reprolab.encoding import encoder
from reprolab.encoding.labels import IGNORED
from reprolab.errors import StageError
from reprolab.model import runtime
from reprolab.model.loop import HardLabels
from reprolab.params import DistillParams
from reprolab.tasks.base import Task

TEACHER_SCHEMA = pa.schema([("id", pa.string()), ("logits", pa.list_(pa.float32()))])


def encoder_layers(model) -> torch.nn.ModuleList:
    """The stack of transformer layers of a BERT-family encoder (BERT, RoBERTa, ELECTRA, MiniLM)."""
    layers = getattr(getattr(model.base_model, "encoder", None), "layer", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise StageError(
            f"distill: a {type(model.base_model).__name__} has no encoder.layer stack to keep layers of "
            "(BERT-family encoders have one); point model.name_or_path at one"
        )
    return layers


def keep_layers(model, layers: list[int]):
    """A copy of `model` with only the encoder `layers` (their weights, in that order), its embeddings
    and its head: a shallower network of the same class, saved and loaded like any other."""
    stack = encoder_layers(model)
    outside = [i for i in layers if i >= len(stack)]
    if outside:
        raise StageError(
            f"distill.student_layers: {outside} not among the encoder's {len(stack)} layers (0 to {len(stack) - 1})"
        )
    student = copy.deepcopy(model)
    student.base_model.encoder.layer = torch.nn.ModuleList(encoder_layers(student)[i] for i in layers)
    student.config.num_hidden_layers = len(layers)
    return student


def student(teacher, d: DistillParams, pretrained: str, task: Task):
    """The student `d` describes: `d.student_layers` of the teacher (init teacher) or of the pretrained
    encoder with a head drawn from the current seed (init pretrained), for the teacher's labels."""
    if d.init == "teacher":
        return keep_layers(teacher, d.student_layers)
    config = teacher.config
    labels = [config.id2label[i] for i in range(config.num_labels)]
    return keep_layers(runtime.load_model(task, encoder.resolve_model(pretrained), labels), d.student_layers)


def soft_target_loss(
    logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, temperature: float
) -> torch.Tensor:
    """KL(teacher || student) of the temperature-softened distributions times T^2 (which keeps its
    gradients' scale as T changes, Hinton et al.), averaged over the rows or positions `labels` counts."""
    counted = labels != IGNORED
    student_log = torch.log_softmax(logits.float()[counted] / temperature, dim=-1)
    teacher_log = torch.log_softmax(teacher_logits.float()[counted] / temperature, dim=-1)
    kl = torch.nn.functional.kl_div(student_log, teacher_log, log_target=True, reduction="batchmean")
    return kl * temperature**2


@dataclass(frozen=True)
class Distillation:
    """A student's objective: alpha x the soft-target loss + (1 - alpha) x the task's loss of the true
    labels (`hard`)."""

    hard: HardLabels
    temperature: float
    alpha: float

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor | None):
        if teacher_logits is None:
            raise StageError("distill: a training batch came without the teacher's logits")
        soft = soft_target_loss(logits, teacher_logits, labels, self.temperature)
        return self.alpha * soft + (1 - self.alpha) * self.hard(logits, labels)


def teacher_logits(teacher, rows: runtime.TokenData, batch_size: int, device: torch.device) -> pa.Table:
    """The teacher's logits of each row, in row order: its classes, or its positions' classes one
    position after another (flattened)."""
    pad_id = teacher.config.pad_token_id or 0
    flat = runtime.predict_logits(teacher, rows.sequences, batch_size, pad_id, device)
    per_row = np.split(flat, np.cumsum(rows.lengths)[:-1]) if rows.per_position else list(flat)
    values = pa.array([row.ravel() for row in per_row], type=pa.list_(pa.float32()))
    return pa.table({"id": rows.ids, "logits": values}, schema=TEACHER_SCHEMA)


def with_teacher_logits(rows: runtime.TokenData, path: Path, classes: int) -> runtime.TokenData:
    """`rows` with the teacher's logits of each (`teacher_logits`' table at `path`), checked to be of
    these very rows and of `classes` classes."""
    table = pq.read_table(path)
    if not table.schema.equals(TEACHER_SCHEMA) or table["id"].to_pylist() != rows.ids:
        raise StageError(f"{path}: not the teacher's logits of the training rows; run `dvc repro` to recompute them")
    logits = runtime.list_arrays(table["logits"])
    expected = [len(seq) * classes if rows.per_position else classes for seq in rows.sequences]
    if [len(row) for row in logits] != expected:
        raise StageError(f"{path}: the logits are not {classes} classes a row or position; run `dvc repro`")
    return rows.with_teacher_logits([row.reshape(-1, classes) if rows.per_position else row for row in logits])
