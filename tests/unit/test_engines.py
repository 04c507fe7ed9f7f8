"""The engines' contract that needs no cluster: results in input order, one message for a cluster
nothing answers at."""

import socket

import pytest

from reprolab.engines import IN_PROCESS, LocalEngine, open_engine
from reprolab.errors import StageError
from reprolab.params import EngineParams


def test_one_local_worker_maps_in_the_callers_process_in_order():
    with LocalEngine.open(1) as engine:
        assert engine.workers == 1
        assert list(engine.map(str.upper, iter(["b", "a", "c"]))) == ["B", "A", "C"]
    assert list(IN_PROCESS.map(len, [])) == []


def test_in_process_map_with_hands_every_item_the_same_state_in_order():
    state = {"calls": 0}

    def count(held: dict, item: str) -> tuple[str, int]:
        held["calls"] += 1
        return item, held["calls"]

    assert list(IN_PROCESS.map_with(state, count, ["b", "a", "c"], per_gpu=True)) == [("b", 1), ("a", 2), ("c", 3)]


def test_local_workers_override_applies_on_the_local_engine_only():
    with open_engine(EngineParams(name="local", workers=3), local_workers=1) as engine:
        assert engine.workers == 1


@pytest.mark.parametrize("form", ["127.0.0.1:{port}", "ray://127.0.0.1:{port}"])
def test_a_cluster_address_nothing_answers_at_fails_at_once_naming_it(form):
    with socket.socket() as unused:  # a port that was free a moment ago: nothing listens there
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    address = form.format(port=port)
    with pytest.raises(StageError, match=f"engine.name=ray: nothing answers at {address}"):
        with open_engine(EngineParams(name="ray", address=address)):
            pass
