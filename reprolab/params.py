"""Typed, validated view of params.yaml.

Every stage calls `load_params()` first: an unknown, misspelt or repeated key, a wrong type, a
non-finite number, an out-of-range value or two values that contradict each other stop the stage before
any work, with a message that names the key and what is allowed. The file is read as plain YAML: no
aliases (an alias bomb expands to gigabytes from a few lines) and no repeated keys (YAML keeps the last
silently); values in messages are cut to a short preview.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, model_validator

from reprolab.errors import StageError, run_stage

PARAMS_FILE = Path("params.yaml")
# A params file is a page of settings; anything far larger is not one (and is not read whole).
MAX_PARAMS_BYTES = 1 << 20
PREVIEW_CHARS = 80
MAX_LISTED_KEYS = 10  # unknown keys named per section
# Keys earlier revisions had, and where their job went: an old params.yaml is told what to do.
RETIRED = {
    "export.rounds": "the export's timings moved to `python bench/export_bench.py --rounds N`: delete the key",
    "export.latency_rows": "the export's timings moved to `python bench/export_bench.py --latency-rows N`: "
    "delete the key",
    "clean.workers": "the data stages' parallelism moved to `engine.workers`: move the value there",
}
MAX_PROBLEM_LINES = 20


class ParamsError(StageError):
    """params.yaml is missing, unreadable or invalid."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


# numpy's and Python's generators take seeds below 2**32 everywhere this project passes one.
Seed = Annotated[int, Field(ge=0, lt=2**32)]
MAIL_FORMATS = ("spam_assassin", "mail_dir")  # folders of raw mails; text_dir holds plain text files
FOLDER_FORMATS = (*MAIL_FORMATS, "text_dir")


# A label as a source holds it: text, an integer or a boolean (bool before int: True is an int in Python).
LabelValue = bool | int | str


def class_name(label: LabelValue) -> str:
    """The class name a label value stands for: text as it is, integers in decimal, booleans as YAML writes them."""
    if isinstance(label, bool):
        return "true" if label else "false"
    return str(label)


class IngestParams(Section):
    # spam_assassin: the npm corpus layout (group folders of raw mails with MD5 file names);
    # mail_dir: any folder of raw mail files, label from the first folder level;
    # text_dir: a folder of plain text files (one document each, any encoding), label from the first level;
    # csv / jsonl / parquet: one table with text and label columns (for token classification: list
    # columns of words and tags); conll: a word and its tag a line, a blank line between sentences.
    format: Literal["spam_assassin", "mail_dir", "text_dir", "csv", "jsonl", "parquet", "conll"]
    path: str
    # The classes, in class-id order: text, integers or booleans, matched by value and type against a
    # typed source column (JSON, Parquet), by their text against a text column (CSV).
    labels: list[LabelValue] = Field(min_length=2)
    # Source label value -> class name (a label, as text), applied before `labels` are matched.
    label_map: dict[LabelValue, str] = {}
    # Text labels and label_map keys compared after stripping surrounding space / casefolding.
    label_strip: bool = False
    label_casefold: bool = False
    # Folder name -> label, for spam_assassin, mail_dir and text_dir.
    folder_labels: dict[str, str] = {}
    text_column: str = "text"
    label_column: str = "label"
    id_column: str | None = None
    # A column holding your own train/val/test split (csv / jsonl / parquet): clean keeps it instead of
    # splitting; `split_names` gives the value that stands for each split.
    split_column: str | None = None
    split_names: dict[Literal["train", "val", "test"], str] = {"train": "train", "val": "val", "test": "test"}
    max_text_bytes: int = Field(1_000_000, gt=0)
    # A tar source whose members' sizes add up to more than this is refused before any is read.
    max_archive_bytes: int = Field(16 << 30, gt=0)
    # Token classification: the scheme the source's tags are in (iob1, iob2, bioes); stored as IOB2.
    tag_scheme: Literal["iob1", "iob2", "bioes"] = "iob2"
    # Token classification: how `reprolab predict` and the served model split a raw text into words
    # (the model's recipe records it): at whitespace, or also between word characters and punctuation
    # ("It's" -> It ' s). Choose the one closest to how the source's words were cut.
    pre_tokenizer: Literal["whitespace", "words_and_punctuation"] = "whitespace"
    # Deterministic subsample for quick runs: at most this many rows per label (null: all rows).
    max_rows_per_label: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _labels_known(self) -> IngestParams:
        names = self.class_names
        if len(set(names)) != len(names):
            raise ValueError(f"labels must name distinct classes, got {names}")
        unknown = sorted(set(self.label_map.values()) - set(names))
        if unknown:
            raise ValueError(f"label_map maps to {unknown}, which are not in labels {names}")
        if sorted(self.split_names) != ["test", "train", "val"] or len(set(self.split_names.values())) != 3:
            raise ValueError(f"split_names must give distinct values for train, val and test, got {self.split_names}")
        if self.format not in FOLDER_FORMATS:  # folder_labels is not read: another format's key is not checked
            return self
        if self.split_column:
            raise ValueError(f"split_column is read from tables (csv, jsonl, parquet), not format {self.format!r}")
        if not self.folder_labels:
            raise ValueError(f"format {self.format!r} takes its labels from folders: set folder_labels")
        unknown = sorted(set(self.folder_labels.values()) - set(names))
        if unknown:
            raise ValueError(f"folder_labels maps to {unknown}, which are not in labels {names}")
        return self

    @property
    def class_names(self) -> list[str]:
        """The labels as the class names every later stage uses (class id = position)."""
        return [class_name(label) for label in self.labels]


