"""What an audit compares and how it records each comparison: the files a revision records its results
in, one comparison's result (`Check`), and the error an audit stops with (`AuditError`).

Their own module, so that the run (reproduce), the DVC handling (remote) and the cause finder (causes)
share them without importing one another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reprolab import paths
from reprolab.errors import StageError

METRICS_FILE = paths.METRICS.as_posix()
TRAIN_REPORT = paths.TRAIN_REPORT.as_posix()
EXPORT_REPORT = paths.EXPORT_REPORT.as_posix()
STUDENT_METRICS_FILE = paths.SCORED_MODELS["student"].metrics.as_posix()  # absent before the student was scored


class AuditError(StageError):
    """The target cannot be audited (unknown, dirty, or without a pipeline)."""


@dataclass
class Check:
    kind: str  # output | dependency | param | metric | export_metric | mlflow_metric | mlflow_input | mlflow_model
    name: str
    recorded: Any
    reproduced: Any
    ok: bool
    detail: str = ""
