"""What every engine offers a stage: an ordered, bounded map of a pure function over batches."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Engine(Protocol):
    workers: int  # batches processed at once

    def map(self, fn: Callable[[Item], Result], items: Iterable[Item]) -> Iterator[Result]:
        """fn(item) for each item, yielded in the items' order whatever order they finish in; only a
        few items are in flight at a time, so memory holds a few batches, not the input. `fn` must be
        pure and picklable: it may run in another process, on another machine, or twice (a retry)."""
        ...