class SplitParams(Section):
    val_fraction: float = Field(gt=0, lt=0.5)
    test_fraction: float = Field(gt=0, lt=0.5)
    seed: Seed


class CleanParams(Section):
    # Sequence classification (TASK_KEYS): a text's length bounds and near-duplicate detection.
    min_chars: int | None = Field(None, ge=1)
    max_chars: int | None = Field(None, gt=0)
    reject_checksum_mismatch: bool = True
    # Estimated Jaccard similarity of word shingles at or above which two texts are near duplicates.
    near_duplicate_threshold: float | None = Field(None, gt=0, le=1)
    shingle_words: int | None = Field(None, ge=1)
    minhash_permutations: int | None = Field(None, ge=16, le=1024)
    split: SplitParams

    @model_validator(mode="after")
    def _length_bounds_ordered(self) -> CleanParams:
        if self.min_chars is not None and self.max_chars is not None and self.min_chars > self.max_chars:
            raise ValueError(
                f"min_chars ({self.min_chars}) is above max_chars ({self.max_chars}): every text would be rejected"
            )
        return self


class ModelParams(Section):
    # A local Hugging Face model directory (the reproducible choice: DVC hashes its files),
    # or a hub name when HF_HUB_OFFLINE=0.
    name_or_path: str


class TokenizeParams(Section):
    max_length: int = Field(ge=8, le=8192)
    # Which tokens of a long text the model sees: the first max_length, the last, or head_fraction of
    # them from the start and the rest from the end (head+tail: Sun et al. 2019, "How to Fine-Tune BERT
    # for Text Classification?").
    truncation: Literal["head", "tail", "head_tail"] | None = None
    head_fraction: float = Field(0.25, gt=0, lt=1)
    batch_size: int = Field(gt=0)
    # Token classification: the tag on a word's first sub-token only (the rest ignored by the loss), or
    # on all of them (B- made I- after the first: Hugging Face's --label_all_tokens).
    label_subtokens: Literal["first", "all"] = "first"
    # Token classification: a sentence longer than max_length is cut into windows at word boundaries,
    # each carrying up to this many sub-tokens of the words before it as unscored context.
    stride: int = Field(32, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _renamed_key(cls, data: Any) -> Any:
        if isinstance(data, dict) and "truncation_side" in data:
            raise ValueError("truncation_side was renamed: write truncation: head (was right) or tail (was left)")
        return data


# Where translation models live: stages/back_translate.py depends on the folder, so DVC re-runs it when a
# vendored model there changes.
TRANSLATION_MODELS = "models/translation"


class BackTranslationParams(Section):
    """Paraphrases of training texts by translating them to a pivot language and back (stages/back_translate.py,
    reprolab.data.back_translation): a vendored pair of sequence-to-sequence models, e.g. MarianMT's
    opus-mt-en-de and opus-mt-de-en, under models/translation/."""

    forward_model: str  # the training texts' language -> the pivot
    backward_model: str  # the pivot -> the training texts' language
    fraction: float = Field(gt=0, le=1)  # share of training rows translated: a seeded coin per id
    seed: Seed
    # Sampled generation (top-k; Edunov et al. 2018 found sampling beats beam search for back-translation).
    top_k: int = Field(ge=1, le=1000)
    batch_size: int = Field(ge=1, le=1024)
    max_new_tokens: int = Field(ge=2, le=4096)  # a translation that runs to it is cut: counted as failed

    @model_validator(mode="after")
    def _models_where_dvc_sees_them(self) -> BackTranslationParams:
        for key in ("forward_model", "backward_model"):
            folder = Path(getattr(self, key))
            if folder.is_absolute() or ".." in folder.parts or not folder.is_relative_to(TRANSLATION_MODELS):
                raise ValueError(
                    f"{key} {folder}: must be a folder under {TRANSLATION_MODELS}/ (the back_translate stage depends "
                    f"on that folder): `reprolab vendor-model <model> {TRANSLATION_MODELS}/<name>`"
                )
        return self


class AugmentParams(Section):
    enabled: bool
    seed: Seed
    # Share of training examples that get augmented copies (EDA, Wei & Zou 2019).
    fraction: float = Field(ge=0, le=1)
    copies_per_example: int = Field(ge=1, le=16)
    synonym_replacement: float = Field(ge=0, le=1)
    random_insertion: float | None = Field(None, ge=0, le=1)
    random_swap: float | None = Field(None, ge=0, le=1)
    random_deletion: float | None = Field(None, ge=0, le=1)
    # Token classification's label-preserving operations (Dai & Adel 2020), each unit with this
    # probability: an entity mention becomes another of its type; a segment's words change places.
    mention_replacement: float = Field(0, ge=0, le=1)
    shuffle_within_segments: float = Field(0, ge=0, le=1)
    # Only the words the tokenizer can keep matter; augmenting the rest is wasted work.
    max_words: int | None = Field(None, ge=1)
    # Back-translated paraphrases added to the copies (sequence classification); None: off.
    back_translation: BackTranslationParams | None = None

    @model_validator(mode="after")
    def _back_translation_needs_augment(self) -> AugmentParams:
        if self.back_translation is not None and not self.enabled:
            raise ValueError("back_translation is set but enabled is false: set enabled true, or back_translation null")
        return self


class LoraParams(Section):
    """Low-rank adapters (peft) on the named modules; the classifier head trains in full."""

    rank: int = Field(ge=1)
    alpha: float = Field(gt=0)
    dropout: float = Field(ge=0, lt=1)
    # Module names, matched as peft matches them: `query` is every layer's attention query projection.
    target_modules: list[str] = Field(min_length=1)


class TrainParams(Section):
    seed: Seed
    device: Literal["auto", "cpu", "cuda"]
    # auto: bf16 on GPUs that have it, else fp16 with a loss scaler; fp32 on the CPU (exact).
    mixed_precision: Literal["auto", "no", "bf16", "fp16"]
    # Compile the training forward and backward with torch.compile (inductor). Pays on GPUs over long
    # runs; the first steps, and every new batch shape's, wait for compilation.
    torch_compile: bool
    # full: every weight trains. lora: low-rank adapters (`lora`), merged into the saved model.
    method: Literal["full", "lora"]
    lora: LoraParams
    # balanced: each class's loss weighted by n_rows / (n_classes * its rows), as scikit-learn's
    # class_weight="balanced" (which the baseline then uses too).
    class_weights: Literal["none", "balanced"]
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)  # per process: a step takes batch_size x processes x accumulation rows
    eval_batch_size: int = Field(ge=1)
    gradient_accumulation_steps: int = Field(ge=1)
    learning_rate: float = Field(gt=0, lt=1)
    weight_decay: float = Field(ge=0)
    lr_scheduler: Literal["linear", "cosine", "constant_with_warmup"]
    warmup_ratio: float = Field(ge=0, lt=1)
    max_grad_norm: float = Field(gt=0)
    early_stopping_patience: int = Field(ge=1)
    # dynamic: pad each batch to its longest row; max_length: pad every batch to tokenize.max_length.
    padding: Literal["dynamic", "max_length"]
    group_by_length: bool
    max_train_samples: int | None = Field(None, gt=0)
    num_threads: int | None = Field(None, ge=1)  # per process
    # DataLoader worker processes that collate batches; auto: none on the CPU (they would take the
    # training's cores), 4 per process on CUDA.
    dataloader_workers: Annotated[int, Field(ge=0)] | Literal["auto"]
    # Data-parallel (DDP through `accelerate launch`, torchrun underneath): processes on this machine,
    # machines in the job, this machine's rank, and where machine 0 listens for the others.
    num_processes: int = Field(ge=1)
    num_machines: int = Field(ge=1)
    machine_rank: int = Field(ge=0)
    main_process_ip: str = Field(min_length=1)
    main_process_port: int = Field(ge=1, le=65535)
    log_every_steps: int = Field(ge=1)
    # A checkpoint every N optimizer steps and every M minutes (0: off), always at an epoch's end and
    # on SIGINT/SIGTERM.
    checkpoint_every_steps: int = Field(ge=0)
    checkpoint_every_minutes: float = Field(ge=0)

    @model_validator(mode="after")
    def _one_job(self) -> TrainParams:
        if self.machine_rank >= self.num_machines:
            raise ValueError(f"machine_rank {self.machine_rank} must be below num_machines {self.num_machines}")
        if self.device == "cpu" and self.mixed_precision in ("bf16", "fp16"):
            raise ValueError(f"mixed_precision {self.mixed_precision} needs CUDA; device is cpu (use auto or no)")
        return self

    @property
    def world_size(self) -> int:
        return self.num_processes * self.num_machines


