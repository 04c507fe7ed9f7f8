"""The model's tokenizer: resolving the model named in params, batched fast encoding, identity.

Shared by tokenize and augment so that augmented rows are encoded exactly like the rest.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pyarrow as pa

from reprolab.errors import StageError

TOKEN_SCHEMA = pa.schema(
    [("id", pa.string()), ("input_ids", pa.list_(pa.int32())), ("label", pa.int64())]
)
_PATH_PREFIXES = (".", "/", "~", "models/")


def resolve_model(name_or_path: str) -> str:
    """A local model directory as is; anything else is taken for a hub name (needs internet or cache)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise StageError(f"{path}: not a Hugging Face model directory (no config.json) "
                             "(model.name_or_path)")
        return str(path)
    if name_or_path.startswith(_PATH_PREFIXES):
        raise StageError(f"{path}: model directory not found (model.name_or_path; "
                         "for the default model run `make setup`)")
    return name_or_path


def load_tokenizer(name_or_path: str, truncation_side: str = "right"):
    from transformers import AutoTokenizer

    source = resolve_model(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, truncation_side=truncation_side)
    except OSError as exc:
        raise StageError(f"model.name_or_path={name_or_path!r}: cannot load a tokenizer ({exc}). "
                         "Offline (HF_HUB_OFFLINE=1) only local directories and cached hub "
                         "models load: vendor the model with `reprolab vendor-model`.") from None
    if not tokenizer.is_fast:
        raise StageError(f"{name_or_path}: tokenizer {type(tokenizer).__name__} has no fast "
                         "(Rust) implementation; the batched fast path needs one")
    return tokenizer


def encode(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids with special tokens, truncated to max_length; no padding (batches pad later)."""
    return tokenizer(
        texts,
        truncation=True,
        max_length=max_length,
        return_attention_mask=False,
        return_token_type_ids=False,
    )["input_ids"]


def token_table(ids: list[str], input_ids: list[list[int]] | pa.ListArray, labels: list[int]) -> pa.Table:
    """Python lists are converted to the schema's types; an int32 ListArray is taken as it is."""
    return pa.table({"id": ids, "input_ids": input_ids, "label": labels}, schema=TOKEN_SCHEMA)


def label_ids(labels: list[str], names: list[str]) -> list[int]:
    index = {name: i for i, name in enumerate(names)}
    return [index[label] for label in labels]


def identity(tokenizer, name_or_path: str, max_length: int) -> dict[str, Any]:
    """What the token ids depend on, so a result names the exact tokenizer behind it."""
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
        "truncation_side": tokenizer.truncation_side,
        "pad_token_id": tokenizer.pad_token_id,
    }
