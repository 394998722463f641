"""Benchmarks of shmref.counter: latency, throughput, start-up, the article's claims.

``nox -s bench -- counter`` measures and stores docs/bench/counter.json; the
test suite runs each benchmark once, small (see timing.py). The report that
turns the stored run into tables and verdicts is docs/_ext/benchreport.py;
the ``extra_info`` keys set here (way, processes, ops, ...) are what it reads.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
from collections.abc import Callable
from typing import Any

import pytest

from shmref.counter import (
    CtypesCounter,
    ManagerCounter,
    NaiveManagerCounter,
    QueueCounter,
    SlotCounter,
    UnsafeCounter,
    add_worker,
)

from .peers import AtomicsCounter, describe
from .startup import time_startup
from .timing import BARRIER_TIMEOUT, WorkerGroup, size, time_groups

CTX = multiprocessing.get_context()

WAYS: dict[str, Callable[[Any], Any]] = {
    "ctypes": lambda ctx: CtypesCounter(ctx=ctx),
    "slots": lambda ctx: SlotCounter(ctx=ctx),
    "queue": lambda ctx: QueueCounter(ctx=ctx),
    "queue-batched": lambda ctx: QueueCounter(batch=64, ctx=ctx),
    "manager": lambda ctx: ManagerCounter(ctx=ctx),
    "naive-manager": lambda ctx: NaiveManagerCounter(ctx=ctx),
    # A peer (peers.py): a shared 64-bit word added to with atomics' lock-free inc.
    "atomics": lambda ctx: AtomicsCounter(ctx=ctx),
}
#: The peer each peer way measures.
PEER_OF = {"atomics": "atomics"}

# Operations per timed round, sized so a round lasts roughly 10-100 ms.
LATENCY_OPS = {
    "ctypes": 20_000,
    "slots": 50_000,
    "queue": 10_000,
    "queue-batched": 50_000,
    "manager": 1_000,
    "naive-manager": 300,
    "atomics": 20_000,
}
# Adds per process in the throughput runs (roughly 0.1-0.5 s a round).
THROUGHPUT_OPS = {
    "ctypes": 200_000,
    "slots": 400_000,
    "queue": 20_000,
    "queue-batched": 100_000,
    "manager": 2_000,
    "naive-manager": 500,
    "atomics": 50_000,
}


@pytest.fixture
def counter_for(request: pytest.FixtureRequest, benchmark: Any) -> Callable[[str], Any]:
    def make(way: str) -> Any:
        if way in PEER_OF:
            describe(benchmark, PEER_OF[way])
        counter = WAYS[way](CTX)
        request.addfinalizer(counter.close)
        return counter

    return make


@pytest.mark.parametrize("way", list(WAYS))
def test_add(benchmark: Any, counter_for: Callable[[str], Any], way: str) -> None:
    """Uncontended add() in one process; the round ends with get()."""
    counter = counter_for(way)
    ops = size(benchmark, LATENCY_OPS[way], 20)
    benchmark.group = "counter-add"
    benchmark.extra_info.update(way=way, ops=ops, processes=1)

    def adds() -> None:
        add = counter.add
        for _ in range(ops):
            add()
        counter.get()  # the queue's owner has applied them all

    benchmark.pedantic(adds, rounds=size(benchmark, 20, 1), warmup_rounds=size(benchmark, 1, 0))


def _hand_written_lock(value: Any, ops: int) -> None:
    lock = value.get_lock()
    for _ in range(ops):
        with lock:
            value.value += 1


def _lock_only(value: Any, ops: int) -> None:
    lock = value.get_lock()
    for _ in range(ops):
        with lock:
            pass


def _unlocked(value: Any, ops: int) -> None:
    for _ in range(ops):
        value.value += 1


BASELINES = {
    "hand-written-lock": _hand_written_lock,  # with lock: v.value += 1
    "lock-only": _lock_only,  # with lock: pass
    "unlocked": _unlocked,  # v.value += 1 (racy across processes)
}


@pytest.mark.parametrize("baseline", list(BASELINES))
def test_add_baseline(benchmark: Any, baseline: str) -> None:
    """What users write by hand with multiprocessing.Value, in one process."""
    value = CTX.Value(ctypes.c_int64, 0)
    ops = size(benchmark, 20_000, 20)
    benchmark.group = "counter-add"
    benchmark.extra_info.update(way=baseline, ops=ops, processes=1, baseline=True)
    benchmark.pedantic(
        BASELINES[baseline],
        args=(value, ops),
        rounds=size(benchmark, 20, 1),
        warmup_rounds=size(benchmark, 1, 0),
    )


@pytest.mark.parametrize("processes", [1, 2, 4])
@pytest.mark.parametrize("way", list(WAYS))
def test_throughput(
    benchmark: Any, counter_for: Callable[[str], Any], way: str, processes: int
) -> None:
    """P processes each add N times; process start-up and exit are not timed."""
    counter = counter_for(way)
    ops = size(benchmark, THROUGHPUT_OPS[way], 50)
    benchmark.group = f"counter-throughput-{processes}"
    benchmark.extra_info.update(way=way, ops=ops * processes, processes=processes)
    time_groups(
        benchmark,
        lambda: WorkerGroup(CTX, add_worker, lambda b: (counter, ops, b), processes),
        rounds=size(benchmark, 7, 1),
    )
    expected = ops * processes * (size(benchmark, 7, 1))
    assert counter.get() == expected


METHODS = ["fork", "forkserver", "spawn"]


@pytest.mark.parametrize("method", METHODS)
def test_startup_process(benchmark: Any, method: str) -> None:
    """Start and join one process that does nothing, per start method."""
    ctx = multiprocessing.get_context(method)
    benchmark.group = "counter-startup"
    benchmark.extra_info.update(way="process", method=method, ops=1)

    def start_and_join() -> None:
        p = ctx.Process(target=os.getpid)
        p.start()
        p.join(BARRIER_TIMEOUT)

    start_and_join()  # forkserver's first start also starts the server
    benchmark.pedantic(start_and_join, rounds=size(benchmark, 10, 1))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("way", ["ctypes", "slots", "queue", "manager"])
def test_startup_counter(benchmark: Any, way: str, method: str) -> None:
    """Create and close a counter: the queue's owner or the manager's server starts."""
    ctx = multiprocessing.get_context(method)
    time_startup(benchmark, "counter-startup", way, lambda: WAYS[way](ctx), method)


# The article's benchmark: 10,000 writes from a worker process, through a
# Queue (the parent reads them) or into a locked Value.


def article_queue_writer(q: Any, n: int, barrier: Any = None, timeout: float = 60.0) -> None:
    if barrier is not None:
        barrier.wait(timeout)
    for i in range(n):
        q.put(i)


def article_value_writer(value: Any, n: int, barrier: Any = None, timeout: float = 60.0) -> None:
    if barrier is not None:
        barrier.wait(timeout)
    lock = value.get_lock()
    for _ in range(n):
        with lock:
            value.value += 1
    if barrier is not None:
        barrier.wait(timeout)


class _QueueReader(WorkerGroup):
    """The parent reads every message: the work ends when the last one arrives."""

    def __init__(self, q: Any, n: int) -> None:
        self.q, self.n = q, n
        super().__init__(CTX, article_queue_writer, lambda b: (q, n, b), 1)

    def run(self) -> None:
        self.barrier.wait(BARRIER_TIMEOUT)
        for _ in range(self.n):
            self.q.get(timeout=BARRIER_TIMEOUT)


ARTICLE_WRITES = 10_000


@pytest.mark.parametrize("start", ["excluded", "included"])
@pytest.mark.parametrize("way", ["queue", "value"])
def test_article(benchmark: Any, way: str, start: str) -> None:
    """The article's 10,000 writes, with and without process start in the timing."""
    n = size(benchmark, ARTICLE_WRITES, 100)
    rounds = size(benchmark, 10, 1)
    benchmark.group = "counter-article"
    benchmark.extra_info.update(way=way, start=start, ops=n, processes=1)
    q = CTX.Queue()
    value = CTX.Value(ctypes.c_int64, 0)
    try:
        if start == "excluded" and way == "queue":
            time_groups(benchmark, lambda: _QueueReader(q, n), rounds)
        elif start == "excluded":
            time_groups(
                benchmark,
                lambda: WorkerGroup(CTX, article_value_writer, lambda b: (value, n, b), 1),
                rounds,
            )
        elif way == "queue":

            def through_queue() -> None:
                p = CTX.Process(target=article_queue_writer, args=(q, n))
                p.start()
                for _ in range(n):
                    q.get(timeout=BARRIER_TIMEOUT)
                p.join(BARRIER_TIMEOUT)

            benchmark.pedantic(through_queue, rounds=rounds)
        else:

            def into_value() -> None:
                p = CTX.Process(target=article_value_writer, args=(value, n))
                p.start()
                p.join(BARRIER_TIMEOUT)

            benchmark.pedantic(into_value, rounds=rounds)
        if way == "value":
            assert value.value == n * rounds
    finally:
        q.close()
        q.join_thread()


def test_race(benchmark: Any) -> None:
    """The article's race: 2 processes x 1,000,000 unlocked increments."""
    n = size(benchmark, 1_000_000, 20_000)
    benchmark.group = "counter-race"
    counter = UnsafeCounter(ctx=CTX)
    survived: list[int] = []

    def race() -> None:
        before = counter.get()
        group = WorkerGroup(CTX, add_worker, lambda b: (counter, n, b), 2)
        group.run()
        group.join()
        survived.append(counter.get() - before)

    benchmark.pedantic(race, rounds=size(benchmark, 3, 1))
    benchmark.extra_info.update(
        way="unsafe", ops=2 * n, processes=2, survived=survived, attempted=2 * n
    )
    counter.close()
    assert all(0 < s <= 2 * n for s in survived)
