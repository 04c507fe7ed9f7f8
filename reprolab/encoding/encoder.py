"""The model's tokenizer: resolving the model named in params, batched fast encoding, identity.

Shared by tokenize and augment so that augmented rows are encoded exactly like the rest.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from reprolab.errors import StageError

TOKEN_SCHEMA = pa.schema([("id", pa.string()), ("input_ids", pa.list_(pa.int32())), ("label", pa.int64())])
_PATH_PREFIXES = (".", "/", "~", "models/")
_PROBE = "probe text"


@dataclass(frozen=True)
class Truncation:
    """Which of a long text's tokens the model sees (tokenize.truncation): the first ones (head), the
    last ones (tail), or `head_fraction` of them from the start and the rest from the end (head_tail)."""

    kind: str = "head"
    head_fraction: float = 0.25

    @classmethod
    def of(cls, params) -> Truncation:
        """From a TokenizeParams section (a tagger's has none: its windows never cut a sentence, and its
        tokenizer keeps the default side)."""
        return cls(params.truncation or "head", params.head_fraction)

    def head(self, budget: int) -> int:
        """How many of `budget` kept tokens come from the start of a text that has more."""
        return {"head": budget, "tail": 0}.get(self.kind, int(budget * self.head_fraction))

    def keep(self, items: list, budget: int) -> list:
        """The items (tokens, words) truncation keeps of `items`, at most `budget`, in their order."""
        if len(items) <= budget:
            return items
        head = self.head(budget)
        return items[:head] + items[len(items) - (budget - head) :]

    @property
    def tokenizer_side(self) -> str:
        """The nearest truncation side a plain Hugging Face tokenizer knows (it has no head_tail)."""
        return "left" if self.kind == "tail" else "right"


HEAD = Truncation()  # the tokenizers' default: the first tokens


def resolve_model(name_or_path: str) -> str:
    """A local model directory as is; anything else is taken for a hub name (needs internet or cache)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise StageError(f"{path}: not a Hugging Face model directory (no config.json) (model.name_or_path)")
        return str(path)
    if name_or_path.startswith(_PATH_PREFIXES):
        raise StageError(
            f"{path}: model directory not found (model.name_or_path; for the default model run `make setup`)"
        )
    return name_or_path


def load_tokenizer(name_or_path: str, truncation_side: str = "right"):
    """The model's fast tokenizer; `truncation_side` only matters to users of a saved copy
    (`encode` truncates by a `Truncation`)."""
    from transformers import AutoTokenizer

    source = resolve_model(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, truncation_side=truncation_side)
    except OSError as exc:
        raise StageError(
            f"model.name_or_path={name_or_path!r}: cannot load a tokenizer ({exc}). "
            "Offline (HF_HUB_OFFLINE=1) only local directories and cached hub "
            "models load: vendor the model with `reprolab vendor-model`."
        ) from None
    if not tokenizer.is_fast:
        raise StageError(
            f"{name_or_path}: tokenizer {type(tokenizer).__name__} has no fast "
            "(Rust) implementation; the batched fast path needs one"
        )
    return tokenizer


def special_tokens(tokenizer) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a single text ([CLS], [SEP])."""
    plain = tokenizer(_PROBE, add_special_tokens=False)["input_ids"]
    full = tokenizer(_PROBE)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start], full[start + len(plain) :]
    raise ValueError("its post-processor does more than put special tokens around a text")


def encode(tokenizer, texts: list[str], max_length: int, truncation: Truncation = HEAD) -> list[list[int]]:
    """Token ids of whole texts with special tokens, at most max_length, the text's tokens kept by
    `truncation`; no padding (batches pad later). With head or tail truncation these are the tokenizer's
    own truncated ids (`truncation=True`): the text's ids cut to what the special tokens leave room for."""
    prefix, suffix = special_tokens(tokenizer)
    budget = max(max_length - len(prefix) - len(suffix), 0)
    # verbose=False: no warning that a whole text is longer than the model takes; it is cut here.
    whole = tokenizer(
        texts, add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False, verbose=False
    )["input_ids"]
    return [prefix + truncation.keep(ids, budget) + suffix for ids in whole]


def token_table(ids: list[str], input_ids: list[list[int]] | pa.ListArray, labels: list[int]) -> pa.Table:
    """Python lists are converted to the schema's types; an int32 ListArray is taken as it is."""
    return pa.table({"id": ids, "input_ids": input_ids, "label": labels}, schema=TOKEN_SCHEMA)


def label_ids(labels: list[str], names: list[str]) -> list[int]:
    index = {name: i for i, name in enumerate(names)}
    return [index[label] for label in labels]


def identity(tokenizer, name_or_path: str, max_length: int, settings: dict[str, Any]) -> dict[str, Any]:
    """What the token ids depend on, so a result names the exact tokenizer behind it; `settings`: the
    task's own (which part of a text is kept; how words are windowed and labelled)."""
    # The vocabulary, normaliser and pre/post-processing; not the per-call truncation/padding state.
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    spec.pop("truncation", None)
    spec.pop("padding", None)
    serialised = json.dumps(spec, sort_keys=True).encode("utf-8")
    return {
        "name_or_path": name_or_path,
        "class": type(tokenizer).__name__,
        "vocab_size": len(tokenizer),
        "sha256": hashlib.sha256(serialised).hexdigest(),
        "max_length": max_length,
        **settings,
        "pad_token_id": tokenizer.pad_token_id,
    }
