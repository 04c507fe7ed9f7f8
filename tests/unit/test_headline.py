"""The headline: what evaluate prints and `reprolab show` prints whatever DVC skipped."""

import hashlib
import json
import shutil

import pytest

from reprolab import paths
from reprolab.errors import StageError
from reprolab.results.headline import headline, show
from reprolab.tasks import catalog
from tests.conftest import FIXTURE_PARAMS

TASK = catalog.task_named("sequence_classification")
METRICS = {
    "transformer": {"macro_f1": 0.91, "accuracy": 0.93},
    "baseline": {"macro_f1": 0.95, "accuracy": 0.96},
    "transformer_vs_baseline": {
        "macro_f1_difference": -0.04,
        "interval_low": -0.07,
        "interval_high": -0.01,
        "mcnemar_p": 0.012,
        "verdict": "baseline better",
    },
    "test_rows": 120,
}
EXPORT = {
    "backends": {
        "torch": {"size_mb": 90.87, "size_vs_torch": 1.0, "macro_f1": 0.91, "agreement_with_torch": 1.0},
        "onnx-int8": {"size_mb": 22.97, "size_vs_torch": 0.253, "macro_f1": 0.9, "agreement_with_torch": 0.99},
    }
}


def test_the_leaderboard_ranks_by_macro_f1_then_gives_the_verdict_and_the_export():
    assert headline(TASK, METRICS, EXPORT) == [
        "1. baseline: test macro-F1 0.9500, accuracy 0.9600",
        "2. transformer: test macro-F1 0.9100, accuracy 0.9300",
        "transformer - baseline macro-F1 -0.0400, 95% interval [-0.0700, -0.0100], McNemar p 0.012: "
        "baseline better (120 test rows)",
        "export onnx-int8: 22.97 MB (0.253x torch), macro-F1 0.9000, agreement with torch 0.9900",
        "export torch: 90.87 MB (1.0x torch), macro-F1 0.9100, agreement with torch 1.0000",
    ]


def project(tmp_path, weights: bytes, scored: bytes):
    shutil.copy(FIXTURE_PARAMS, tmp_path / "params.yaml")
    (tmp_path / paths.MODEL_DIR).mkdir(parents=True)
    (tmp_path / paths.WEIGHTS).write_bytes(weights)
    (tmp_path / paths.REPORTS).mkdir()
    (tmp_path / paths.METRICS).write_text(json.dumps(METRICS | {"weights_md5": hashlib.md5(scored).hexdigest()}))
    return tmp_path


def test_show_reads_the_reports_and_warns_only_when_they_scored_other_weights(tmp_path):
    root = project(tmp_path, b"weights", b"weights")
    assert show(root) == headline(TASK, METRICS)
    (root / paths.WEIGHTS).write_bytes(b"retrained")
    assert show(root)[-1] == (
        "WARNING: these scored other weights than models/model/model.safetensors holds: run `dvc repro` to score it"
    )


def test_show_before_any_repro_says_what_to_run(tmp_path):
    with pytest.raises(StageError, match="no test metrics yet: run `dvc repro`"):
        show(tmp_path)


def test_show_gives_the_students_verdict_against_its_teacher_after_the_teachers_headline(tmp_path):
    root = project(tmp_path, b"weights", b"weights")
    student = paths.SCORED_MODELS["student"]
    (root / student.model_dir).mkdir(parents=True)
    (root / student.weights).write_bytes(b"student")
    student_metrics = {
        "student": {"macro_f1": 0.89, "accuracy": 0.92},
        "transformer": METRICS["transformer"],
        "student_vs_transformer": {
            "macro_f1_difference": -0.02,
            "interval_low": -0.05,
            "interval_high": 0.01,
            "mcnemar_p": 0.3,
            "verdict": "within noise",
        },
        "test_rows": 120,
        "weights_md5": hashlib.md5(b"an older student").hexdigest(),
    }
    (root / student.metrics).parent.mkdir(parents=True)
    (root / student.metrics).write_text(json.dumps(student_metrics))
    assert show(root)[len(headline(TASK, METRICS)) :] == [
        "student (models/student):",
        "1. transformer: test macro-F1 0.9100, accuracy 0.9300",
        "2. student: test macro-F1 0.8900, accuracy 0.9200",
        "student - transformer macro-F1 -0.0200, 95% interval [-0.0500, +0.0100], McNemar p 0.3: "
        "within noise (120 test rows)",
        "WARNING: these scored other weights than models/student/model.safetensors holds: run `dvc repro` to score it",
    ]
