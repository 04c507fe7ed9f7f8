"""What every engine offers a stage: an ordered, bounded map of a pure function over batches, one over
workers that each hold a state (a model) loaded once, and a map over groups of rows sharing a key (a
shuffle, on a cluster)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol, TypeVar

import pyarrow as pa

from reprolab import storage

Item = TypeVar("Item")
Result = TypeVar("Result")
State = TypeVar("State")


class Engine(Protocol):
    workers: int  # batches processed at once

    def map(self, fn: Callable[[Item], Result], items: Iterable[Item]) -> Iterator[Result]:
        """fn(item) for each item, yielded in the items' order whatever order they finish in; only a
        few items are in flight at a time, so memory holds a few batches, not the input. `fn` must be
        pure and picklable: it may run in another process, on another machine, or twice (a retry)."""
        ...

    def map_with(
        self, state: State, fn: Callable[[State, Item], Result], items: Iterable[Item], per_gpu: bool = False
    ) -> Iterator[Result]:
        """fn(state, item) for each item, in the items' order, as `map`. `state` is sent to each worker
        once, when it starts (a model unpickles as its folder, which the worker loads), not with every
        item. `per_gpu`: one worker per GPU where the engine has GPUs (a forward pass), else as `map`."""
        ...

    def map_grouped(self, fn: Callable[[pa.Table], pa.Table], table: pa.Table, key: str) -> pa.Table:
        """fn over partitions of `table` in which every row of a `key` value is in the same partition as
        all the others of that value: the whole table on this machine, a shuffle by key on a cluster. The
        results are concatenated in no set order, so `fn` must be pure and give each group's rows the same
        result whatever other groups share its partition and in whatever order the rows come."""
        ...


def shippable(item):
    """What a worker in another process is sent for `item`: an Arrow batch or table as a copy that owns
    just its rows (a slice of a row group would pickle its parent's whole buffers: storage.detached),
    anything else as it is. The stage's own process maps the item itself, uncopied."""
    return storage.detached(item) if isinstance(item, pa.RecordBatch | pa.Table) else item
