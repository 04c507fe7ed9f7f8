"""The local engine: batches in the stage's own process, or on a pool of worker processes on this machine."""

from __future__ import annotations

import collections
import contextlib
import functools
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pyarrow as pa

from reprolab.engines.base import shippable

# In a pool worker of map_with: the state it received when it started.
_held_state = None


class LocalEngine:
    def __init__(self, workers: int, pool: ProcessPoolExecutor | None) -> None:
        self.workers, self._pool = workers, pool

    @classmethod
    @contextlib.contextmanager
    def open(cls, workers: int) -> Iterator[LocalEngine]:
        """`workers` processes (0: one per core); one runs the batches in this process, with no pool."""
        workers = workers or len(os.sched_getaffinity(0))
        if workers == 1:
            yield cls(1, None)
            return
        with _pool(workers, _exit_with_stage, os.getpid()) as pool:
            yield cls(workers, pool)

    def map(self, fn: Callable, items: Iterable) -> Iterator:
        if self._pool is None:
            yield from map(fn, items)
            return
        yield from _in_order(self._pool, fn, items, 2 * self.workers)

    def map_with(self, state, fn: Callable, items: Iterable, per_gpu: bool = False) -> Iterator:
        if self._pool is None:
            yield from map(functools.partial(fn, state), items)
            return
        # A pool of its own, whose workers each receive `state` once as they start.
        with _pool(self.workers, _hold, os.getpid(), state) as pool:
            yield from _in_order(pool, functools.partial(_with_held, fn), items, 2 * self.workers)

    def map_grouped(self, fn: Callable, table: pa.Table, key: str) -> pa.Table:
        # The whole table is one partition, run here: a pool worker would be sent a copy for the same one call.
        return fn(table)


def _pool(workers: int, initializer: Callable, *initargs) -> ProcessPoolExecutor:
    # forkserver: workers start from a clean process, not a fork of one with pyarrow's threads running.
    return ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("forkserver"),
        initializer=initializer,
        initargs=initargs,
    )


def _in_order(pool: ProcessPoolExecutor, fn: Callable, items: Iterable, in_flight: int) -> Iterator:
    """fn over items on the pool, in order, `in_flight` at a time (Executor.map would submit them all)."""
    pending: collections.deque = collections.deque()
    for item in items:
        pending.append(pool.submit(fn, shippable(item)))
        if len(pending) >= in_flight:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _hold(stage: int, state) -> None:
    global _held_state
    _exit_with_stage(stage)
    _held_state = state


def _with_held(fn: Callable, item):
    return fn(_held_state, item)


def _exit_with_stage(stage: int) -> None:
    """A worker of a stage that was killed (SIGKILL, OOM) exits instead of lingering with its memory.

    Its parent is the forkserver, which outlives the stage while any worker does, so the worker
    watches the stage process itself.
    """

    def stage_running() -> bool:
        try:  # a zombie has exited; only its parent has not collected it yet
            return Path(f"/proc/{stage}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    def watch() -> None:
        while stage_running():
            time.sleep(1)
        os._exit(1)

    if Path("/proc/self/stat").exists():  # Linux; elsewhere workers end with the pool as usual
        threading.Thread(target=watch, daemon=True).start()


# The batches in the caller's own process: for library calls and tests that need no pool.
IN_PROCESS = LocalEngine(1, None)
