"""Benchmarks of shmref.value: get, set, update, throughput, per-type checks.

``nox -s bench -- value`` measures and stores docs/bench/value.json; the test
suite runs each benchmark once, small (see timing.py). The report that turns
the stored run into tables and verdicts is docs/_ext/report_value.py; the
``extra_info`` keys set here (way, processes, ops, type) are what it reads.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import operator
from collections.abc import Callable
from typing import Any

import pytest

from shmref.value import TYPES, CtypesValue, ManagerValue, QueueValue, update_worker

from .startup import time_startup
from .timing import WorkerGroup, size, time_groups

CTX = multiprocessing.get_context()

WAYS: dict[str, Callable[[Any], Any]] = {
    "ctypes": lambda ctx: CtypesValue(ctypes.c_int64, ctx=ctx),
    "queue": lambda ctx: QueueValue(ctypes.c_int64, ctx=ctx),
    "manager": lambda ctx: ManagerValue(ctypes.c_int64, ctx=ctx),
}

# Operations per timed round, sized so a round lasts roughly 10-100 ms.
LATENCY_OPS = {"ctypes": 20_000, "queue": 1_000, "manager": 1_000}
SET_OPS = {"ctypes": 20_000, "queue": 10_000, "manager": 1_000}
# Updates per process in the throughput runs (roughly 0.1-0.5 s a round).
THROUGHPUT_OPS = {"ctypes": 50_000, "queue": 2_000, "manager": 2_000}


@pytest.fixture
def value_for(request: pytest.FixtureRequest) -> Callable[[str], Any]:
    def make(way: str) -> Any:
        value = WAYS[way](CTX)
        request.addfinalizer(value.close)
        return value

    return make


def _rounds(benchmark: Any) -> dict[str, int]:
    return {"rounds": size(benchmark, 15, 1), "warmup_rounds": size(benchmark, 1, 0)}


@pytest.mark.parametrize("way", list(WAYS))
def test_get(benchmark: Any, value_for: Callable[[str], Any], way: str) -> None:
    """get() in one process: a locked read, or a request and its reply."""
    value = value_for(way)
    ops = size(benchmark, LATENCY_OPS[way], 20)
    benchmark.group = "value-get"
    benchmark.extra_info.update(way=way, ops=ops, processes=1)

    def gets() -> None:
        get = value.get
        for _ in range(ops):
            get()

    benchmark.pedantic(gets, **_rounds(benchmark))


@pytest.mark.parametrize("way", list(WAYS))
def test_set(benchmark: Any, value_for: Callable[[str], Any], way: str) -> None:
    """set(i) in one process; the round ends with get(), once the owner has them all."""
    value = value_for(way)
    ops = size(benchmark, SET_OPS[way], 20)
    benchmark.group = "value-set"
    benchmark.extra_info.update(way=way, ops=ops, processes=1)

    def sets() -> None:
        set_value = value.set
        for i in range(ops):
            set_value(i)
        assert value.get() == ops - 1

    benchmark.pedantic(sets, **_rounds(benchmark))


@pytest.mark.parametrize("way", list(WAYS))
def test_update(benchmark: Any, value_for: Callable[[str], Any], way: str) -> None:
    """update(operator.add, 1) in one process: an atomic read-modify-write."""
    value = value_for(way)
    ops = size(benchmark, LATENCY_OPS[way], 20)
    benchmark.group = "value-update"
    benchmark.extra_info.update(way=way, ops=ops, processes=1)

    def updates() -> None:
        update, add = value.update, operator.add
        for _ in range(ops):
            update(add, 1)

    benchmark.pedantic(updates, **_rounds(benchmark))


# What people write by hand with multiprocessing.Value (a c_int64 and its RLock).


def _value_read(value: Any, ops: int) -> None:
    for _ in range(ops):
        value.value  # noqa: B018 - the read is what is timed


def _value_write(value: Any, ops: int) -> None:
    for i in range(ops):
        value.value = i


def _value_locked_rmw(value: Any, ops: int) -> None:
    lock = value.get_lock()
    for _ in range(ops):
        with lock:
            value.value = value.value + 1


BASELINES: dict[str, tuple[str, Callable[[Any, int], None], bool]] = {
    # name: (group, loop, synchronized)
    "mp-value-read": ("value-get", _value_read, True),  # v.value (takes its lock)
    "raw-value-read": ("value-get", _value_read, False),  # RawValue: no lock
    "mp-value-write": ("value-set", _value_write, True),  # v.value = i
    "raw-value-write": ("value-set", _value_write, False),
    "mp-value-rmw": ("value-update", _value_locked_rmw, True),  # with lock: v.value += 1
}


@pytest.mark.parametrize("baseline", list(BASELINES))
def test_baseline(benchmark: Any, baseline: str) -> None:
    """The stdlib's Value and RawValue used directly, in one process."""
    group, loop, synchronized = BASELINES[baseline]
    value = CTX.Value(ctypes.c_int64, 0) if synchronized else CTX.RawValue(ctypes.c_int64, 0)
    ops = size(benchmark, 20_000, 20)
    benchmark.group = group
    benchmark.extra_info.update(way=baseline, ops=ops, processes=1, baseline=True)
    benchmark.pedantic(loop, args=(value, ops), **_rounds(benchmark))


@pytest.mark.parametrize("type_name", list(TYPES))
def test_set_by_type(benchmark: Any, type_name: str) -> None:
    """CtypesValue.set per C type: what checking the value costs."""
    ctype = TYPES[type_name]
    sample = {"c_float": 0.1, "c_double": 0.1, "c_bool": True, "c_char": b"a"}.get(type_name, 7)
    ops = size(benchmark, 20_000, 20)
    benchmark.group = "value-set-type"
    benchmark.extra_info.update(way="ctypes", type=type_name, ops=ops, processes=1)
    with CtypesValue(ctype, ctx=CTX) as value:

        def sets() -> None:
            set_value = value.set
            for _ in range(ops):
                set_value(sample)

        benchmark.pedantic(sets, **_rounds(benchmark))


@pytest.mark.parametrize("processes", [1, 2, 4])
@pytest.mark.parametrize("way", list(WAYS))
def test_update_throughput(
    benchmark: Any, value_for: Callable[[str], Any], way: str, processes: int
) -> None:
    """P processes each update(operator.add, 1) N times; start-up is not timed."""
    value = value_for(way)
    ops = size(benchmark, THROUGHPUT_OPS[way], 50)
    rounds = size(benchmark, 5, 1)
    benchmark.group = f"value-throughput-{processes}"
    benchmark.extra_info.update(way=way, ops=ops * processes, processes=processes)
    time_groups(
        benchmark,
        lambda: WorkerGroup(CTX, update_worker, lambda b: (value, ops, b), processes),
        rounds=rounds,
    )
    assert value.get() == ops * processes * rounds


@pytest.mark.parametrize("way", list(WAYS))
def test_startup(benchmark: Any, way: str) -> None:
    """Create and close a value: the Queue's owner or the Manager's server starts."""
    time_startup(benchmark, "value-startup", way, lambda: WAYS[way](CTX), CTX.get_start_method())
