"""Every file the stages hand to each other and report: the contract that dvc.yaml declares."""

from pathlib import Path

RAW = Path("data/raw/raw.parquet")
REJECTS_DIR = Path("data/rejects")
CLEAN_DIR = Path("data/clean")
TOKENS_DIR = Path("data/tokens")
TOKENIZER_IDENTITY = TOKENS_DIR / "tokenizer_identity.json"
AUGMENTED = Path("data/augmented/train.parquet")
MODEL_DIR = Path("models/model")
WEIGHTS = MODEL_DIR / "model.safetensors"
EXPORT_DIR = Path("models/export")  # ONNX fp32 and int8 beside the tokenizer and recipe
CHECKPOINT_ROOT = Path("checkpoints/train")  # outside DVC's outputs, which DVC deletes before a re-run
# The distilled student: the teacher's logits of the training rows, the student's folder and checkpoints.
TEACHER_LOGITS = Path("data/distill/teacher_logits.parquet")
STUDENT_DIR = Path("models/student")
DISTILL_CHECKPOINTS = Path("checkpoints/distill")
REPORTS = Path("reports")
INGEST_REPORT = REPORTS / "ingest.json"
DATA_REPORT = REPORTS / "data.json"
TRAIN_REPORT = REPORTS / "train.json"
METRICS = REPORTS / "metrics.json"
EXPORT_REPORT = REPORTS / "export.json"
DISTILL_REPORT = REPORTS / "distill.json"
PLOTS = REPORTS / "plots"
TRAIN_HISTORY = PLOTS / "train_history.csv"
TRAIN_STEPS = PLOTS / "train_steps.csv"
DISTILL_HISTORY = PLOTS / "distill_history.csv"
DISTILL_STEPS = PLOTS / "distill_steps.csv"
FIGURES = REPORTS / "figures"
TRAIN_FIGURES = FIGURES / "train"
DISTILL_FIGURES = FIGURES / "distill"
EVALUATE_FIGURES = FIGURES / "evaluate"

SPLITS = ("train", "val", "test")


def clean_split(split: str) -> Path:
    return CLEAN_DIR / f"{split}.parquet"


def token_split(split: str) -> Path:
    return TOKENS_DIR / f"{split}.parquet"


def rejects(stage: str) -> Path:
    return REJECTS_DIR / f"{stage}.parquet"