class DistillParams(Section):
    """The distilled student (stages/distill.py, reprolab.model.distillation): which encoder layers it
    keeps, where their weights come from, and its objective; it trains with train's settings but its
    own epochs and learning rate, in full (no LoRA)."""

    # Of the encoder's layers, counted from 0, in increasing order; each keeps its weights.
    student_layers: list[Annotated[int, Field(ge=0)]] = Field(min_length=1)
    # teacher: the fine-tuned teacher's layers and head (as DistilBERT came from BERT); pretrained: the
    # pretrained encoder's layers (model.name_or_path) with a fresh head.
    init: Literal["teacher", "pretrained"]
    temperature: float = Field(gt=0, le=100)  # softens both distributions; the soft loss is scaled by T^2
    alpha: float = Field(ge=0, le=1)  # weight of the soft-target loss; 1 - alpha: the true labels'
    epochs: int = Field(ge=1)
    learning_rate: float = Field(gt=0, lt=1)

    @model_validator(mode="after")
    def _layers_in_order(self) -> DistillParams:
        layers = self.student_layers
        if any(b <= a for a, b in zip(layers, layers[1:], strict=False)):
            raise ValueError(
                f"student_layers {layers}: each layer once, in increasing order (the student runs them so)"
            )
        return self

    def train_params(self, train: TrainParams) -> TrainParams:
        """train's settings with the student's epochs and learning rate, full fine-tuning, one process."""
        student = {"epochs": self.epochs, "learning_rate": self.learning_rate, "method": "full"}
        return train.model_copy(update={**student, "num_processes": 1, "num_machines": 1, "machine_rank": 0})


