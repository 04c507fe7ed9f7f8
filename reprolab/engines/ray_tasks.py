"""The Ray engine: each batch a Ray task, on the cluster at `engine.address` or RAY_ADDRESS, or on a
cluster of this machine's cores that the stage starts and stops; a batch that needs a model (`map_with`)
goes to one of a pool of Ray actors, each holding its own copy; a map over groups of rows
(`map_grouped`) is a Ray Data sort by the key, each sorted block one partition.

Ray retries a task whose worker process died (killed, out of memory, its machine lost) on another
worker, and restarts a dead actor (which loads its model again) to retry its task; a task is a pure
function of its batch, so a retry gives the same bytes. The workers import
this project from their own environment: a cluster's machines need the same checkout and pins
(requirements.lock), as the bytes depend on them.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import socket
from collections.abc import Callable, Iterable, Iterator
from functools import partial

import pyarrow as pa
import pyarrow.compute as pc
import ray
import ray.data
import ray.exceptions
from ray.data.context import DataContext, ShuffleStrategy
from ray.util.actor_pool import ActorPool

from reprolab.engines.base import shippable
from reprolab.errors import StageError

# Tries after the first when a worker dies mid-task; an exception the function raises is not retried.
MAX_RETRIES = 3
CONNECT_TIMEOUT_S = 10
# Rows per block of a grouped map's input, so its sort has at least one partition per worker and one
# per million rows (a partition still holds all of a key's rows, however many share it).
GROUP_BLOCK_ROWS = 1_000_000
# How a failed map's message ends: what the user can do about it.
_SEE_THE_LOGS = "nothing was written: see the cluster's logs (/tmp/ray/session_latest/logs) and run it again"


@ray.remote(max_retries=MAX_RETRIES)
def _apply(fn: Callable, item):
    return fn(item)


@ray.remote(max_restarts=MAX_RETRIES, max_task_retries=MAX_RETRIES)
class _Holder:
    """A worker that keeps its state (a model, loaded as it unpickles) for every batch it is given."""

    def __init__(self, state) -> None:
        self.state = state

    def apply(self, fn: Callable, item):
        return fn(self.state, item)


class RayEngine:
    def __init__(self, workers: int) -> None:
        self.workers = workers

    @classmethod
    @contextlib.contextmanager
    def open(cls, workers: int, address: str | None) -> Iterator[RayEngine]:
        """Join the cluster at `address` (else RAY_ADDRESS), or start one on this machine with `workers`
        CPUs (0: all); a cluster this process joined already (ray.init before) is used as it is.
        `workers` batches run at once (0: one per CPU of the cluster)."""
        started = not ray.is_initialized()
        if started:
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report leaves the machine
            address = address or os.environ.get("RAY_ADDRESS")
            if address:
                _check_reachable(address)
            # "local": a new cluster here, never the one a file of Ray's names (a `ray start` killed
            # without its stop leaves it naming a dead address, where ray.init would wait for minutes).
            local = {} if address else {"num_cpus": workers or None}
            try:
                ray.init(
                    address=address or "local",
                    include_dashboard=False,
                    logging_level=logging.WARNING,
                    configure_logging=False,
                    **local,
                )
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise StageError(
                    f"engine.name=ray: no Ray cluster at {address or 'this machine'} ({exc}); start one "
                    "(`ray start --head`) and set engine.address or RAY_ADDRESS, or set engine.name: local"
                ) from None
        try:
            yield cls(workers or max(1, int(ray.cluster_resources().get("CPU", 1))))
        finally:
            if started:
                ray.shutdown()

    def map(self, fn: Callable, items: Iterable) -> Iterator:
        function = ray.put(fn)  # shipped once, not with every batch
        pending: collections.deque = collections.deque()
        try:
            for item in items:
                pending.append(_apply.remote(function, shippable(item)))
                if len(pending) >= self.workers:
                    yield _result(partial(ray.get, pending.popleft()))
            while pending:
                yield _result(partial(ray.get, pending.popleft()))
        finally:
            for task in pending:  # a failed or abandoned stage leaves no task running
                ray.cancel(task, force=True)

    def map_with(self, state, fn: Callable, items: Iterable, per_gpu: bool = False) -> Iterator:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0)) if per_gpu else 0
        # No more holders than the cluster can place: the pool would wait on one never started.
        count = gpus or min(self.workers, max(1, int(resources.get("CPU", 1))))
        state_ref = ray.put(state)  # kept for the block: a restarted holder unpickles it again
        each = {"num_gpus": 1} if gpus else {"num_cpus": 1}  # Ray gives a holder that many threads
        holders = [_Holder.options(**each).remote(state_ref) for _ in range(count)]
        pool, function = ActorPool(holders), ray.put(fn)
        in_flight = 0
        try:
            for item in items:
                pool.submit(lambda holder, value: holder.apply.remote(function, value), shippable(item))
                in_flight += 1
                if in_flight >= 2 * count:  # a few batches each: the input is read as they finish
                    yield _result(pool.get_next)
                    in_flight -= 1
            for _ in range(in_flight):
                yield _result(pool.get_next)
        finally:
            for holder in holders:  # its queued batches go with it, on a cluster this stage joined too
                ray.kill(holder)

    def map_grouped(self, fn: Callable, table: pa.Table, key: str) -> pa.Table:
        if not table.num_rows:
            return fn(table)
        size = -(-table.num_rows // max(self.workers, -(-table.num_rows // GROUP_BLOCK_ROWS)))
        blocks = [table.slice(start, size) for start in range(0, table.num_rows, size)]
        with _ray_data_settings():
            # A sort puts equal keys in one partition, each partition one block, so map_batches with
            # batch_size=None sees every group whole: what Ray's own GroupedData.map_groups relies on,
            # here with one vectorised call per partition instead of a Python call per group.
            partitions = (
                ray.data.from_arrow(blocks)
                .sort(key)
                .map_batches(
                    partial(_partition_result, fn, key, table.schema.field(key).type),
                    batch_size=None,
                    batch_format="pyarrow",
                )
            )
            try:
                parts = pa.concat_tables(ray.get(partitions.to_arrow_refs())).sort_by("first")
            except ray.exceptions.RayError as exc:
                raise StageError(
                    f"engine.name=ray: a grouped map by {key!r} failed ({_own_error(exc)}); {_SEE_THE_LOGS}"
                ) from None
        first, last = parts["first"].to_pylist(), parts["last"].to_pylist()
        mapped = sum(parts["rows"].to_pylist())
        split = any(previous >= following for previous, following in zip(last[:-1], first[1:], strict=True))
        if split or mapped != table.num_rows:  # a group cut in two, or rows lost, would be decided wrongly
            what = (
                f"split a group of {key!r} across its partitions"
                if split
                else f"lost rows ({mapped} of {table.num_rows} reached a partition)"
            )
            raise StageError(
                f"engine.name=ray: Ray Data {what}, of {len(first)} partitions; nothing was written: report "
                "this with the Ray version, or set engine.name: local"
            )
        return pa.concat_tables(pa.ipc.open_stream(result).read_all() for result in parts["result"].to_pylist())


@contextlib.contextmanager
def _ray_data_settings() -> Iterator[None]:
    """For the block: Ray Data sorts by sampled ranges in tasks (its default hash shuffle starts
    aggregator actors, seconds a job), never cuts a partition into several blocks, shows no progress
    bars, and keeps its per-job warnings (progress bars off; a new cluster's CPUs not yet reported) off
    the stage's terminal; its failures still raise. The process's settings are restored after."""
    context, logger = DataContext.get_current(), logging.getLogger("ray.data")
    saved = (context.shuffle_strategy, context.target_max_block_size, context.enable_progress_bars, logger.level)
    context.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    context.target_max_block_size = None
    context.enable_progress_bars = False
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        context.shuffle_strategy, context.target_max_block_size, context.enable_progress_bars, level = saved
        logger.setLevel(level)


def _own_error(exc: Exception) -> str:
    """The error a Ray task's function raised, from the traceback Ray wraps it in (Ray Data keeps only
    its text): the line before the first "direct cause", else the first line."""
    lines = str(exc).split("The above exception was the direct cause")[0].strip().splitlines()
    return (lines[-1].strip() if lines else type(exc).__name__)[:300]


def _partition_result(fn: Callable, key: str, key_type: pa.DataType, partition: pa.Table) -> pa.Table:
    """One row for a sorted partition: its first and last key and its rows, for the driver's checks
    that no group was split and no row lost, and fn's result as an Arrow IPC stream; no row for an
    empty partition."""
    if not partition.num_rows:
        return _partition_row(key_type, [], [], [], [])
    sink = pa.BufferOutputStream()
    result = fn(partition)
    with pa.ipc.new_stream(sink, result.schema) as writer:
        writer.write_table(result)
    bounds = pc.min_max(partition[key])
    return _partition_row(
        key_type,
        [bounds["min"].as_py()],
        [bounds["max"].as_py()],
        [partition.num_rows],
        [sink.getvalue().to_pybytes()],
    )


def _partition_row(key_type: pa.DataType, first: list, last: list, rows: list[int], result: list[bytes]) -> pa.Table:
    return pa.table(
        {
            "first": pa.array(first, key_type),
            "last": pa.array(last, key_type),
            "rows": pa.array(rows, pa.int64()),
            "result": pa.array(result, pa.large_binary()),
        }
    )


def _check_reachable(address: str) -> None:
    """A cluster address that nothing answers at fails now: ray.init would retry it for minutes."""
    if address in ("auto", "local"):  # Ray's names for a cluster found on this machine
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except (OSError, ValueError) as exc:
        raise StageError(
            f"engine.name=ray: nothing answers at {address} ({exc}); start the cluster (`ray start --head`) "
            "and set engine.address or RAY_ADDRESS to its host:port, or set engine.name: local"
        ) from None


def _result(get: Callable):
    """What `get` (ray.get of a task, an actor pool's next result) returns, a worker's failure worded."""
    try:
        return get()
    except ray.exceptions.RayTaskError as exc:  # the function's own error, as the local engine raises it
        raise exc.cause from None
    except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError, ray.exceptions.RayActorError) as exc:
        raise StageError(
            f"engine.name=ray: a worker died {MAX_RETRIES + 1} times running one batch, or could not start "
            f"({type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}); {_SEE_THE_LOGS}"
        ) from None
