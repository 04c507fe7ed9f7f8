"""Model runtime shared by training and evaluation: token data, device, precision, batching, prediction.

Batches are padded dynamically (to their longest row) and, for training, grouped by length:
rows of similar length share a batch, so little compute goes to padding.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from reprolab.encoding.labels import IGNORED
from reprolab.errors import StageError
from reprolab.tasks.base import Task

_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


def reuse_freed_host_memory() -> bool:
    """Make glibc keep freed large blocks for the next training step instead of unmapping them.

    glibc serves every allocation over its mmap threshold (at most 32 MB) with fresh pages and
    unmaps them on free, so each step page-faults its largest tensors in again: a 16 x 512 batch's
    attention scores are 200 MB per layer. Raising the threshold serves them from the heap, where
    the next step reuses them. Results are unchanged; only where the bytes live differs. Returns
    False, changing nothing, where the C library is not glibc (macOS, musl) or refuses.
    """
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
        return bool(mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(2**31 - 1)))
    except (OSError, AttributeError, TypeError):
        return False


class TokenData:
    """Token id sequences and their labels, of one or more token Parquet files, in file order.

    A row is a text with one label id (sequence classification: `label`), or a window of a sentence with
    a label id per position, IGNORED where nothing is scored, and the sentence's word each position scores
    (token classification: `labels`, `word_index`, from `encoding.word_alignment`). A student's training
    rows also hold the teacher's logits of each row (classes) or position (positions x classes).
    """

    def __init__(
        self,
        ids: list[str],
        sequences: list[np.ndarray],
        labels: np.ndarray | list[np.ndarray],
        word_index: list[np.ndarray] | None = None,
        teacher_logits: list[np.ndarray] | None = None,
    ):
        self.ids = ids
        self.sequences = sequences
        self.labels = labels
        self.word_index = word_index
        self.teacher_logits = teacher_logits
        self.lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))

    @classmethod
    def read(cls, *files: Path) -> TokenData:
        tables = []
        for file in files:
            per_position = "labels" in pq.read_schema(file).names
            columns = ("labels", "word_index") if per_position else ("label",)
            tables.append(pq.read_table(file, columns=["id", "input_ids", *columns]))
        return cls.of(*tables)

    @classmethod
    def of(cls, *tables: pa.Table) -> TokenData:
        """The rows of token tables (tokenize's schemas), one after another."""
        ids: list[str] = []
        sequences: list[np.ndarray] = []
        labels: list = []
        word_index: list[np.ndarray] = []
        per_position = False
        for table in tables:
            per_position = "labels" in table.column_names
            ids += table["id"].to_pylist()
            sequences += list_arrays(table["input_ids"])
            if per_position:
                labels += list_arrays(table["labels"], np.int64)
                word_index += list_arrays(table["word_index"])
            else:
                labels += table["label"].to_pylist()
        if per_position:
            return cls(ids, sequences, labels, word_index)
        return cls(ids, sequences, np.asarray(labels, dtype=np.int64))

    @property
    def per_position(self) -> bool:
        return self.word_index is not None

    def scored_labels(self) -> np.ndarray:
        """Every label id the loss counts, over all rows: one a row, or each position's that is not IGNORED."""
        if not self.per_position:
            return self.labels
        flat = np.concatenate(self.labels) if self.labels else np.zeros(0, dtype=np.int64)
        return flat[flat != IGNORED]

    def __len__(self) -> int:
        return len(self.sequences)

    def with_teacher_logits(self, teacher_logits: list[np.ndarray]) -> TokenData:
        return TokenData(self.ids, self.sequences, self.labels, self.word_index, teacher_logits)

    def take(self, rows: np.ndarray) -> TokenData:
        labels = [self.labels[i] for i in rows] if self.per_position else self.labels[rows]
        word_index = [self.word_index[i] for i in rows] if self.per_position else None
        teacher = None if self.teacher_logits is None else [self.teacher_logits[i] for i in rows]
        return TokenData([self.ids[i] for i in rows], [self.sequences[i] for i in rows], labels, word_index, teacher)

    def sample(self, limit: int | None, seed: int) -> TokenData:
        """At most `limit` rows, in file order, drawn per class (seeded) so every class keeps its share
        (windows of tagged sentences, which have no one class, are drawn as one class).

        Files are in source order (all of one class may come first), so the first `limit` rows could
        hold one class only. Each class gets its share of `limit` rounded down, and at least one row
        while `limit` allows; the rows left over go to the classes with the largest remainders.
        """
        if limit is None or limit >= len(self):
            return self
        strata = np.zeros(len(self), dtype=np.int64) if self.per_position else self.labels
        classes, counts = np.unique(strata, return_counts=True)
        share = counts * limit / len(self)
        quota = np.floor(share).astype(np.int64)
        if limit >= len(classes):
            quota = np.maximum(quota, 1)
        for i in np.argsort(quota - share, kind="stable")[: max(limit - int(quota.sum()), 0)]:
            quota[i] += 1  # largest remainders first
        while quota.sum() > limit:  # the minimum of one row per class overshot: trim the largest
            quota[np.argmax(quota)] -= 1
        generator = np.random.default_rng(seed)
        rows = [
            generator.permutation(np.flatnonzero(strata == label))[:n] for label, n in zip(classes, quota, strict=True)
        ]
        return self.take(np.sort(np.concatenate(rows)))


def list_arrays(column, dtype=None) -> list[np.ndarray]:
    """A Parquet list column as one numpy array per row (views into one buffer)."""
    column = column.combine_chunks()
    offsets = column.offsets.to_numpy()
    flat = column.values.to_numpy()
    if dtype is not None:
        flat = flat.astype(dtype)
    return [flat[offsets[i] : offsets[i + 1]] for i in range(len(column))]


def select_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise StageError("train.device=cuda but no CUDA device is visible (use auto or cpu)")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def mixed_precision(requested: str, device: torch.device) -> str:
    """accelerate's `mixed_precision` for train.mixed_precision on `device`. auto: bf16 on a CUDA device
    that has it, else fp16 (accelerate adds the loss scaler fp16 needs); fp32 ("no") on the CPU, which
    keeps CPU runs exact and reproducible."""
    if requested in ("bf16", "fp16") and device.type != "cuda":
        raise StageError(f"train.mixed_precision={requested} needs a CUDA device (use auto or no)")
    bf16_ok = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if requested == "bf16" and not bf16_ok:
        raise StageError("train.mixed_precision=bf16: this GPU has no bf16 (use auto, fp16 or no)")
    if requested == "auto":
        return "no" if device.type != "cuda" else "bf16" if bf16_ok else "fp16"
    return requested


def autocast(device: torch.device, bf16: bool):
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def length_grouped_batches(
    lengths: np.ndarray, batch_size: int, generator: np.random.Generator, group: bool = True
) -> list[np.ndarray]:
    """Shuffled batches; with `group`, sorted by length inside mega-batches of 50 batches.

    The mega-batch keeps the order random at a coarse scale while rows of similar length meet.
    """
    order = generator.permutation(len(lengths))
    if not group:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    mega = batch_size * 50
    batches = []
    for start in range(0, len(order), mega):
        chunk = order[start : start + mega]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in generator.permutation(len(batches))]


