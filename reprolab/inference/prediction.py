"""One path from a raw record to the model's probabilities, shared by evaluate, `reprolab predict`, the
MLflow model and the export stage.

A record is cleaned as the clean stage cleans it, encoded as tokenize encodes it, and scored by a
backend: the fine-tuned torch model, or its ONNX export through onnxruntime. What the model was trained
under is its `Recipe`, a file in the model folder that train writes, so the folder alone is enough to
predict. What a record is differs by task (`INPUTS`): a text (a raw mail's bytes, or a text) cleaned by
`cleaning.clean_text` and truncated to one sequence (`VerifiedEncoder`), with a row of class
probabilities as its result; or a sentence's words, each normalised (`sentence_cleaning.clean_words`),
cut into tokenize's windows (`word_alignment.windows_table`) and read back to one row of tag
probabilities per word (`word_alignment.words_of`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from reprolab import storage
from reprolab.data import cleaning, sentence_cleaning
from reprolab.encoding import encoder, word_alignment
from reprolab.encoding.truncated import VerifiedEncoder
from reprolab.errors import StageError
from reprolab.model import runtime
from reprolab.params import MAIL_FORMATS, CleanParams, IngestParams, Params, TokenizeParams, class_name
from reprolab.tasks import catalog
from reprolab.tasks.base import Task

RECIPE_FILE = "reprolab_preprocessing.json"
# The exported files of a model folder (the export stage's): backend name -> file.
ONNX_FILES = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx"}
BACKENDS = ("torch", *ONNX_FILES)
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
# The clean params that decide a single text (the others deduplicate and split a corpus).
_TEXT_RULES = ("min_chars", "max_chars", "reject_checksum_mismatch")
# The ingest params that say what the training records were and how their labels read.
_SOURCE_KEYS = ("format", "labels", "label_map", "label_strip", "label_casefold", "folder_labels")


@dataclass(frozen=True)
class Recipe:
    """How the model's training records became token ids: what to repeat for new records."""

    source: dict[str, Any]  # the training source's format and label params (_SOURCE_KEYS)
    clean: dict[str, Any]  # the clean params that decide one text (_TEXT_RULES)
    max_length: int
    truncation: encoder.Truncation = field(default_factory=encoder.Truncation)
    task: str = catalog.DEFAULT
    tokenize: dict[str, Any] = field(default_factory=dict)  # the task's `tokenize_keys` (a tagger's stride)

    @classmethod
    def of(cls, params: Params) -> Recipe:
        ingest = params.ingest.model_dump(mode="json") | {
            "label_map": [[key, value] for key, value in params.ingest.label_map.items()]
        }  # keys keep their type
        clean = params.clean.model_dump(mode="json")
        task = catalog.task_named(params.task)
        return cls(
            {k: ingest[k] for k in (*_SOURCE_KEYS, *task.source_keys)},
            {k: clean[k] for k in _TEXT_RULES},
            params.tokenize.max_length,
            encoder.Truncation.of(params.tokenize),
            params.task,
            {key: getattr(params.tokenize, key) for key in task.tokenize_keys},
        )

    @classmethod
    def read(cls, model_dir: Path) -> Recipe:
        path = Path(model_dir) / RECIPE_FILE
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            return cls(
                saved["source"],
                saved["clean"],
                saved["max_length"],
                encoder.Truncation(saved["truncation"], saved["head_fraction"]),
                saved.get("task", catalog.DEFAULT),  # recipes from before tasks: sequence classification
                saved.get("tokenize", {}),
            )
        except FileNotFoundError:
            raise StageError(
                f"{model_dir}: not a model folder of this pipeline (no {RECIPE_FILE}); "
                "point --model at models/model, an MLflow run id or models:/<name>/<version>"
            ) from None
        except (ValueError, KeyError, TypeError) as exc:
            raise StageError(
                f"{path}: unreadable recipe ({type(exc).__name__}: {exc}); train the model again"
            ) from None

    def write(self, model_dir: Path) -> None:
        storage.write_json(
            {
                "source": self.source,
                "clean": self.clean,
                "max_length": self.max_length,
                "truncation": self.truncation.kind,
                "head_fraction": self.truncation.head_fraction,
                "task": self.task,
                **({"tokenize": self.tokenize} if self.tokenize else {}),
            },
            Path(model_dir) / RECIPE_FILE,
        )

    @property
    def labels(self) -> list[str]:
        return [class_name(label) for label in self.source["labels"]]

    def ingest_params(
        self, path: str, fmt: str, text_column: str = "text", label_column: str = "label", id_column: str | None = None
    ) -> IngestParams:
        """Ingest params to read or validate new records with: the training source's label params, the
        given columns, ingest's default limits."""
        return IngestParams.model_construct(  # the label params were validated when the model was trained
            format=fmt,
            path=path,
            labels=self.source["labels"],
            label_map={key: value for key, value in self.source["label_map"]},
            label_strip=self.source["label_strip"],
            label_casefold=self.source["label_casefold"],
            folder_labels=self.source["folder_labels"],
            text_column=text_column,
            label_column=label_column,
            id_column=id_column,
            **{key: self.source[key] for key in catalog.task_named(self.task).source_keys if key in self.source},
        )

    @property
    def kind(self) -> str:
        """What a text given on its own is: a raw mail when the model learnt from mails, else plain text."""
        return "mail" if self.source["format"] in MAIL_FORMATS else "text"

    @property
    def text_rules(self) -> CleanParams:
        # Validated when train wrote them; `clean_text` reads only these fields.
        return CleanParams.model_construct(**self.clean)