class BaselineParams(Section):
    max_features: int = Field(gt=0)
    ngram_max: int = Field(ge=1, le=3)
    C: float = Field(gt=0)


class CrfParams(Section):
    """The token classifier's baseline: CRFsuite's L-BFGS with L1 (c1) and L2 (c2) penalties."""

    c1: float = Field(ge=0)
    c2: float = Field(ge=0)
    max_iterations: int = Field(ge=1)


class EvaluateParams(Section):
    batch_size: int = Field(ge=1)
    baseline: BaselineParams | None = None  # sequence classification: TF-IDF + logistic regression
    crf: CrfParams | None = None  # token classification: a linear-chain CRF


class ExportParams(Section):
    opset: int = Field(ge=14, le=21)  # ONNX opset of the exported graph
    # Every backend (torch, onnxruntime) scores the test split with the same batch size and threads (and
    # bench/export_bench.py times them so).
    threads: int = Field(ge=1)
    batch_size: int = Field(ge=1)


class AuditParams(Section):
    # Where bits cannot match, a result is reproduced when its metrics match within this: on CUDA (bf16
    # autocast and atomics are not bit-stable), or on CPU kernels other than those that recorded it
    # (an aarch64 audit of an x86-64 result, a result of native kernels audited on another CPU). Otherwise
    # every hash and metric must match exactly. Revisions before it was renamed call it cuda_metric_tolerance.
    inexact_metric_tolerance: float = Field(
        ge=0, le=1, validation_alias=AliasChoices("inexact_metric_tolerance", "cuda_metric_tolerance")
    )