def collate(
    sequences: list[np.ndarray], pad_id: int, pad_to: int | None = None, multiple_of: int = 1
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Right-padded input ids and attention mask, to the longest row (or to `pad_to`), rounded up to a
    multiple of `multiple_of` (8 on CUDA: tensor-core tiles).

    The mask is None when no row is padded (common in length-grouped batches): attention then skips
    masking altogether, 6% of a training step at 512 tokens on the CPU.
    """
    width = pad_to or max(len(s) for s in sequences)
    width = -(-width // multiple_of) * multiple_of
    input_ids = np.full((len(sequences), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), width), dtype=np.int64)
    for row, seq in enumerate(sequences):
        input_ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return torch.from_numpy(input_ids), None if mask.all() else torch.from_numpy(mask)


class EpochBatches:
    """The training batches of each epoch as a DataLoader batch sampler: `length_grouped_batches` drawn
    from one generator seeded once, so epoch e's batches are the e-th draw, whatever epoch a run starts
    (resumes) at. Call `use_epoch` before iterating (not `set_epoch`: accelerate would call that, from 0)."""

    batch_size = None  # batches vary in size (the last): accelerate's sharding then takes them whole

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int, group: bool):
        self.lengths, self.rows_per_batch, self.seed, self.group = lengths, batch_size, seed, group
        self.batches: list[np.ndarray] = []

    def use_epoch(self, epoch: int) -> None:
        generator = np.random.default_rng(self.seed)
        for _ in range(epoch):  # a permutation per epoch: cheap next to one training step
            self.batches = length_grouped_batches(self.lengths, self.rows_per_batch, generator, self.group)

    def __iter__(self):
        return (batch.tolist() for batch in self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class TokenDataset(torch.utils.data.Dataset):
    """Rows of TokenData for a DataLoader: (token ids, label, the teacher's logits or None)."""

    def __init__(self, data: TokenData):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, row: int) -> tuple[np.ndarray, int | np.ndarray, np.ndarray | None]:
        label = self.data.labels[row]
        teacher = None if self.data.teacher_logits is None else self.data.teacher_logits[row]
        return self.data.sequences[row], label if self.data.per_position else int(label), teacher


@dataclass(frozen=True)
class Collator:
    """DataLoader collate_fn: a batch's padded `input_ids`, `attention_mask` (absent when nothing is
    padded), `labels` (as the task collates them) and, for a student, `teacher_logits` (zeros where
    padded). A dataclass, so worker processes can receive it."""

    task: Task
    pad_id: int
    pad_to: int | None = None
    multiple_of: int = 1

    def __call__(self, rows: list[tuple[np.ndarray, int | np.ndarray, np.ndarray | None]]) -> dict[str, torch.Tensor]:
        input_ids, mask = collate([seq for seq, _, _ in rows], self.pad_id, self.pad_to, self.multiple_of)
        width = input_ids.shape[1]
        batch = {"input_ids": input_ids, "labels": self.task.collate_labels([label for _, label, _ in rows], width)}
        if mask is not None:
            batch["attention_mask"] = mask
        if rows[0][2] is not None:
            batch["teacher_logits"] = collate_teacher_logits([teacher for _, _, teacher in rows], width)
        return batch


def collate_teacher_logits(rows: list[np.ndarray], width: int) -> torch.Tensor:
    """The teacher's logits of a batch's rows, (rows, classes); per position, right-padded with zeros to
    the batch's width, (rows, width, classes): the loss counts no padded position."""
    if rows[0].ndim == 1:
        return torch.from_numpy(np.stack(rows))
    out = np.zeros((len(rows), width, rows[0].shape[1]), dtype=np.float32)
    for row, logits in enumerate(rows):
        out[row, : len(logits)] = logits
    return torch.from_numpy(out)


def to_device(tensor: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    """`tensor` on `device`. To CUDA it is first copied into pinned memory (a synchronous host copy),
    from where the transfer may overlap with work already queued on the GPU."""
    if tensor is None or device.type == "cpu":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)


def batched_logits(
    sequences: list[np.ndarray],
    batch_size: int,
    pad_id: int,
    forward: Callable[[torch.Tensor, torch.Tensor | None], np.ndarray],
) -> np.ndarray:
    """Logits of token id sequences in their order, from `forward(input_ids, attention_mask)` on padded
    batches; rows are batched longest-first to keep padding small. Any backend (torch, onnxruntime).

    Logits per sequence (batch, classes) come back a row per sequence; logits per position (batch,
    positions, classes) a row per position, the sequences' positions one after another, padding left
    out: (sum of lengths, classes), which `TokenData.word_index` and `labels` line up with, flattened."""
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    starts = np.concatenate([[0], np.cumsum(lengths)])
    order = np.argsort(-lengths, kind="stable")
    out: np.ndarray | None = None
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        logits = forward(*collate([sequences[i] for i in index], pad_id))
        if out is None:
            rows = len(sequences) if logits.ndim == 2 else int(starts[-1])
            out = np.zeros((rows, logits.shape[-1]), dtype=np.float32)
        if logits.ndim == 2:
            out[index] = logits
            continue
        for row, i in enumerate(index):
            out[starts[i] : starts[i + 1]] = logits[row, : lengths[i]]
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)


