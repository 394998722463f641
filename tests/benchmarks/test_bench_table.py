"""Benchmarks of shmref.table: get, set and update, alone and from several processes.

``nox -s bench -- table`` measures and stores docs/bench/table.json; the test
suite runs each benchmark once, small (see timing.py). docs/_ext/report_table.py
turns the stored run into the page's tables, plots, claims and goals, reading
the ``extra_info`` keys set here: way, op, ops (per round), processes, keys.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from multiprocessing.managers import SyncManager
from typing import Any

import pytest

from shmref.table import CtypesDict, ManagerDict, QueueDict, SharedDict, increment

from .timing import WorkerGroup, size, time_groups

CTX = multiprocessing.get_context()

WAYS: dict[str, Callable[[Any], SharedDict]] = {
    "ctypes": lambda ctx: CtypesDict(ctx=ctx),
    "queue": lambda ctx: QueueDict(ctx=ctx),
    "manager": lambda ctx: ManagerDict(ctx=ctx),
}
OPS = ("get", "set", "update")

#: Keys in the table while it is measured; the loops cycle through them.
KEYS = [f"key-{i}" for i in range(64)]

# Operations per timed round, so that a round lasts a few ms to 50 ms: short
# rounds, many of them, keep the median clear of another process's time slice.
LATENCY_OPS = {"ctypes": 5_000, "queue": 1_000, "manager": 1_000}
LATENCY_ROUNDS = 50
# Operations per process per round in the throughput runs (about 0.1-0.3 s).
THROUGHPUT_OPS = {"ctypes": 40_000, "queue": 1_000, "manager": 2_000}


def do(table: Any, op: str, keys: list[str], n: int) -> None:
    """``n`` operations ``op`` on ``table``, cycling through ``keys``."""
    keys = (keys * (n // len(keys) + 1))[:n]
    if op == "get":
        get = table.get
        for key in keys:
            get(key)
    elif op == "set":
        for i, key in enumerate(keys):
            table[key] = i
    else:
        update = table.update
        for key in keys:
            update(key, increment, 0)


def table_worker(
    table: Any, op: str, keys: list[str], n: int, barrier: Any, timeout: float
) -> None:
    """Process target: meet the others, do ``n`` operations, meet them again."""
    barrier.wait(timeout)
    do(table, op, keys, n)
    barrier.wait(timeout)
    table.close()


@pytest.fixture
def table_for(request: pytest.FixtureRequest) -> Callable[[str], Any]:
    def make(way: str) -> Any:
        table = WAYS[way](CTX)
        request.addfinalizer(table.close)
        for key in KEYS:
            table[key] = 0
        return table

    return make


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("way", list(WAYS))
def test_latency(benchmark: Any, table_for: Callable[[str], Any], way: str, op: str) -> None:
    """One operation at a time in one process, on a table of 64 keys."""
    table = table_for(way)
    ops = size(benchmark, LATENCY_OPS[way], 20)
    benchmark.group = f"table-{op}"
    benchmark.extra_info.update(way=way, op=op, ops=ops, processes=1)
    benchmark.pedantic(
        do,
        args=(table, op, KEYS, ops),
        rounds=size(benchmark, LATENCY_ROUNDS, 1),
        warmup_rounds=size(benchmark, 1, 0),
    )


class _PlainDict(dict):  # type: ignore[type-arg]
    """A process-local dict with the tables' update, for the baseline."""

    def update(self, key: str, fn: Callable[[Any], Any], default: Any) -> Any:  # type: ignore[override]
        self[key] = value = fn(self.get(key, default))
        return value


class _RawManagerDict:
    """``multiprocessing.Manager().dict()`` as people use it: ``update`` takes a
    manager Lock and reads then writes (four round trips)."""

    def __init__(self, manager: SyncManager) -> None:
        self.dict: Any = manager.dict()
        self.lock: Any = manager.Lock()
        self.get = self.dict.get

    def __setitem__(self, key: str, value: Any) -> None:
        self.dict[key] = value

    def update(self, key: str, fn: Callable[[Any], Any], default: Any) -> Any:
        with self.lock:
            self.dict[key] = value = fn(self.dict.get(key, default))
        return value


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("baseline", ["dict", "manager-dict"])
def test_latency_baseline(benchmark: Any, baseline: str, op: str) -> None:
    """A plain dict (no sharing), and a stdlib manager.dict() with a manager Lock."""
    manager = None
    if baseline == "dict":
        table: Any = _PlainDict()
        ops = size(benchmark, LATENCY_OPS["ctypes"], 20)
    else:
        manager = SyncManager(ctx=CTX)
        manager.start()
        table = _RawManagerDict(manager)
        ops = size(benchmark, LATENCY_OPS["manager"], 20)
    try:
        for key in KEYS:
            table[key] = 0
        benchmark.group = f"table-{op}"
        benchmark.extra_info.update(way=baseline, op=op, ops=ops, processes=1, baseline=True)
        benchmark.pedantic(
            do,
            args=(table, op, KEYS, ops),
            rounds=size(benchmark, LATENCY_ROUNDS, 1),
            warmup_rounds=size(benchmark, 1, 0),
        )
    finally:
        del table
        if manager is not None:
            manager.shutdown()


def _keys_of(worker: int, keys: str) -> list[str]:
    # "shared": every process works on the same 8 keys; "distinct": 8 of its own.
    return KEYS[:8] if keys == "shared" else KEYS[8 * worker : 8 * worker + 8]


THROUGHPUT_RUNS = [(1, "distinct"), (2, "distinct"), (2, "shared"), (4, "distinct"), (4, "shared")]


@pytest.mark.parametrize(("processes", "keys"), THROUGHPUT_RUNS)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("way", list(WAYS))
def test_throughput(
    benchmark: Any,
    table_for: Callable[[str], Any],
    way: str,
    op: str,
    processes: int,
    keys: str,
) -> None:
    """P processes each do N operations; process start-up and exit are not timed."""
    table = table_for(way)
    ops = size(benchmark, THROUGHPUT_OPS[way], 40)
    rounds = size(benchmark, 3, 1)
    benchmark.group = f"table-throughput-{op}"
    benchmark.extra_info.update(
        way=way, op=op, ops=ops * processes, processes=processes, keys=keys
    )
    worker = iter(range(processes * rounds))

    def args_for(barrier: Any) -> tuple[Any, ...]:
        return (table, op, _keys_of(next(worker) % processes, keys), ops, barrier)

    time_groups(benchmark, lambda: WorkerGroup(CTX, table_worker, args_for, processes), rounds)
    if op == "update":  # every update arrived, none was lost
        assert sum(table.snapshot().values()) == ops * processes * rounds


@pytest.mark.parametrize("way", list(WAYS))
def test_startup(benchmark: Any, way: str) -> None:
    """Create and close a table: the Queue's owner or the Manager's server starts."""
    benchmark.group = "table-startup"
    benchmark.extra_info.update(way=way, ops=1, method=CTX.get_start_method())

    def create_and_close() -> None:
        WAYS[way](CTX).close()

    benchmark.pedantic(create_and_close, rounds=size(benchmark, 5, 1))
