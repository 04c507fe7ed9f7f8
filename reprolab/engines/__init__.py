"""Where the data stages' batches run: this machine (`local`) or a Ray cluster (`ray`), chosen by
params.yaml's `engine.name`.

A stage reads its input in batches, hands each batch to a pure function and writes the results in
input order, so the outputs are the same bytes whichever engine ran the function and on however many
workers (docs/scaling.md). `open_engine` gives the stage an `Engine`: `engine.map(fn, batches)`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from reprolab.engines.base import Engine
from reprolab.engines.local import IN_PROCESS, LocalEngine
from reprolab.params import EngineParams

__all__ = ["IN_PROCESS", "Engine", "LocalEngine", "open_engine"]


@contextlib.contextmanager
def open_engine(p: EngineParams, local_workers: int | None = None) -> Iterator[Engine]:
    """The engine `p` names, open for the block. `local_workers` overrides `p.workers` on the local
    engine only: a stage whose batch function already uses every core (a fast tokenizer's threads)
    runs it in its own process there."""
    if p.name == "ray":
        from reprolab.engines.ray_tasks import RayEngine  # Ray is imported only where it runs

        with RayEngine.open(p.workers, p.address) as engine:
            yield engine
        return
    with LocalEngine.open(local_workers or p.workers) as engine:
        yield engine