class EngineParams(Section):
    # Where the data stages' batches run (reprolab.engines): local (this machine) or ray (a Ray cluster).
    # Outputs do not depend on any of these three, so no stage lists them (docs/scaling.md).
    name: Literal["local", "ray"] = "local"
    # Batches at once: local worker processes (clean's fingerprinting; tokenize and augment run in the
    # stage's process, on the tokenizer's threads), or Ray tasks. 0: one per core of the machine or cluster.
    workers: int = Field(0, ge=0)
    # ray: the cluster to join (ray://host:10001 or host:6379); null: RAY_ADDRESS, else a cluster of this
    # machine's cores that the stage starts and stops.
    address: str | None = None

    @model_validator(mode="after")
    def _address_is_for_ray(self) -> EngineParams:
        if self.address is not None and self.name != "ray":
            raise ValueError(f"address is set ({preview(self.address)}) but name is {self.name!r}: set name: ray")
        return self


class Params(Section):
    # What the model learns (reprolab.tasks.catalog holds each task's hooks); absent in files from
    # before tasks, which were all sequence classification.
    task: Literal["sequence_classification", "token_classification"] = "sequence_classification"
    ingest: IngestParams
    clean: CleanParams
    model: ModelParams
    tokenize: TokenizeParams
    augment: AugmentParams
    train: TrainParams
    evaluate: EvaluateParams
    export: ExportParams
    audit: AuditParams
    engine: EngineParams = EngineParams()
    # The student of the classification default's distill stage; a project without those stages leaves it out.
    distill: DistillParams | None = None

    @model_validator(mode="after")
    def _keys_fit_the_task(self) -> Params:
        # A key another task reads would be silently ignored here: refused, named, instead.
        for task, keys in TASK_KEYS.items():
            for key in keys:
                part, name = key.split(".")
                given = name in getattr(self, part).model_fields_set
                if task != self.task and given:
                    raise ValueError(f"{key} is read by task {task!r} only; this is task {self.task!r}")
                if task == self.task and key in TASK_REQUIRED and not given:
                    raise ValueError(f"{key}: required key is missing (task {task!r} reads it)")
        sentences = self.ingest.format == "conll"
        if sentences and self.task != "token_classification":
            raise ValueError(
                f"ingest.format=conll describes tagged sentences, for token classification; task {self.task!r} "
                "reads one label per text (a table, or a folder of mails or texts)"
            )
        if self.task == "token_classification" and self.tokenize.stride >= self.tokenize.max_length // 2:
            raise ValueError(
                f"tokenize.stride {self.tokenize.stride} must be below half of tokenize.max_length "
                f"{self.tokenize.max_length}: each window has to score more words than it repeats"
            )
        return self


# The keys only one task reads (section.key), so that setting one for the other task fails loudly.
TASK_KEYS = {
    "sequence_classification": (
        "ingest.label_map",
        "clean.min_chars",
        "clean.max_chars",
        "clean.reject_checksum_mismatch",
        "clean.shingle_words",
        "clean.minhash_permutations",
        "ingest.label_strip",
        "ingest.label_casefold",
        "ingest.folder_labels",
        "ingest.max_rows_per_label",
        "clean.near_duplicate_threshold",
        "tokenize.truncation",
        "tokenize.head_fraction",
        "augment.random_insertion",
        "augment.random_swap",
        "augment.random_deletion",
        "augment.max_words",
        "augment.back_translation",
        "evaluate.baseline",
    ),
    "token_classification": (
        "ingest.tag_scheme",
        "ingest.pre_tokenizer",
        "tokenize.label_subtokens",
        "tokenize.stride",
        "augment.mention_replacement",
        "augment.shuffle_within_segments",
        "evaluate.crf",
    ),
}
# Of those, the ones without a default.
TASK_REQUIRED = frozenset(
    (
        "clean.min_chars",
        "clean.max_chars",
        "clean.near_duplicate_threshold",
        "clean.shingle_words",
        "clean.minhash_permutations",
        "tokenize.truncation",
        "augment.random_insertion",
        "augment.random_swap",
        "augment.random_deletion",
        "augment.max_words",
        "evaluate.baseline",
        "evaluate.crf",
    )
)


