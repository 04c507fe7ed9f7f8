"""The student's objective and the teacher's stored logits, against hand-computed values."""

from __future__ import annotations

import math
import re
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from reprolab.encoding.labels import IGNORED
from reprolab.errors import StageError
from reprolab.model import distillation, runtime
from reprolab.model.loop import HardLabels
from reprolab.params import ParamsError, parse_params
from reprolab.tasks.sequence_classification import SequenceClassification
from reprolab.tasks.token_classification import TokenClassification
from tests.conftest import fixture_params_raw


def softmax(values: list[float]) -> list[float]:
    exp = [math.exp(v) for v in values]
    return [e / sum(exp) for e in exp]


def kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))


def test_the_soft_loss_is_the_kl_of_the_softened_distributions_times_t_squared():
    student, teacher = [[1.0, -1.0], [0.0, 2.0]], [[3.0, 0.0], [0.5, 0.5]]
    temperature = 2.0
    expected = (
        sum(
            kl(softmax([t / temperature for t in row_t]), softmax([s / temperature for s in row_s]))
            for row_s, row_t in zip(student, teacher, strict=True)
        )
        / 2
        * temperature**2
    )
    loss = distillation.soft_target_loss(
        torch.tensor(student), torch.tensor(teacher), torch.tensor([0, 1]), temperature
    )
    assert loss.item() == pytest.approx(expected, rel=1e-5)  # float32
    same = distillation.soft_target_loss(torch.tensor(teacher), torch.tensor(teacher), torch.tensor([0, 1]), 3.0)
    assert same.item() == pytest.approx(0.0, abs=1e-7)


def test_per_position_the_soft_loss_counts_the_positions_the_task_counts():
    """A tagger's padded and continuation positions (IGNORED) are left out, however far apart the
    two models are there."""
    student = torch.tensor([[[1.0, 0.0], [9.0, -9.0], [0.0, 0.0]]])
    teacher = torch.tensor([[[0.0, 1.0], [-9.0, 9.0], [0.0, 0.0]]])
    labels = torch.tensor([[1, IGNORED, IGNORED]])
    expected = kl(softmax([0.0, 1.0]), softmax([1.0, 0.0]))  # T = 1: the first position only
    assert distillation.soft_target_loss(student, teacher, labels, 1.0).item() == pytest.approx(
        expected, rel=1e-5
    )  # float32


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_alpha_weighs_the_soft_loss_against_the_tasks_loss_of_the_true_labels(alpha):
    logits, teacher, labels = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 2.0]]), torch.tensor([0])
    hard = HardLabels(SequenceClassification(), None)
    objective = distillation.Distillation(hard, temperature=2.0, alpha=alpha)
    soft = distillation.soft_target_loss(logits, teacher, labels, 2.0)
    true = torch.nn.functional.cross_entropy(logits, labels)
    assert objective(logits, labels, teacher).item() == pytest.approx((alpha * soft + (1 - alpha) * true).item())
    with pytest.raises(StageError, match="without the teacher's logits"):
        objective(logits, labels, None)


class FixedLogits(torch.nn.Module):
    """A stand-in teacher: logits a fixed function of the token ids, per text or per position."""

    def __init__(self, per_position: bool):
        super().__init__()
        self.per_position = per_position
        self.config = SimpleNamespace(pad_token_id=0)

    def forward(self, input_ids, attention_mask=None):
        ids = input_ids.float()
        logits = torch.stack([ids, -ids], dim=-1)
        return SimpleNamespace(logits=logits if self.per_position else logits.sum(dim=1))


