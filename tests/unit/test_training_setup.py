"""The training loop's parts that need no weights: epoch batches, collation, class weights, precision,
the launch command and the checkpoint fingerprint."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.utils.class_weight import compute_class_weight

from reprolab import paths
from reprolab.errors import StageError
from reprolab.model import launching, runtime, training
from reprolab.params import parse_params
from reprolab.tasks.sequence_classification import SequenceClassification
from reprolab.tasks.token_classification import TokenClassification
from tests.conftest import fixture_params_raw, train_params

TAGGER = TokenClassification()


def test_epoch_batches_are_each_epochs_draw_whatever_epoch_a_run_starts_at():
    """Epoch e's batches are the e-th draw of one generator seeded once (what an uninterrupted run
    sees), whether the sampler went through epochs 1..e-1 first or a resumed run starts at e."""
    lengths = np.random.default_rng(0).integers(5, 60, size=103)
    generator = np.random.default_rng(7)
    straight = [runtime.length_grouped_batches(lengths, 8, generator) for _ in range(3)]
    batches = runtime.EpochBatches(lengths, 8, seed=7, group=True)
    for epoch in (3, 1, 2):
        batches.use_epoch(epoch)
        assert [b for b in batches] == [b.tolist() for b in straight[epoch - 1]]
        assert len(batches) == 13
    assert straight[0][0].tolist() != straight[1][0].tolist()  # epochs differ
    assert batches.batch_size is None  # so accelerate shards whole batches of varying size


def test_collator_pads_to_a_multiple_and_leaves_out_a_mask_with_nothing_to_mask():
    collate = runtime.Collator(SequenceClassification(), pad_id=0, multiple_of=8)
    batch = collate([(np.array([5, 6, 7]), 1, None), (np.array([8]), 0, None)])
    assert batch["input_ids"].shape == (2, 8) and batch["labels"].tolist() == [1, 0]
    assert batch["attention_mask"][0].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    assert "teacher_logits" not in batch
    assert "attention_mask" not in runtime.Collator(SequenceClassification(), pad_id=0)(
        [(np.array([5, 6]), 1, None), (np.array([7, 8]), 0, None)]
    )
    padded = runtime.Collator(SequenceClassification(), pad_id=0, pad_to=5)([(np.array([5]), 0, None)])
    assert padded["input_ids"].shape == (1, 5)


def test_the_collator_carries_a_students_teacher_logits_per_row_and_per_position_zero_padded():
    per_row = runtime.Collator(SequenceClassification(), pad_id=0)(
        [(np.array([5, 6]), 1, np.array([0.5, -0.5], np.float32)), (np.array([7]), 0, np.array([2.0, 1.0], np.float32))]
    )
    assert per_row["teacher_logits"].tolist() == [[0.5, -0.5], [2.0, 1.0]]
    tagger = runtime.Collator(TAGGER, pad_id=0)
    short, long = np.array([[1.0, 2.0]], np.float32), np.array([[3.0, 4.0], [5.0, 6.0], [7.0, 8.0]], np.float32)
    per_position = tagger([(np.array([5]), np.array([1]), short), (np.array([6, 7, 8]), np.array([0, 1, 0]), long)])
    assert per_position["teacher_logits"].tolist() == [[[1.0, 2.0], [0.0, 0.0], [0.0, 0.0]], long.tolist()]


def test_balanced_class_weights_are_scikit_learns():
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2])
    weights = training.class_weights(labels, 3, "balanced")
    np.testing.assert_allclose(
        weights.numpy(), compute_class_weight("balanced", classes=np.arange(3), y=labels), rtol=1e-6
    )
    assert training.class_weights(labels, 3, "none") is None
    with pytest.raises(StageError, match=r"class ids \[3\] have no training rows"):
        training.class_weights(labels, 4, "balanced")


@pytest.mark.parametrize(
    ("requested", "device", "bf16", "expected"),
    [
        ("auto", "cpu", False, "no"),
        ("auto", "cuda", True, "bf16"),
        ("auto", "cuda", False, "fp16"),  # a GPU without bf16 (V100, T4): fp16 with a loss scaler
        ("no", "cuda", True, "no"),
        ("fp16", "cuda", True, "fp16"),
    ],
)
def test_mixed_precision_is_bf16_only_where_supported(monkeypatch, requested, device, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *_, **__: bf16)
    assert runtime.mixed_precision(requested, torch.device(device)) == expected


def test_mixed_precision_refusals_say_what_to_use(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *_, **__: False)
    with pytest.raises(StageError, match="this GPU has no bf16"):
        runtime.mixed_precision("bf16", torch.device("cuda"))
    with pytest.raises(StageError, match="needs a CUDA device"):
        runtime.mixed_precision("bf16", torch.device("cpu"))


def test_launch_command_names_every_setting_of_the_job():
    p = train_params(
        num_processes=4, num_machines=2, machine_rank=1, main_process_ip="10.0.0.5", main_process_port=29555
    )
    argv = launching.launch_command("stages.train", p)
    assert argv[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    for option in (
        "--multi_gpu",
        "--num_processes=8",
        "--num_machines=2",
        "--machine_rank=1",
        "--main_process_ip=10.0.0.5",
        "--main_process_port=29555",
    ):
        assert option in argv
    assert argv[-2:] == ["--module", "stages.train"]


@pytest.fixture
def fingerprinted(tmp_path, monkeypatch) -> dict[str, Path]:
    """A training input the checkpoint fingerprint hashes, in a scratch working folder."""
    monkeypatch.chdir(tmp_path)
    inputs = {"train": tmp_path / "t.parquet"}
    inputs["train"].write_bytes(b"rows")
    return inputs


def test_every_machine_of_a_job_finds_the_same_checkpoint(fingerprinted):
    """The fingerprint leaves out where processes meet and how a run is observed, not what it computes."""
    raw = fixture_params_raw()

    def key(**train):
        params = parse_params({**raw, "train": {**raw["train"], **train}})
        return training.checkpoint_dir(params, fingerprinted, params.train)

    assert key(machine_rank=0, num_machines=2) == key(machine_rank=1, num_machines=2, main_process_port=29999)
    assert key(log_every_steps=1, checkpoint_every_minutes=1, dataloader_workers=2) == key()
    assert key(num_processes=2) != key() and key(method="lora") != key() and key(class_weights="balanced") != key()


def test_a_students_checkpoints_are_its_own_and_change_with_its_objective(fingerprinted):
    raw = fixture_params_raw()

    def key(**distill):
        params = parse_params({**raw, "distill": {**raw["distill"], **distill}})
        d = params.distill
        return training.checkpoint_dir(
            params, fingerprinted, d.train_params(params.train), paths.DISTILL_CHECKPOINTS, d
        )

    teacher = parse_params(raw)
    assert key().parent == paths.DISTILL_CHECKPOINTS
    assert key().name != training.checkpoint_dir(teacher, fingerprinted, teacher.train).name
    assert key(temperature=4.0) != key() and key(alpha=0.9) != key() and key(student_layers=[0, 1]) != key()
    assert key(learning_rate=1e-3) != key()


def test_best_weights_are_never_left_half_written(tmp_path, monkeypatch):
    """The best epoch's file is written once (skipped when it exists), so a torn write would stay."""
    from reprolab.model import checkpoints

    def torn_write(_tensors, path):
        Path(path).write_bytes(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoints, "save_file", torn_write)
    accelerator = training.make_accelerator(train_params())
    with pytest.raises((OSError, StageError)):
        checkpoints.Checkpointer(tmp_path).save(accelerator, checkpoints.LoopState(best_epoch=1), {"w": torch.zeros(2)})
    assert not (tmp_path / "best-epoch-1.safetensors").exists()