def _torch_logits(task: Task, model_dir: Path, labels: list[str], device: str, bf16: bool) -> Callable:
    target = runtime.select_device(device)
    model = runtime.load_model(task, str(model_dir), labels).to(target)
    return lambda sequences, batch_size, pad_id: runtime.predict_logits(
        model, sequences, batch_size, pad_id, target, bf16
    )


def onnx_session(path: Path, threads: int):
    """An onnxruntime CPU session with `threads` intra-op threads (one inter-op: the graph is a chain)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: no warnings about unused initialisers
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_logits(session, sequences: list[np.ndarray], batch_size: int, pad_id: int) -> np.ndarray:
    def forward(input_ids, mask) -> np.ndarray:
        ids = input_ids.numpy()
        attention = np.ones_like(ids) if mask is None else mask.numpy()
        return session.run(["logits"], {"input_ids": ids, "attention_mask": attention})[0]

    return runtime.batched_logits(sequences, batch_size, pad_id, forward)


class TextInputs:
    """Sequence classification's records: a text cleaned as clean does, truncated to one sequence as
    tokenize does; a record's result is its row of class probabilities."""

    def __init__(self, recipe: Recipe, tokenizer):
        self.rules = recipe.text_rules
        self._encoder = VerifiedEncoder(tokenizer, recipe.max_length, recipe.truncation, "predict")
        self._encode: Callable | None = None

    def clean(self, record: dict) -> tuple[str | None, tuple[str, str] | None]:
        return cleaning.clean_text(record, self.rules)

    def encode(self, texts: list[str]) -> tuple[list[np.ndarray], None]:
        """Token ids as tokenize writes them; the first call with texts checks the fast encoder against
        the tokenizer on them."""
        if not texts:
            return [], None
        if self._encode is None:
            self._encode, ids = self._encoder.verified(texts)
        else:
            ids = self._encode(texts)
        if not isinstance(ids, list):
            ids = ids.to_pylist()
        return [np.asarray(row, dtype=np.int32) for row in ids], None

    def results(self, probs: np.ndarray, layout: None) -> np.ndarray:
        return probs


class SentenceInputs:
    """Token classification's records: a sentence's words (`tokens`), each normalised as clean does, in
    tokenize's windows; a record's result is its words' tag probabilities, a row per word."""

    def __init__(self, recipe: Recipe, tokenizer):
        if "stride" not in recipe.tokenize:
            raise StageError(
                f"the tagger's recipe ({RECIPE_FILE}) does not say how its sentences were cut into windows "
                "(tokenize.stride): it predates the prediction path for taggers; train the model again"
            )
        self.tokenizer = tokenizer
        self.settings = TokenizeParams.model_construct(
            max_length=recipe.max_length, stride=recipe.tokenize["stride"], label_subtokens="first"
        )

    def clean(self, record: dict) -> tuple[list[str] | None, tuple[str, str] | None]:
        words, changed = sentence_cleaning.clean_words(record["tokens"])
        return (words, None) if words is not None else (None, changed)

    def encode(self, sentences: list[list[str]]) -> tuple[list[np.ndarray], runtime.TokenData | None]:
        if not sentences:
            return [], None
        ids = [(str(i), str(i)) for i in range(len(sentences))]
        unscored = [[0] * len(words) for words in sentences]  # the windows' labels are not read
        table = word_alignment.windows_table(self.tokenizer, ids, sentences, unscored, self.settings, [])
        windows = runtime.TokenData.of(table)
        return windows.sequences, windows

    def results(self, probs: np.ndarray, windows: runtime.TokenData | None) -> list[np.ndarray]:
        if windows is None:
            return []
        return word_alignment.words_of(windows.ids, windows.word_index, probs)[1]