@pytest.mark.parametrize("per_position", [False, True], ids=["per-text", "per-position"])
def test_stored_teacher_logits_come_back_with_their_rows_and_follow_a_sample(tmp_path, per_position):
    sequences = [np.array([3, 4, 5], np.int32), np.array([6], np.int32), np.array([7, 8], np.int32)]
    if per_position:
        labels = [np.array([1, IGNORED, 0]), np.array([0]), np.array([1, 1])]
        rows = runtime.TokenData(["a", "b", "c"], sequences, labels, [np.arange(len(s)) for s in sequences])
    else:
        rows = runtime.TokenData(["a", "b", "c"], sequences, np.array([0, 1, 0]))
    path = tmp_path / "teacher.parquet"
    pq.write_table(distillation.teacher_logits(FixedLogits(per_position), rows, 2, torch.device("cpu")), path)
    attached = distillation.with_teacher_logits(rows, path, classes=2)
    if per_position:
        assert attached.teacher_logits[0].tolist() == [[3.0, -3.0], [4.0, -4.0], [5.0, -5.0]]
    else:
        assert attached.teacher_logits[2].tolist() == [15.0, -15.0]
    picked = attached.take(np.array([2, 0]))
    assert picked.ids == ["c", "a"]
    assert [t.tolist() for t in picked.teacher_logits] == [
        attached.teacher_logits[2].tolist(),
        attached.teacher_logits[0].tolist(),
    ]
    dataset = runtime.TokenDataset(picked)
    assert dataset[0][2].tolist() == attached.teacher_logits[2].tolist()


def test_teacher_logits_of_other_rows_or_another_label_set_are_refused(tmp_path):
    rows = runtime.TokenData(["a", "b"], [np.array([3], np.int32), np.array([4], np.int32)], np.array([0, 1]))
    path = tmp_path / "teacher.parquet"
    pq.write_table(distillation.teacher_logits(FixedLogits(False), rows, 8, torch.device("cpu")), path)
    other = runtime.TokenData(["a", "z"], rows.sequences, rows.labels)
    with pytest.raises(StageError, match="not the teacher's logits of the training rows"):
        distillation.with_teacher_logits(other, path, classes=2)
    with pytest.raises(StageError, match="not 3 classes a row"):
        distillation.with_teacher_logits(rows, path, classes=3)
    pq.write_table(pa.table({"id": ["a", "b"], "logits": [1, 2]}), path)
    with pytest.raises(StageError, match="not the teacher's logits"):
        distillation.with_teacher_logits(rows, path, classes=2)


def distill_params(**distill):
    raw = fixture_params_raw()
    return parse_params({**raw, "distill": {**raw["distill"], **distill}})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"student_layers": [2, 0]},
            "distill: student_layers [2, 0]: each layer once, in increasing order",
        ),
        ({"student_layers": [1, 1]}, "each layer once"),
        ({"student_layers": []}, "distill.student_layers"),
        ({"alpha": 1.5}, "distill.alpha"),
        ({"temperature": 0}, "distill.temperature"),
        ({"init": "random"}, "distill.init"),
        ({"epoch": 2}, "distill.epoch: unknown key (allowed here: alpha, epochs, init, learning_rate, "),
    ],
)
def test_bad_distill_params_fail_naming_the_key(change, message):
    with pytest.raises(ParamsError, match=re.escape(message)):
        distill_params(**change)


def test_the_student_trains_with_trains_settings_but_its_own_epochs_and_rate_in_full_in_one_process():
    params = distill_params(epochs=3, learning_rate=5e-4)
    raw = fixture_params_raw()
    teacher = params.train.model_copy(update={"method": "lora", "num_processes": 2})
    p = params.distill.train_params(teacher)
    assert (p.epochs, p.learning_rate, p.method, p.num_processes) == (3, 5e-4, "full", 1)
    assert p.batch_size == raw["train"]["batch_size"] and p.seed == raw["train"]["seed"]
    no_student = {k: v for k, v in raw.items() if k != "distill"}
    assert parse_params(no_student).distill is None


def test_a_tagger_student_collates_its_teacher_logits_beside_its_labels():
    task = TokenClassification()
    rows = [(np.array([5, 6]), np.array([1, IGNORED]), np.ones((2, 3), np.float32))]
    batch = runtime.Collator(task, pad_id=0, pad_to=4)(rows)
    assert batch["labels"].shape == (1, 4) and batch["teacher_logits"].shape == (1, 4, 3)
