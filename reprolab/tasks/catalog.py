"""The tasks params.yaml's top-level `task:` can name."""

from __future__ import annotations

from reprolab.errors import StageError
from reprolab.tasks.base import Task
from reprolab.tasks.sequence_classification import SequenceClassification
from reprolab.tasks.token_classification import TokenClassification

TASKS: dict[str, Task] = {task.name: task for task in (SequenceClassification(), TokenClassification())}
# What a recipe or params file from before the `task` key was trained as.
DEFAULT = SequenceClassification.name


def task_named(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise StageError(f"task {name!r}: not a task of this pipeline (one of {sorted(TASKS)})") from None
