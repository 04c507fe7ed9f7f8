"""Every file the stages hand to each other: the contract that dvc.yaml declares."""

from pathlib import Path

RAW = Path("data/raw/raw.parquet")
REJECTS_DIR = Path("data/rejects")
CLEAN_DIR = Path("data/clean")
TOKENS_DIR = Path("data/tokens")
AUGMENTED = Path("data/augmented/train.parquet")
MODEL_DIR = Path("models/model")
REPORTS = Path("reports")
PLOTS = REPORTS / "plots"
FIGURES = REPORTS / "figures"

SPLITS = ("train", "val", "test")


def clean_split(split: str) -> Path:
    return CLEAN_DIR / f"{split}.parquet"


def token_split(split: str) -> Path:
    return TOKENS_DIR / f"{split}.parquet"


def rejects(stage: str) -> Path:
    return REJECTS_DIR / f"{stage}.parquet"