def _describe(error: dict[str, Any], section: tuple = ()) -> str:
    key = _key((*section, *error["loc"]))
    if error["type"] == "missing":
        return f"{key}: required key is missing"
    if not error["loc"] or error["type"] == "value_error":  # a check across keys: its message names them
        return f"{key or 'params'}: {error['msg'].removeprefix('Value error, ')}"
    return f"{key}: {error['msg']} (got {preview(error.get('input'))})"


def _key(loc: tuple) -> str:
    """A dotted key as the message shows it; a part that is someone's huge text is cut short."""
    return ".".join(part if len(part := str(item)) <= PREVIEW_CHARS else preview(part) for item in loc)


def _problems(errors: list[dict[str, Any]], model: type[BaseModel], section: tuple = ()) -> list[str]:
    """One line per problem (keys shown under `section`, where `model` is that section's); a part's
    unknown keys share one line (a missing section header turns all its keys into the previous
    section's unknown keys: one line, not forty), at most MAX_PROBLEM_LINES lines in all."""
    unknown: dict[tuple, list[str]] = {}
    lines = []
    for error in errors:
        if error["type"] == "extra_forbidden":
            unknown.setdefault(tuple(error["loc"][:-1]), []).append(_key(error["loc"][-1:]))
        else:
            lines.append(_describe(error, section))
    for parent, keys in unknown.items():
        allowed = f"(allowed here: {', '.join(_allowed_keys(model, parent))})"
        where = _key((*section, *parent))
        retired = [f"{where}.{key}: {RETIRED[f'{where}.{key}']}" for key in keys if f"{where}.{key}" in RETIRED]
        lines += retired
        keys = [key for key in keys if f"{where}.{key}" not in RETIRED]
        if not keys:
            continue
        if len(keys) == 1:
            lines.append(f"{where + '.' if where else ''}{keys[0]}: unknown key {allowed}")
        else:
            named = ", ".join(keys[:MAX_LISTED_KEYS])
            more = f" and {len(keys) - MAX_LISTED_KEYS} more" if len(keys) > MAX_LISTED_KEYS else ""
            lines.append(f"{where or 'params'}: unknown keys {named}{more} {allowed}")
    if len(lines) > MAX_PROBLEM_LINES:
        lines = [*lines[:MAX_PROBLEM_LINES], f"... and {len(lines) - MAX_PROBLEM_LINES} more problems"]
    return lines


def preview(value: Any) -> str:
    """repr(value) cut to PREVIEW_CHARS: a message never embeds a huge value whole."""
    text = (
        repr(value)
        if not isinstance(value, dict | list) or len(value) < 20
        else f"<{type(value).__name__} of {len(value)} items>"
    )
    return text if len(text) <= PREVIEW_CHARS else f"{text[:PREVIEW_CHARS]}... ({len(text)} characters)"


def _allowed_keys(model: type[BaseModel], parent: tuple) -> list[str]:
    for part in parent:
        annotation = model.model_fields[str(part)].annotation
        # An optional section (`CrfParams | None`) is its model's keys.
        sections = [a for a in (annotation, *get_args(annotation)) if isinstance(a, type) and issubclass(a, BaseModel)]
        if not sections:
            return []
        model = sections[0]
    return sorted(model.model_fields)


