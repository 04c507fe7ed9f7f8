"""The one error type stages raise for bad input, and the entry point that reports it and the time."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path


class StageError(ValueError):
    """A problem with a stage's input or params: reported in one line, no traceback."""


def run_stage(main: Callable[[], None], timed: bool = True, name: str | None = None) -> None:
    """Run a stage's main; bad input exits with status 2 and a message naming file, row and field.
    `name`: the stage's, where it is not its module's (`python -m stages.evaluate --model student`)."""
    started = time.perf_counter()
    try:
        main()
        if timed:
            print(f"{name or Path(sys.argv[0]).stem}: done in {time.perf_counter() - started:.1f} s")
    except StageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
