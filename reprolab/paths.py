"""Every file the stages hand to each other and report: the contract that dvc.yaml declares."""

import argparse
from dataclasses import dataclass
from pathlib import Path

RAW = Path("data/raw/raw.parquet")
REJECTS_DIR = Path("data/rejects")
CLEAN_DIR = Path("data/clean")
TOKENS_DIR = Path("data/tokens")
TOKENIZER_IDENTITY = TOKENS_DIR / "tokenizer_identity.json"
AUGMENTED = Path("data/augmented/train.parquet")
# The back_translate stage's rows (every selected training row, each with its status) and its report.
BACK_TRANSLATED = Path("data/augmented/back_translated.parquet")
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
BACK_TRANSLATION_REPORT = REPORTS / "back_translation.json"
PLOTS = REPORTS / "plots"
TRAIN_HISTORY = PLOTS / "train_history.csv"
TRAIN_STEPS = PLOTS / "train_steps.csv"
DISTILL_HISTORY = PLOTS / "distill_history.csv"
DISTILL_STEPS = PLOTS / "distill_steps.csv"
FIGURES = REPORTS / "figures"
TRAIN_FIGURES = FIGURES / "train"
DISTILL_FIGURES = FIGURES / "distill"
EVALUATE_FIGURES = FIGURES / "evaluate"

STUDENT_REPORTS = REPORTS / "student"

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ScoredModel:
    """A trained model's folder and what its evaluate and export stages write: the teacher's (`evaluate`,
    `export`) and the student's (`evaluate_student`, `export_student`: the same modules, `--model student`)."""

    stage_suffix: str  # appended to "evaluate" and "export": the DVC stages and their MLflow runs
    trained_by: str  # the stage that writes the model
    model_dir: Path
    metrics: Path
    plots: Path  # DVC plot data: curves and per-row predictions
    figures: Path
    test_report: Path  # a tagger's per-type tables
    export_dir: Path  # ONNX fp32 and int8 beside the tokenizer and recipe
    export_report: Path

    def stage(self, verb: str) -> str:
        """The DVC stage, and its MLflow run, that does `verb` (evaluate, export) to this model."""
        return f"{verb}{self.stage_suffix}"

    @property
    def weights(self) -> Path:
        return self.model_dir / WEIGHTS.name

    @property
    def is_fine_tuned(self) -> bool:
        """The train stage's model, whose test metrics are the pipeline's headline (not the student)."""
        return self.model_dir == MODEL_DIR


SCORED_MODELS = {
    "model": ScoredModel(
        "", "train", MODEL_DIR, METRICS, PLOTS, EVALUATE_FIGURES, REPORTS / "test_report.txt", EXPORT_DIR, EXPORT_REPORT
    ),
    "student": ScoredModel(
        "_student",
        "distill",
        STUDENT_DIR,
        STUDENT_REPORTS / "metrics.json",
        STUDENT_REPORTS / "plots",
        FIGURES / "evaluate_student",
        STUDENT_REPORTS / "test_report.txt",
        Path("models/student_export"),
        STUDENT_REPORTS / "export.json",
    ),
}


def scored_model(argv: list[str]) -> ScoredModel:
    """The model an evaluate or export stage works on: `--model student`, or by default the fine-tuned one."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=sorted(SCORED_MODELS), default="model")
    return SCORED_MODELS[parser.parse_args(argv).model]


def clean_split(split: str) -> Path:
    return CLEAN_DIR / f"{split}.parquet"


def token_split(split: str) -> Path:
    return TOKENS_DIR / f"{split}.parquet"


def rejects(stage: str) -> Path:
    return REJECTS_DIR / f"{stage}.parquet"