@torch.inference_mode()
def predict_logits(
    model, sequences: list[np.ndarray], batch_size: int, pad_id: int, device: torch.device, bf16: bool = False
) -> np.ndarray:
    """The torch model's logits for token id sequences, in their order."""
    model.eval()

    def forward(input_ids: torch.Tensor, mask: torch.Tensor | None) -> np.ndarray:
        with autocast(device, bf16):
            logits = model(input_ids=to_device(input_ids, device), attention_mask=to_device(mask, device)).logits
        return logits.float().cpu().numpy()

    return batched_logits(sequences, batch_size, pad_id, forward)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def load_model(task: Task, source: str, labels: list[str]):
    """The task's model with a head sized for `labels` (fresh when the source has none)."""
    import transformers
    from transformers.utils import logging

    logging.set_verbosity_error()  # the "newly initialized head" notice is expected here
    logging.disable_progress_bar()  # a bar for loading 100 tensors from one local file
    try:
        return getattr(transformers, task.auto_model).from_pretrained(
            source,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            **task.head_config,
            use_safetensors=True,
        )
    except OSError as exc:
        raise StageError(f"{source}: cannot load model weights as safetensors ({exc})") from None
    except RuntimeError as exc:  # transformers' report of weights whose shapes do not fit the head
        raise StageError(
            f"{source}: its weights do not fit a {task.name} head of {len(labels)} classes "
            f"({str(exc).splitlines()[0][:200]}); point model.name_or_path at a pretrained encoder, or at a "
            "model of this task and label set"
        ) from None
