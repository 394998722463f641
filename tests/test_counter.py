"""The contract of shmref.counter, once, for every way and start method.

Each test is one clause of the :class:`~shmref.counter.Counter` contract. It
runs for every way in :data:`FACTORIES` (or the ways :func:`ways` names) under
every start method; a way that cannot keep a clause is marked at its
parameter with the reason, as CPython's ``_test_multiprocessing`` does.
Targets of child processes are module-level so that spawn and forkserver
children can import them.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any

import pytest

from shmref.counter import (
    _STRIDE,
    INT64_MAX,
    INT64_MIN,
    Counter,
    CounterManager,
    CtypesCounter,
    ManagerCounter,
    QueueCounter,
    RedisCounter,
    SlotCounter,
    UnsafeCounter,
    add_worker,
)
from tests import redis_server
from tests.conftest import JOIN, contract, run_children

#: Seconds to wait for a child to finish or reply; pytest-timeout is the backstop.
#: Processes and increments of the counting tests: enough to interleave,
#: small enough that spawn start-up (~50 ms a process) dominates.
P, N = 3, 2000
#: test_total's increments per process where N is too few to overlap: with
#: the lock removed from CtypesCounter.add, 2_000 adds lose an update in
#: ~1 run of 4 on a busy 2-core machine, 50_000 in ~9 of 10 (at ~1 us an add).
TOTAL_ADDS = {"ctypes": 50_000, "slot": 50_000}

#: way id -> callable(ctx, **kwargs) -> a new counter of that way.
FACTORIES: dict[str, Callable[..., Counter]] = {
    "ctypes": lambda ctx, **kw: CtypesCounter(ctx=ctx, **kw),
    "slot": lambda ctx, **kw: SlotCounter(ctx=ctx, **kw),
    "queue": lambda ctx, **kw: QueueCounter(ctx=ctx, **kw),
    "queue-batched": lambda ctx, **kw: QueueCounter(batch=64, ctx=ctx, **kw),
    "manager": lambda ctx, **kw: ManagerCounter(ctx=ctx, **kw),
    "redis": lambda ctx, **kw: RedisCounter(url=redis_server.url(), **kw),
}
QUEUE_WAYS = ("queue", "queue-batched")

NOT_REPORTED_BY_ADD = "QueueCounter.add does not wait: the next get() reports the overflow"


def ways(
    *names: str, cannot: dict[str, str] | None = None, skip: dict[str, str] | None = None
) -> pytest.MarkDecorator:
    """Run a contract clause for the ways ``names`` (default: all) x every start method."""
    return contract(names or FACTORIES, cannot=cannot, skip=skip)


@pytest.fixture
def make(way_name: str, ctx: BaseContext) -> Iterator[Callable[..., Any]]:
    """Build counters of the way under test; all are closed afterwards."""
    made: list[Counter] = []

    def make(**kwargs: Any) -> Any:
        counter = FACTORIES[way_name](ctx, **kwargs)
        made.append(counter)
        return counter

    yield make
    with contextlib.ExitStack() as stack:  # close them all even if one raises
        for counter in made:
            stack.callback(counter.close)
    made.clear()


@pytest.fixture
def way(make: Callable[..., Any]) -> Any:
    """A counter of the way under test, starting at 0."""
    return make()


# Child process targets.


def report_and_add(counter: Counter, conn: Any, n: int) -> None:
    conn.send(counter.get())
    conn.close()
    counter.add(n)
    counter.close()


def add_and_return(counter: Counter, n: int) -> None:
    """Add and exit without get(), flush() or close()."""
    for _ in range(n):
        counter.add()


def add_read_add(counter: Counter, before: int, after: int) -> None:
    """Add, read, add again, and exit without reading or closing."""
    for _ in range(before):
        counter.add()
    counter.get()
    for _ in range(after):
        counter.add()


def read_in_child(ctx: BaseContext, counter: Counter) -> int:
    reader, writer = ctx.Pipe(duplex=False)
    with reader:
        process = ctx.Process(target=report_and_add, args=(counter, writer, 7))
        process.start()
        writer.close()
        assert reader.poll(JOIN), "the child sent no value"
        seen = reader.recv()
        process.join(JOIN)
    assert process.exitcode == 0
    process.close()
    return int(seen)


# Counting across processes.


@ways()
def test_total(way: Counter, way_name: str, ctx: BaseContext) -> None:
    # The parent adds too, and a barrier starts everyone at once so that
    # the adds overlap instead of queueing behind process start-up.
    n = TOTAL_ADDS.get(way_name, N)
    barrier = ctx.Barrier(P + 1)
    processes = [ctx.Process(target=add_worker, args=(way, n, barrier)) for _ in range(P)]
    for process in processes:
        process.start()
    barrier.wait(JOIN)
    for _ in range(n):
        way.add()
    barrier.wait(JOIN)  # add_worker waits again once its adds are in
    for process in processes:
        process.join(JOIN)
    assert [process.exitcode for process in processes] == [0] * P
    for process in processes:
        process.close()
    assert way.get() == (P + 1) * n


@ways()
def test_child_reads_confirmed_adds_and_parent_reads_child_adds(
    way: Counter, ctx: BaseContext
) -> None:
    way.add(5)
    assert way.get() == 5
    assert read_in_child(ctx, way) == 5
    assert way.get() == 12


@ways(
    cannot={"queue-batched": "the parent's buffered add is sent only by its next get/flush"},
)
def test_child_reads_unconfirmed_adds(way: Counter, ctx: BaseContext) -> None:
    way.add(5)
    assert read_in_child(ctx, way) == 5


@ways()
def test_adds_of_child_that_exits_without_close_arrive(way: Counter, ctx: BaseContext) -> None:
    # Fewer adds than the batch of "queue-batched": only the exit flush sends them.
    run_children(ctx, add_and_return, way, 5)
    assert way.get() == 5


@ways()
def test_adds_after_a_read_in_child_that_exits_without_close_arrive(
    way: Counter, ctx: BaseContext
) -> None:
    # The read starts the child's queue feeder thread, whose exit finalizer
    # must not run before the exit flush of "queue-batched".
    run_children(ctx, add_read_add, way, 3, 5)
    assert way.get() == 8


@ways()
def test_read_your_writes(way: Counter) -> None:
    total = 0
    for n in range(1, 40):
        way.add(n)
        total += n
        assert way.get() == total
    for _ in range(100):  # more than one batch of "queue-batched", then a remainder
        way.add()
    assert way.get() == total + 100


# Input checking and the 64-bit range.


@ways()
def test_rejects_non_int(way: Counter) -> None:
    way.add(5)
    for bad in ("1", 1.5, True, None):
        with pytest.raises(TypeError):
            way.add(bad)  # type: ignore[arg-type]
    assert way.get() == 5


@pytest.mark.parametrize(("limit", "step"), [(INT64_MAX, 1), (INT64_MIN, -1)], ids=["max", "min"])
@ways(cannot=dict.fromkeys(QUEUE_WAYS, NOT_REPORTED_BY_ADD))
def test_overflow_raises_and_leaves_total(way: Counter, limit: int, step: int) -> None:
    way.add(limit)
    with pytest.raises(OverflowError):
        way.add(step)
    assert way.get() == limit
    way.add(-step)
    assert way.get() == limit - step


@pytest.mark.parametrize(("limit", "step"), [(INT64_MAX, 1), (INT64_MIN, -1)], ids=["max", "min"])
@ways(*QUEUE_WAYS)
def test_queue_overflow_is_reported_by_next_get(way: Counter, limit: int, step: int) -> None:
    way.add(limit)
    way.add(step)  # refused by the owner, reported later
    with pytest.raises(OverflowError):
        way.get()
    assert way.get() == limit


@ways()
def test_initial_value(make: Callable[..., Any]) -> None:
    for value in (INT64_MIN, INT64_MAX):
        assert make(value=value).get() == value


@ways()
def test_initial_value_out_of_range(make: Callable[..., Any]) -> None:
    for value in (INT64_MAX + 1, INT64_MIN - 1):
        with pytest.raises(OverflowError):
            make(value=value)


def test_slot_overflow_counts_the_total() -> None:
    # Regression (issue 9): the initial value has a slot of its own, and
    # SlotCounter(INT64_MAX).add(1) used to pass, get() returning 2**63.
    with SlotCounter(INT64_MAX, slots=2) as counter:
        with pytest.raises(OverflowError):
            counter.add(1)
        assert counter.get() == INT64_MAX
        counter.add(-1)
        assert counter.get() == INT64_MAX - 1
    with SlotCounter(INT64_MIN, slots=2) as counter:
        with pytest.raises(OverflowError):
            counter.add(-1)
        assert counter.get() == INT64_MIN


def test_slot_get_refuses_a_sum_out_of_range() -> None:
    # Two processes near the limit can both pass add()'s check; get() then
    # refuses the sum instead of returning what no other way could hold.
    with SlotCounter(slots=2) as counter:
        counter._slots[_STRIDE] = INT64_MAX
        counter._slots[2 * _STRIDE] = 1
        with pytest.raises(OverflowError):
            counter.get()


@ways()
def test_numpy_increments_are_ints(way: Counter) -> None:
    numpy = pytest.importorskip("numpy", reason="pip install numpy")
    way.add(numpy.int64(3))
    with pytest.raises(TypeError):
        way.add(numpy.float64(1.0))
    with pytest.raises(TypeError):
        way.add(numpy.bool_(True))
    assert way.get() == 3


@ways("queue")
def test_queue_owner_outlives_an_idle_creator(way: Any) -> None:
    # An idle owner checks once a second that its creator lives; under
    # forkserver its parent process is the fork server, not the creator.
    sentinel = way._owner._process.sentinel
    assert not multiprocessing.connection.wait([sentinel], timeout=1.5)
    way.add()
    assert way.get() == 1


# Timeouts.


@ways(*QUEUE_WAYS)
def test_queue_get_times_out_when_owner_does_not_answer(make: Callable[..., Any]) -> None:
    counter = make(timeout=0.5)
    os.kill(counter._owner._process.pid, signal.SIGSTOP)  # alive, but silent
    try:
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            counter.get()
        assert 0.45 <= time.monotonic() - start < 10
    finally:
        os.kill(counter._owner._process.pid, signal.SIGCONT)
    assert counter.get() == 0


def test_ctypes_times_out_when_lock_is_held(ctx: BaseContext) -> None:
    with CtypesCounter(ctx=ctx, timeout=0.2) as counter:
        # As if another, live, process held it (another thread: not this one).
        holder = threading.Thread(target=counter._lock.acquire)
        holder.start()
        holder.join()
        counter._record[0] = os.getpid()
        try:
            with pytest.raises(TimeoutError):
                counter.add()
            assert counter.get() == 0  # get takes no lock
        finally:
            counter._record[0] = 0
            counter._lock.release()
        counter.add()
        assert counter.get() == 1


def test_slot_claim_times_out_when_lock_is_held(ctx: BaseContext) -> None:
    with SlotCounter(ctx=ctx, timeout=0.2) as counter:
        # Held by another thread of a live process: no take-over.
        claims, held, done = counter._claims, threading.Event(), threading.Event()

        def hold() -> None:
            claims.enter(1.0, "slot lock", counter)
            held.set()
            done.wait(JOIN)
            claims.leave()

        holder = threading.Thread(target=hold)
        holder.start()
        try:
            assert held.wait(JOIN)
            with pytest.raises(TimeoutError):
                counter.add()
        finally:
            done.set()
            holder.join()
        counter.add()
        assert counter.get() == 1


def die_claiming(counter: SlotCounter) -> None:
    """Process target: take the slot lock, as a claim does, and die holding it."""
    counter._claims.enter(5.0, "slot lock", counter)
    os.kill(os.getpid(), signal.SIGKILL)


def test_slot_claim_takes_over_from_a_claimer_killed_inside(ctx: BaseContext) -> None:
    with SlotCounter(ctx=ctx, timeout=10.0) as counter:
        child = ctx.Process(target=die_claiming, args=(counter,))
        child.start()
        child.join(JOIN)
        assert child.exitcode == -signal.SIGKILL
        counter.add(5)  # takes the dead claimer's lock over, then claims
        assert counter.get() == 5
        assert counter._next_slot.value == 2  # the dead claimer took no slot


# SlotCounter: one slot per writing process.


def test_slot_each_child_claims_its_own(ctx: BaseContext) -> None:
    with SlotCounter(slots=P, ctx=ctx) as counter:
        run_children(ctx, add_worker, counter, N, count=P)
        assert counter._next_slot.value == P + 1
        assert counter._slots[_STRIDE::_STRIDE] == [N] * P
        with pytest.raises(RuntimeError):
            counter.add()  # the parent finds every slot claimed
        assert counter.get() == P * N


def test_slot_child_does_not_inherit_parent_slot(ctx: BaseContext) -> None:
    with SlotCounter(slots=P + 1, ctx=ctx) as counter:
        counter.add()  # the parent claims slot 1 before its children start
        run_children(ctx, add_worker, counter, N, count=P)
        assert counter._next_slot.value == P + 2
        assert counter._slots[_STRIDE] == 1
        assert counter.get() == P * N + 1


# The race the docs show.


def test_unsafe_counter_loses_updates(ctx: BaseContext) -> None:
    # 200_000 adds take ~0.2 s a process; the barrier makes the two overlap,
    # and one overlapping run loses a third of its updates. Three attempts
    # keep a machine too busy to run both at once from failing the test.
    n = 200_000
    for _ in range(3):
        with UnsafeCounter(ctx=ctx) as counter:
            run_children(ctx, add_worker, counter, n, ctx.Barrier(2), count=2)
            total = counter.get()
        if total < 2 * n:
            break
    assert 0 < total < 2 * n


# ManagerCounter with a manager it did not start.


def test_manager_counters_share_a_manager(ctx: BaseContext) -> None:
    manager = CounterManager(ctx=ctx)
    manager.start()
    try:
        with ManagerCounter(1, manager=manager) as a, ManagerCounter(10, manager=manager) as b:
            a.add()
            b.add(2)
            run_children(ctx, add_worker, a, 5)
            assert (a.get(), b.get()) == (7, 12)
            a.close()
            assert b.get() == 12
        # Neither counter started the manager, so closing them left it serving.
        with ManagerCounter(manager=manager) as c:
            c.add()
            assert c.get() == 1
    finally:
        manager.shutdown()


# RedisCounter from anywhere: an interpreter that did not create it connect()s.

#: Adds ``argv[1]`` times to the RedisCounter named by SHMREF_COUNTER (url, name).
CONNECTED_ADDS = """
import os, sys
from shmref.counter import RedisCounter
url, name = os.environ["SHMREF_COUNTER"].split(" ")
with RedisCounter.connect(url, name, timeout=60) as counter:
    for _ in range(int(sys.argv[1])):
        counter.add()
"""


def test_redis_totals_from_spawned_children_and_a_connected_interpreter(redis_url: str) -> None:
    n = 5000
    ctx = multiprocessing.get_context("spawn")
    with RedisCounter(url=redis_url) as counter:
        # The URL holds the password: in the environment, not on a command line.
        other = subprocess.Popen(
            [sys.executable, "-c", CONNECTED_ADDS, str(n)],
            cwd=Path(__file__).parent.parent,
            env={**os.environ, "SHMREF_COUNTER": f"{counter.url} {counter.name}"},
        )
        try:
            run_children(ctx, add_worker, counter, n, count=2)
        finally:
            assert other.wait(JOIN) == 0
        assert counter.get() == 3 * n