# What a record is, and its result, for each task's models.
INPUTS = {"sequence_classification": TextInputs, "token_classification": SentenceInputs}


class Predictor:
    """A model folder's recipe, task, tokenizer and backend: raw records in, the model's probabilities out."""

    def __init__(
        self,
        model_dir: Path,
        backend: str = "torch",
        device: str = "cpu",
        batch_size: int = 64,
        threads: int = 2,
        bf16: bool = False,
    ):
        self.folder = model_dir = Path(model_dir)
        # The folder's full path: a worker elsewhere (a Ray actor) resolves a relative one from its own cwd.
        self._built_from = (model_dir.resolve(), backend, device, batch_size, threads, bf16)
        self.wants_gpu = backend == "torch" and device != "cpu"  # cuda, or auto: a worker's GPU where it has one
        self.recipe = Recipe.read(model_dir)
        self.task = catalog.task_named(self.recipe.task)
        self.labels = self.task.label_names(self.recipe.labels)
        self.batch_size = batch_size
        tokenizer = encoder.load_tokenizer(str(model_dir))
        self.pad_id = tokenizer.pad_token_id or 0
        self.inputs = INPUTS[self.task.name](self.recipe, tokenizer)
        if backend == "torch":
            logits = _torch_logits(self.task, model_dir, self.labels, device, bf16)
        elif backend in ONNX_FILES:
            path = model_dir / ONNX_FILES[backend]
            if not path.is_file():
                raise StageError(
                    f"{model_dir}: no {ONNX_FILES[backend]} (--format {backend} reads the export "
                    "stage's folder, models/export: run `dvc repro export`)"
                )
            session = onnx_session(path, threads)
            logits = lambda sequences, batch_size, pad_id: onnx_logits(session, sequences, batch_size, pad_id)  # noqa: E731
        else:
            raise StageError(f"unknown model format {backend!r}; use one of {list(BACKENDS)}")
        self._logits = logits

    def __reduce__(self):
        # Sent to another process (an engine's worker) as what it was built from, not as its weights: the
        # worker loads the folder itself, on its own device (auto: its GPU where it has one).
        return (Predictor, self._built_from)

    def probabilities(self, sequences: list[np.ndarray]) -> np.ndarray:
        """Class probabilities (rows: sequences, or each position of them for a tagger; columns: `labels`)."""
        if not sequences:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return runtime.softmax(self._logits(sequences, self.batch_size, self.pad_id))

    def score(self, records: Iterable[dict]) -> tuple[list[int], list | np.ndarray, dict[int, tuple[str, str]]]:
        """(positions of the scored records, their results in that order, position -> (reason, detail) of
        the others)."""
        kept, items, rejected = [], [], {}
        for position, record in enumerate(records):
            item, problem = self.inputs.clean(record)
            if problem:
                rejected[position] = problem
            else:
                kept.append(position)
                items.append(item)
        sequences, layout = self.inputs.encode(items)
        return kept, self.inputs.results(self.probabilities(sequences), layout), rejected


def model_folder(reference: str) -> Path:
    """The local model folder behind `reference`: a folder, an MLflow run id (its logged model) or a model
    URI (models:/<name>/<version>, runs:/<id>/model); MLflow's artifacts are fetched from the store."""
    path = Path(reference)
    if path.is_dir():
        return path
    uri = f"runs:/{reference}/model" if _RUN_ID.match(reference) else reference
    if not uri.startswith(("models:/", "runs:/")):
        raise StageError(f"--model {reference}: no such folder, and not an MLflow run id or models:/<name>/<version>")
    import mlflow

    from reprolab.records.tracking import connect

    connect()  # the project's store, wherever the command runs from
    try:
        folder = Path(mlflow.artifacts.download_artifacts(f"{uri.rstrip('/')}/artifacts/model"))
    except mlflow.exceptions.MlflowException as exc:
        raise StageError(f"--model {reference}: {str(exc).splitlines()[0][:300]}") from None
    if not (folder / RECIPE_FILE).is_file():
        raise StageError(f"--model {reference}: the MLflow model holds no model folder of this pipeline")
    return folder