class _PlainLoader(yaml.SafeLoader):
    """SafeLoader without aliases and without repeated keys in a mapping."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.MarkedYAMLError(
                problem=f"alias *{event.anchor[:40]} is not allowed in params (write the value out)",
                problem_mark=event.start_mark,
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, str | int | float | bool) and key in first_line:
                    raise yaml.MarkedYAMLError(
                        problem=f"key {preview(key)} is repeated (first on line {first_line[key]}, again on "
                        f"line {key_node.start_mark.line + 1}); keep one",
                        problem_mark=key_node.start_mark,
                    )
                if isinstance(key, str | int | float | bool):
                    first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def read_yaml(path: Path) -> Any:
    """A params file's YAML, bounded: at most MAX_PARAMS_BYTES, no aliases, no repeated keys."""
    with open(path, "rb") as handle:
        data = handle.read(MAX_PARAMS_BYTES + 1)
    if len(data) > MAX_PARAMS_BYTES:
        raise ParamsError(f"{path}: larger than {MAX_PARAMS_BYTES} bytes, which no params file needs")
    try:
        loader = _PlainLoader(data.decode("utf-8"))
        loader.name = str(path)  # marks in messages name the file, not "<unicode string>"
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except UnicodeDecodeError as exc:
        raise ParamsError(f"{path}: not UTF-8 (byte {exc.start}: {data[exc.start : exc.start + 4]!r})") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid params YAML: {str(exc)[:500]}") from None


def parse_params(raw: Any, source: str = str(PARAMS_FILE)) -> Params:
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        problems = "\n  ".join(_problems(exc.errors(), Params))
        raise ParamsError(f"{source}: invalid params:\n  {problems}") from None


def parse_audit_params(raw: Any, source: str) -> AuditParams | None:
    """A revision's audit section alone (None where it has none): its other sections may predate or
    postdate today's schema, and must not stop an audit of that revision."""
    section = raw.get("audit") if isinstance(raw, dict) else None
    if section is None:
        return None
    try:
        return AuditParams.model_validate(section)
    except ValidationError as exc:
        problems = "\n  ".join(_problems(exc.errors(), AuditParams, ("audit",)))
        raise ParamsError(f"{source}: invalid params:\n  {problems}") from None


def load_params(path: str | Path = PARAMS_FILE, check_paths: bool = True) -> Params:
    """params.yaml, validated; with `check_paths`, the paths it names must exist (a stage's view)."""
    path = Path(path)
    try:
        raw = read_yaml(path)
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found (run from the repository root)") from None
    except (IsADirectoryError, PermissionError) as exc:
        raise ParamsError(f"{path}: cannot be read ({exc.strerror})") from None
    params = parse_params(raw, str(path))
    if check_paths:
        _check_paths(params, str(path))
    return params


def _check_paths(params: Params, source: str) -> None:
    model = Path(params.model.name_or_path).expanduser()
    looks_local = model.is_absolute() or params.model.name_or_path.startswith((".", "~", "models/"))
    if looks_local and not model.is_dir():
        raise ParamsError(
            f"{source}: model.name_or_path: directory {model} does not exist "
            "(a local Hugging Face model directory; `make setup` vendors the default)"
        )
    positions = _max_positions(model / "config.json") if model.is_dir() else None
    if positions is not None and params.tokenize.max_length > positions:
        raise ParamsError(
            f"{source}: tokenize.max_length: {params.tokenize.max_length} is above the model's "
            f"{positions} positions (max_position_embeddings in {model / 'config.json'})"
        )
    translation = params.augment.back_translation
    for key in ("forward_model", "backward_model") if translation else ():
        folder = Path(getattr(translation, key))
        if not (folder / "config.json").is_file():
            raise ParamsError(
                f"{source}: augment.back_translation.{key}: {folder} holds no model (no config.json): "
                f"`reprolab vendor-model <model> {folder}`"
            )
    if not Path(params.ingest.path).exists():
        raise ParamsError(
            f"{source}: ingest.path: {params.ingest.path} does not exist (for the default corpus run `make setup`)"
        )


def _max_positions(config: Path) -> int | None:
    """The model's max_position_embeddings (None where its config does not say)."""
    try:
        value = json.loads(config.read_text(encoding="utf-8")).get("max_position_embeddings")
    except (OSError, ValueError, AttributeError):
        return None  # loading the model reports a broken config, naming it
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def main() -> None:
    """The check_params stage (`python -m reprolab.params`): dvc.yaml gives it the whole params.yaml as
    its dependency and no outputs, so DVC runs it after any edit, catching a misspelt key in a section
    that no changed stage reads, and skips it otherwise. Paths are left to the stages that read them: in
    an experiment workspace (`dvc exp run --temp/--queue`) DVC checks the data out only for those stages."""
    load_params(check_paths=False)
    print(f"check_params: {PARAMS_FILE} is valid")


if __name__ == "__main__":
    run_stage(main, timed=False)
