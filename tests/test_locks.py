"""The contract of shmref.locks, once, for every way and start method.

Each test is one clause of the :class:`~shmref.locks.SyncPrimitive` contract.
It runs for every kind in :data:`KINDS` (or the kinds :func:`kinds` names)
under every start method; a kind that cannot keep a clause is marked at its
parameter with the reason. A kind is a primitive (lock, rlock, semaphore)
made one way (ctypes, queue, manager, redis; robust is the ctypes lock that
survives its holder). Targets of child processes are module-level so that
spawn and forkserver children can import them.

The Redis kinds hold tokens with a lease (:data:`tests.ways_locks.LEASE`):
they are owned (only the holder may release, :data:`OWNED`), and a dead
holder's lock is taken over once its lease ends (:data:`TAKE_OVER`), where
the clause for the others says it stays taken. Their own clauses (the lease,
its renewal, a holder paused past it, a server gone) are at the end.
"""

from __future__ import annotations

import functools
import gc
import math
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from multiprocessing.context import BaseContext
from typing import Any, NamedTuple

import numpy as np
import pytest

from shmref.lifecycle import OwnerGone
from shmref.locks import (
    CtypesLock,
    CtypesRLock,
    CtypesSemaphore,
    LockManager,
    ManagerLock,
    ManagerRLock,
    ManagerSemaphore,
    QueueLock,
    QueueRLock,
    QueueSemaphore,
    RedisLock,
    RedisRLock,
    RedisSemaphore,
    ReleaseError,
    RobustLock,
    SyncPrimitive,
)
from tests import redis_server
from tests.apparatus_locks import Occupancy, occupy, outer_inner
from tests.conftest import JOIN, START_METHODS, contract
from tests.ways_locks import LEASE

#: Seconds to wait for a child to finish or reply; pytest-timeout is the backstop.
#: The timeout of an acquire that is expected to fail.
SHORT = 0.05
#: "Well under": a failed acquire returns long before this (a loose bound
#: on purpose: the machine is shared and noisy).
SLOW = 2.0


class Kind(NamedTuple):
    cls: type[Any]
    family: str  # lock, rlock or semaphore
    way: str  # ctypes, queue, manager, robust or redis


KINDS = {
    "ctypes-lock": Kind(CtypesLock, "lock", "ctypes"),
    "queue-lock": Kind(QueueLock, "lock", "queue"),
    "manager-lock": Kind(ManagerLock, "lock", "manager"),
    "robust-lock": Kind(RobustLock, "lock", "robust"),
    "ctypes-rlock": Kind(CtypesRLock, "rlock", "ctypes"),
    "queue-rlock": Kind(QueueRLock, "rlock", "queue"),
    "manager-rlock": Kind(ManagerRLock, "rlock", "manager"),
    "ctypes-sem": Kind(CtypesSemaphore, "semaphore", "ctypes"),
    "queue-sem": Kind(QueueSemaphore, "semaphore", "queue"),
    "manager-sem": Kind(ManagerSemaphore, "semaphore", "manager"),
    "redis-lock": Kind(RedisLock, "lock", "redis"),
    "redis-rlock": Kind(RedisRLock, "rlock", "redis"),
    "redis-sem": Kind(RedisSemaphore, "semaphore", "redis"),
}
REDIS = [name for name, kind in KINDS.items() if kind.way == "redis"]
LOCKS = [name for name, kind in KINDS.items() if kind.family == "lock"]
RLOCKS = [name for name, kind in KINDS.items() if kind.family == "rlock"]
SEMAPHORES = [name for name, kind in KINDS.items() if kind.family == "semaphore"]
#: Kinds only their holder may release (the others: any process).
OWNED = [*RLOCKS, "robust-lock", *REDIS]
#: Kinds whose next acquire takes the lock over when its holder dies
#: (``holder_died``): a robust mutex, and an owner that sees the holder's
#: process exit.
TAKE_OVER = ["robust-lock", "queue-lock", "queue-rlock", "queue-sem", *REDIS]
#: Kinds a dead holder leaves taken for good.
STAY_TAKEN = [name for name in KINDS if name not in TAKE_OVER]


def kinds(
    *names: str, cannot: dict[str, str] | None = None, skip: dict[str, str] | None = None
) -> pytest.MarkDecorator:
    """Run a contract clause for the kinds ``names`` (default: all) x every start method."""
    return contract(names or KINDS, cannot=cannot, skip=skip, argname="kind_name")


@pytest.fixture
def kind(kind_name: str) -> Kind:
    return KINDS[kind_name]


def where(cls: type[Any], ctx: BaseContext | None = None) -> dict[str, Any]:
    """Where a primitive of ``cls`` lives: the test Redis server, with the suites' lease; ctx."""
    if cls.__name__.startswith("Redis"):
        return {"url": redis_server.url(), "lease": LEASE}
    return {} if ctx is None else {"ctx": ctx}


@pytest.fixture
def make(kind: Kind, ctx: BaseContext) -> Iterator[Callable[..., Any]]:
    """Build primitives of the kind under test; all are closed afterwards.

    The Manager kinds share one server per test, started on first use.
    """
    made: list[SyncPrimitive] = []
    managers: list[LockManager] = []

    def make(**kwargs: Any) -> Any:
        if kind.way == "manager" and "manager" not in kwargs:
            if not managers:
                managers.append(LockManager(ctx=ctx))
                managers[0].start()
            kwargs["manager"] = managers[0]
        primitive = kind.cls(**where(kind.cls, ctx), **kwargs)
        made.append(primitive)
        return primitive

    yield make
    for primitive in made:
        primitive.close()
    made.clear()
    for manager in managers:
        manager.shutdown()


@pytest.fixture
def lock(make: Callable[..., Any]) -> Any:
    """A primitive of the kind under test (a semaphore of 1) with a short ``with`` timeout."""
    return make(timeout=SHORT)


def probe_target(lock: SyncPrimitive, conn: Any) -> None:
    """Child of :class:`Probe`: acquire or release when told, reply with the outcome."""
    while conn.poll(JOIN):
        command, timeout = conn.recv()
        if command == "stop":
            break
        try:
            if command == "acquire":
                reply: object = lock.acquire(timeout=timeout)
            else:
                lock.release()
                reply = "released"
        except Exception as error:
            reply = type(error).__name__
        conn.send(reply)
    lock.close()
    conn.close()


class Probe:
    """Another process that acquires and releases ``lock`` when told to."""

    def __init__(self, ctx: BaseContext, lock: SyncPrimitive) -> None:
        self.conn, child = ctx.Pipe()
        self.process: Any = ctx.Process(target=probe_target, args=(lock, child), daemon=True)
        self.process.start()
        child.close()

    def acquire(self, timeout: float = JOIN) -> object:
        return self.ask("acquire", timeout)

    def release(self) -> object:
        return self.ask("release")

    def ask(self, command: str, timeout: float | None = None) -> object:
        self.conn.send((command, timeout))
        assert self.conn.poll(JOIN), f"the probe did not reply to {command}"
        return self.conn.recv()

    def kill(self) -> None:
        self.process.kill()
        self.process.join(JOIN)

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.is_alive():
            self.conn.send(("stop", None))
            self.process.join(JOIN)
        self.process.close()
        self.conn.close()


def elapsed(since: float) -> float:
    return time.monotonic() - since


def assert_times_out(call: Callable[[], object], timeout: float = SHORT) -> None:
    """``call()`` returns False (or raises TimeoutError) after about ``timeout``."""
    start = time.monotonic()
    try:
        result = call()
    except TimeoutError:
        result = False
    took = elapsed(start)
    assert result is False
    assert timeout <= took < SLOW, f"took {took:.3f} s for a timeout of {timeout} s"


def assert_with_times_out(lock: SyncPrimitive, timeout: float = SHORT) -> None:
    """``with lock:`` raises TimeoutError after the constructor's ``timeout``."""
    start = time.monotonic()
    with pytest.raises(TimeoutError, match=f"not acquired within {timeout} s"), lock:
        pass
    took = elapsed(start)
    assert timeout <= took < SLOW, f"took {took:.3f} s for a timeout of {timeout} s"


def assert_free(lock: SyncPrimitive) -> None:
    """Nobody holds ``lock``: this process acquires it (and releases it again).

    With a timeout, not ``blocking=False``: a Queue kind's release puts its
    token back a moment later (see test_release_is_seen_at_once).
    """
    assert lock.acquire(timeout=JOIN) is True
    lock.release()


def run_all(processes: list[Any]) -> list[int]:
    for process in processes:
        process.start()
    for process in processes:
        process.join(JOIN)
    codes = [process.exitcode for process in processes]
    for process in processes:
        process.close()
    return codes


# Mutual exclusion, proven by counting who is inside.


@kinds()
def test_exclusion(make: Callable[..., Any], kind: Kind, ctx: BaseContext) -> None:
    # A semaphore must admit exactly its value: the article's Semaphore(2)
    # with 5 processes. Occupancy makes each holder wait (bounded) for company,
    # so that "2 at once" is observed, and then linger, so that a third would
    # be seen if the semaphore let one in.
    if kind.family == "semaphore":
        capacity, processes, rounds = 2, 5, 1
        lock = make(value=capacity)
    else:
        capacity, processes, rounds = 1, 3, 2
        lock = make()
    depth = 2 if kind.family == "rlock" else 1
    occupancy = Occupancy(capacity, processes * rounds, ctx=ctx, timeout=JOIN)
    start = ctx.Barrier(processes)  # contend from the first round on
    workers = [
        ctx.Process(target=occupy, args=(lock, occupancy, rounds, depth, start))
        for _ in range(processes)
    ]
    assert run_all(workers) == [0] * processes
    assert (occupancy.peak, occupancy.entered, occupancy.inside) == (
        capacity,
        processes * rounds,
        0,
    )
    occupancy.close()
    # Every holder released, children included: all free again.
    for _ in range(capacity):
        assert lock.acquire(timeout=JOIN) is True
    for _ in range(capacity):
        lock.release()


# Timeouts.


@kinds()
def test_acquire_times_out_while_another_process_holds(lock: Any, ctx: BaseContext) -> None:
    with Probe(ctx, lock) as holder:
        assert holder.acquire() is True
        assert_times_out(lambda: lock.acquire(timeout=SHORT))
        assert lock.acquire(blocking=False) is False
        assert_with_times_out(lock)
        assert holder.release() == "released"
    assert_free(lock)


@kinds(*LOCKS, "ctypes-sem", "queue-sem", "manager-sem")
def test_lock_acquired_twice_by_its_holder_times_out(lock: Any, kind: Kind) -> None:
    if kind.way == "robust":
        # A robust mutex knows its owner: it refuses at once instead.
        with pytest.raises(RuntimeError, match="already held by this thread"):
            outer_inner(lock)
        assert lock.acquire() is True
        with pytest.raises(RuntimeError, match="already held by this thread"):
            lock.acquire(timeout=SHORT)
        with pytest.raises(RuntimeError, match="already held by this thread"):
            lock.acquire(blocking=False)
    else:
        # The article's outer/inner example with a plain lock: inner's
        # ``with`` waits for outer, which waits for inner, until the timeout.
        assert_times_out(lambda: outer_inner(lock))
        assert lock.acquire() is True
        assert_times_out(lambda: lock.acquire(timeout=SHORT))
        assert lock.acquire(blocking=False) is False
    lock.release()
    assert_free(lock)


# A holder that dies.


@kinds(*STAY_TAKEN)
def test_dead_holder_leaves_lock_taken_and_waiters_time_out(lock: Any, ctx: BaseContext) -> None:
    with Probe(ctx, lock) as holder:
        assert holder.acquire() is True
        # This process waits before the holder dies (for a Manager kind, its
        # server thread exists before the dead holder's ends: see below).
        assert lock.acquire(blocking=False) is False
        holder.kill()
    assert_times_out(lambda: lock.acquire(timeout=SHORT))
    assert_with_times_out(lock)
    # close() must not wait for the dead holder either (make closes it).


@kinds(
    *STAY_TAKEN,
    skip={
        "manager-rlock": "not guaranteed: the server knows an RLock's owner by its server "
        "thread's id, and the thread serving a newcomer can reuse the dead holder's id "
        "and inherit its RLock (seen on Linux)",
    },
)
def test_process_started_after_holder_died_times_out(lock: Any, ctx: BaseContext) -> None:
    with Probe(ctx, lock) as holder:
        assert holder.acquire() is True
        holder.kill()
    with Probe(ctx, lock) as newcomer:
        assert newcomer.acquire(SHORT) is False


@kinds(*TAKE_OVER)
def test_lock_is_taken_over_once_after_holder_dies(lock: Any, ctx: BaseContext) -> None:
    with Probe(ctx, lock) as holder:
        assert holder.acquire() is True
        holder.kill()
    # Three processes race for the dead holder's lock: exactly one takes it
    # over, and they still hold it one at a time.
    occupancy = Occupancy(1, 3, ctx=ctx, timeout=JOIN)
    reader, writer = ctx.Pipe(duplex=False)
    racers = [ctx.Process(target=take_over, args=(lock, occupancy, writer)) for _ in range(3)]
    assert run_all(racers) == [0] * 3
    writer.close()
    saw_death = [reader.recv() for _ in range(3)]
    reader.close()
    assert sorted(saw_death) == [False, False, True]
    assert occupancy.peak == 1
    occupancy.close()
    assert lock.acquire(timeout=SHORT) is True
    assert lock.holder_died is False
    lock.release()


def take_over(lock: Any, occupancy: Occupancy, conn: Any) -> None:
    if not lock.acquire(timeout=JOIN):
        raise TimeoutError(f"{type(lock).__name__} not acquired")
    try:
        conn.send(lock.holder_died)
        occupancy.visit()
    finally:
        lock.release()
    conn.close()
    lock.close()


def test_robust_lock_is_taken_over_after_holder_thread_ends() -> None:
    lock = RobustLock(timeout=SHORT)
    thread = threading.Thread(target=lock.acquire)
    thread.start()
    thread.join(JOIN)
    assert lock.acquire(timeout=JOIN) is True
    assert lock.holder_died is True
    lock.release()
    with lock:
        assert lock.holder_died is False
    lock.close()


@pytest.mark.parametrize("gap", [0, 8, 16, 24, 32, 40])
def test_robust_lock_dropped_while_held_spoils_no_other(gap: int, ctx: BaseContext) -> None:
    # The thread's list of held robust mutexes runs through their memory: a
    # held one's memory must not be reused. With a RawArray of ``gap`` bytes
    # the next lock's mutex lands inside the dropped one's (shmref's heap
    # hands out freed blocks first); before shmref.holder.HELD its unlock
    # failed with EPERM or EINVAL.
    dropped = RobustLock(ctx=ctx)
    assert dropped.acquire() is True
    dropped.close()
    del dropped
    gc.collect()
    filler = ctx.RawArray("b", gap) if gap else None
    lock = RobustLock(ctx=ctx)
    for _ in range(3):
        assert lock.acquire(timeout=JOIN) is True
        assert lock.holder_died is False
        lock.release()
    lock.close()
    del filler


# A waiter that dies while it waits.


def wait_on(lock: SyncPrimitive) -> None:
    lock.acquire(timeout=JOIN)


@kinds(
    *LOCKS,
    skip={
        "manager-lock": "a race: the server takes the lock for the dead waiter only "
        "if its request arrived before it died",
    },
)
def test_waiter_killed_while_waiting_does_not_break_lock(
    lock: Any, kind: Kind, ctx: BaseContext
) -> None:
    assert lock.acquire() is True
    waiter = ctx.Process(target=wait_on, args=(lock,), daemon=True)
    waiter.start()
    waiter.kill()
    waiter.join(JOIN)
    waiter.close()
    lock.release()
    assert lock.acquire(timeout=SHORT) is True
    lock.release()


# Release.


@kinds()
def test_release_is_seen_at_once(lock: Any) -> None:
    for _ in range(100):
        assert lock.acquire(timeout=JOIN) is True
        lock.release()
        assert lock.acquire(blocking=False) is True
        lock.release()


# Re-entry.


@kinds(*RLOCKS)
def test_rlock_reenters_and_counts_depth(lock: Any, ctx: BaseContext) -> None:
    assert outer_inner(lock) == "inner ran inside outer"
    for _ in range(3):
        assert lock.acquire(timeout=SHORT) is True
    with Probe(ctx, lock) as other:
        assert other.acquire(SHORT) is False
        lock.release()
        lock.release()
        assert other.acquire(SHORT) is False  # still held once
        assert other.release() == "ReleaseError"  # not its lock to release
        lock.release()
        assert other.acquire() is True
        with pytest.raises(ReleaseError):
            lock.release()  # the other process holds it now
        assert other.release() == "released"
    with pytest.raises(ReleaseError):
        lock.release()  # held by nobody
    assert_free(lock)


@kinds()
def test_context_manager(lock: Any, kind: Kind) -> None:
    assert isinstance(lock, SyncPrimitive)
    with lock as entered:
        assert entered is True
        if kind.family == "rlock":
            assert lock.acquire(blocking=False) is True
            lock.release()
        elif kind.way == "robust":
            with pytest.raises(RuntimeError, match="already held by this thread"):
                lock.acquire(blocking=False)
        else:
            assert lock.acquire(blocking=False) is False
    assert_free(lock)
    with pytest.raises(KeyError), lock:
        raise KeyError("released on the way out")
    assert_free(lock)


# Release: who may, and how often.


@kinds(*OWNED)
def test_only_the_holder_may_release(lock: Any, ctx: BaseContext) -> None:
    with Probe(ctx, lock) as holder:
        assert holder.acquire() is True
        with pytest.raises(ReleaseError):
            lock.release()
        assert lock.acquire(blocking=False) is False  # still the holder's
        assert holder.release() == "released"
    assert_free(lock)


@kinds(*[name for name in KINDS if name not in OWNED])
def test_any_process_may_release(lock: Any, ctx: BaseContext) -> None:
    # The standard library's Lock and Semaphore are not owned: any process
    # may release what another acquired (a hand-off, or a clean-up).
    with Probe(ctx, lock) as holder:
        assert holder.acquire() is True
        lock.release()
        assert_free(lock)
        assert holder.release() == "ReleaseError"  # free now: once too many


@kinds()
def test_release_of_unheld_raises_and_changes_nothing(lock: Any) -> None:
    with pytest.raises(ReleaseError) as raised:
        lock.release()
    assert isinstance(raised.value, ValueError) and isinstance(raised.value, RuntimeError)
    assert_free(lock)
    with pytest.raises(ReleaseError):
        lock.release()
    assert_free(lock)


@kinds(*SEMAPHORES)
def test_semaphore_admits_value_holders_and_is_bounded(make: Callable[..., Any]) -> None:
    semaphore = make(value=2)
    for _ in range(2):
        assert [semaphore.acquire(timeout=JOIN) for _ in range(2)] == [True, True]
        assert semaphore.acquire(blocking=False) is False
        assert_times_out(lambda: semaphore.acquire(timeout=SHORT))
        semaphore.release()
        semaphore.release()
        with pytest.raises(ReleaseError):
            semaphore.release()


# Bad input: the same exception type, with a message naming the problem, in every way.

#: (args, kwargs) of acquire -> the exception every way raises, and its message.
BAD_ACQUIRES: list[tuple[tuple[Any, ...], dict[str, Any], type[Exception], str]] = [
    (("yes",), {}, TypeError, "blocking must be True or False"),
    ((1,), {}, TypeError, r"blocking must be True or False, not 1 \(to wait at most 1 s"),
    ((0,), {}, TypeError, "blocking must be True or False"),
    ((0.5,), {}, TypeError, "blocking must be True or False"),
    ((None,), {}, TypeError, "blocking must be True or False"),
    ((), {"timeout": "1"}, TypeError, "timeout must be a number of seconds or None, not str"),
    ((), {"timeout": True}, TypeError, "timeout must be a number of seconds or None, not bool"),
    ((), {"timeout": []}, TypeError, "timeout must be a number of seconds or None, not list"),
    ((), {"timeout": -1}, ValueError, "timeout must be a number of seconds >= 0"),
    ((), {"timeout": -0.5}, ValueError, "timeout must be a number of seconds >= 0"),
    ((), {"timeout": math.nan}, ValueError, "timeout must be a number of seconds >= 0"),
    ((False, 1.0), {}, ValueError, "can't specify a timeout for a non-blocking call"),
]

#: Timeouts every way takes: numpy's numbers, and waits too long for one OS
#: call, which mean "as long as it takes" (issue 9: the Queue ways raised
#: OverflowError for 3e6 s and more, the Manager ways for 1e12 s).
GOOD_TIMEOUTS = [2, np.float64(0.5), np.float32(0.5), np.int64(1), 3e6, 1e9, 1e12, math.inf]


@kinds()
def test_bad_acquire_arguments_raise_and_change_nothing(lock: Any) -> None:
    for args, kwargs, error, message in BAD_ACQUIRES:
        with pytest.raises(error, match=message):
            lock.acquire(*args, **kwargs)
    with pytest.raises(ReleaseError):
        lock.release()  # none of the calls above acquired it
    assert_free(lock)
    # Nor do they change a held lock (an RLock's depth included).
    assert lock.acquire(timeout=JOIN) is True
    for args, kwargs, error, message in BAD_ACQUIRES:
        with pytest.raises(error, match=message):
            lock.acquire(*args, **kwargs)
    lock.release()
    assert_free(lock)


@kinds()
def test_every_number_of_seconds_is_a_timeout(lock: Any) -> None:
    for timeout in GOOD_TIMEOUTS:
        assert lock.acquire(timeout=timeout) is True, timeout
        lock.release()


def hold_then_release(lock: SyncPrimitive, held: threading.Event, hold: float) -> None:
    assert lock.acquire(timeout=JOIN)
    held.set()
    time.sleep(hold)
    lock.release()


@kinds()
def test_a_wait_too_long_for_one_os_call_waits(make: Callable[..., Any]) -> None:
    # Issue 9: QueueLock.acquire(timeout=3e6) on a held lock raised
    # OverflowError at once, and a Manager way did for 1e12 s.
    for timeout in (3e6, 1e12):
        lock = make(timeout=timeout)  # with waits as long
        for enter in (functools.partial(lock.acquire, timeout=timeout), lock.__enter__):
            held = threading.Event()
            holder = threading.Thread(target=hold_then_release, args=(lock, held, 0.05))
            holder.start()
            assert held.wait(JOIN)
            assert enter() is True  # once the holder released it
            lock.release()
            holder.join(JOIN)


def wait_in_thread(lock: SyncPrimitive) -> tuple[threading.Thread, list[BaseException]]:
    """A thread of this process started in ``lock.acquire()``, and what it will have raised."""
    outcome: list[BaseException] = []
    started = threading.Event()

    def wait() -> None:
        started.set()
        try:
            lock.acquire()
        except BaseException as error:
            outcome.append(error)

    waiter = threading.Thread(target=wait)
    waiter.start()
    assert started.wait(JOIN)
    return waiter, outcome


@kinds("manager-lock", "manager-rlock", "manager-sem")
def test_manager_waiter_wakes_when_server_stops(kind: Kind, ctx: BaseContext) -> None:
    # Issue 9: a thread waiting in acquire() got EOFError when the server
    # was stopped; now OwnerGone, the error every call of a gone server raises.
    manager = LockManager(ctx=ctx)
    manager.start()
    lock = kind.cls(manager=manager)
    assert lock.acquire() is True  # by this thread: the waiter's is another
    waiter, outcome = wait_in_thread(lock)
    time.sleep(0.2)  # in the server's wait by now (a slice at a time)
    manager.shutdown()
    waiter.join(SLOW)
    assert not waiter.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], OwnerGone), outcome
    lock.close()


@pytest.mark.parametrize("cls", [kind.cls for kind in KINDS.values()], ids=list(KINDS))
def test_bad_constructor_arguments(cls: type[Any]) -> None:
    # No manager may be left running (the leak check would see it).
    with pytest.raises(TypeError, match="timeout must be a number"):
        cls(timeout="1")
    with pytest.raises(TypeError, match="timeout must be a number"):
        cls(timeout=True)
    with pytest.raises(ValueError, match="timeout must be"):
        cls(timeout=-1)
    with pytest.raises(ValueError, match="timeout must be"):
        cls(timeout=math.nan)
    if not issubclass(cls, (CtypesSemaphore, QueueSemaphore, ManagerSemaphore, RedisSemaphore)):
        with pytest.raises(TypeError):
            cls(1)  # only a semaphore takes a positional argument, its value


#: Semaphore values -> the exception every way raises, and its message.
#: 2**31 is past every way's limit (SEM_VALUE_MAX).
BAD_VALUES: list[tuple[object, type[Exception], str]] = [
    (-1, ValueError, "at least 1"),
    (0, ValueError, "at least 1"),
    (2**31, ValueError, "at most"),
    (2**62, ValueError, "at most"),
    (1.5, TypeError, "semaphore value must be an int, not float"),
    (True, TypeError, "semaphore value must be an int, not bool"),
    (np.True_, TypeError, "semaphore value must be an int, not bool"),
    ("2", TypeError, "semaphore value must be an int, not str"),
    (None, TypeError, "semaphore value must be an int, not NoneType"),
]

SEMAPHORE_WAYS = [KINDS[name].cls for name in SEMAPHORES]


@pytest.mark.parametrize("cls", SEMAPHORE_WAYS, ids=SEMAPHORES)
def test_bad_semaphore_values(cls: type[Any]) -> None:
    for value, error, message in BAD_VALUES:
        with pytest.raises(error, match=message):
            cls(value)


@pytest.mark.parametrize("cls", SEMAPHORE_WAYS, ids=SEMAPHORES)
def test_numpy_semaphore_value(cls: type[Any]) -> None:
    semaphore = cls(np.int64(2), **where(cls))
    assert [semaphore.acquire(timeout=JOIN) for _ in range(2)] == [True, True]
    assert semaphore.acquire(timeout=SHORT) is False
    semaphore.release()
    semaphore.release()
    semaphore.close()


# A server shared between primitives.


def test_manager_primitives_share_a_manager(ctx: BaseContext) -> None:
    manager = LockManager(ctx=ctx)
    manager.start()
    try:
        lock, semaphore = ManagerLock(manager=manager), ManagerSemaphore(2, manager=manager)
        with lock, semaphore:
            pass
        lock.close()
        semaphore.close()
        # Neither started the manager, so closing them left it serving.
        rlock = ManagerRLock(manager=manager)
        assert outer_inner(rlock) == "inner ran inside outer"
        rlock.close()
    finally:
        manager.shutdown()


# The Redis kinds: a lease, renewed while held.


def die_when_told(lock: Any, held: Any) -> None:
    """Process target: acquire ``lock``, say so, and die by SIGKILL holding it."""
    assert lock.acquire(timeout=JOIN)
    held.set()
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize("start_method", START_METHODS)
def test_redis_holder_killed_is_replaced_within_its_lease(
    redis_url: str, ctx: BaseContext
) -> None:
    # Issue 13's clause: a holder SIGKILLed is replaced within its lease plus
    # a second, counted from when this process sees it hold the lock.
    lease = 1.0
    with closing(RedisLock(url=redis_url, lease=lease, timeout=SHORT)) as lock:
        held = ctx.Event()
        holder = ctx.Process(target=die_when_told, args=(lock, held))
        holder.start()
        assert held.wait(JOIN), "the holder did not acquire the lock"
        acquired = time.monotonic()  # the lease began before this, and was never renewed
        holder.join(JOIN)
        assert holder.exitcode == -signal.SIGKILL
        holder.close()
        assert lock.acquire(blocking=False) is False  # the dead holder's lease runs on
        assert lock.acquire(timeout=lease + 5) is True
        took = elapsed(acquired)
        assert lock.holder_died is True
        assert took < lease + 1.0, f"replaced {took:.2f} s after the holder acquired it"
        lock.release()


def count_under_lock(url: str, name: str, n: int) -> None:
    """Process target: ``n`` times, under the lock, read the count key and write it plus one."""
    import redis

    with closing(RedisLock.connect(url, name, timeout=JOIN)) as lock:
        client = redis.Redis.from_url(url)
        key = f"{{{name}}}:count"  # under the lock's prefix: its creator's close() deletes it
        for _ in range(n):
            with lock:
                count = int(client.get(key) or 0)  # two round trips: not atomic
                client.set(key, count + 1)
        client.close()


def test_redis_lock_excludes_two_spawned_processes(redis_url: str) -> None:
    import redis

    n = 300
    with closing(RedisLock(url=redis_url, timeout=JOIN)) as lock:
        ctx = multiprocessing.get_context("spawn")
        assert run_all(
            [ctx.Process(target=count_under_lock, args=(lock.url, lock.name, n)) for _ in range(2)]
        ) == [0, 0]
        with redis.Redis.from_url(redis_url) as client:
            assert int(client.get(f"{{{lock.name}}}:count") or 0) == 2 * n


@pytest.mark.parametrize("cls", [RedisLock, RedisRLock, RedisSemaphore])
def test_redis_release_by_a_non_holder_is_refused(redis_url: str, cls: type[Any]) -> None:
    with closing(cls(url=redis_url, timeout=SHORT)) as lock:
        other = cls.connect(lock.url, lock.name, timeout=SHORT)  # another handle, this process
        assert lock.acquire(timeout=JOIN) is True
        with pytest.raises(ReleaseError, match="not held by this"):
            other.release()
        assert other.acquire(blocking=False) is False  # still the first handle's
        lock.release()
        assert other.acquire(blocking=False) is True
        with pytest.raises(ReleaseError):
            lock.release()
        other.release()
        other.close()


#: A short lease, for the tests that wait for several of them.
SHORT_LEASE = 0.5


@pytest.fixture
def leased(redis_url: str) -> Iterator[tuple[Any, Probe]]:
    """A RedisLock with a lease of :data:`SHORT_LEASE`, and a spawned :class:`Probe` of it."""
    lock = RedisLock(url=redis_url, lease=SHORT_LEASE, timeout=SHORT)
    with Probe(multiprocessing.get_context("spawn"), lock) as probe:
        yield lock, probe
    lock.close()


def test_redis_renewal_keeps_the_lock_past_several_leases(leased: tuple[Any, Probe]) -> None:
    lock, other = leased
    assert lock.acquire(timeout=JOIN) is True
    # The other process waits 5 leases and never gets it: renewed all along.
    assert other.acquire(5 * SHORT_LEASE) is False
    assert lock.held is True
    lock.release()
    assert lock.held is False
    assert other.acquire() is True
    assert other.release() == "released"


def test_redis_holder_paused_past_its_lease_loses_the_lock(leased: tuple[Any, Probe]) -> None:
    # SIGSTOP, as a GC pause or a partition would: the holder cannot renew,
    # another takes the lock, and the holder finds out only when it runs again.
    lock, holder = leased
    assert holder.acquire() is True
    os.kill(holder.process.pid, signal.SIGSTOP)
    try:
        assert lock.acquire(timeout=JOIN) is True
        assert lock.holder_died is True  # as after a death: the lease ran out
    finally:
        os.kill(holder.process.pid, signal.SIGCONT)
    assert holder.release() == "ReleaseError"  # it was not its lock any more
    assert lock.held is True
    lock.release()


def test_redis_holder_sees_its_lease_lost_when_the_server_dies() -> None:
    lease = 0.5
    with redis_server.RedisServer() as server:
        lock = RedisLock(url=server.url, lease=lease, timeout=SHORT)
        assert lock.acquire(timeout=JOIN) is True
        server.kill()
        killed = time.monotonic()
        # Its renewals fail: held turns False once the lease may have ended.
        while lock.held and elapsed(killed) < JOIN:
            time.sleep(0.01)
        assert lease * 0.5 < elapsed(killed) < lease + SLOW
        with pytest.raises(OwnerGone):
            lock.release()
        lock.close()


@pytest.mark.parametrize("cls", [RedisLock, RedisRLock, RedisSemaphore])
def test_redis_waiter_wakes_when_the_server_dies(cls: type[Any]) -> None:
    # Issue 10's rule: a wait with timeout=None ends when its server dies.
    with redis_server.RedisServer() as server:
        lock = cls(url=server.url, timeout=None)
        assert lock.acquire() is True  # by this thread: the waiter is another
        waiter, outcome = wait_in_thread(lock)
        server.kill()
        killed = time.monotonic()
        waiter.join(JOIN)
        assert elapsed(killed) < 1.0 + SLOW
        assert len(outcome) == 1 and isinstance(outcome[0], OwnerGone), outcome
        lock.close()


def test_redis_waiter_is_woken_by_a_release_not_by_polling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import redis

    from shmref import locks

    # Slices of 30 s and a lease of 60 s: only a release's wake can end the
    # waiter's BLPOP within the test's bound; a poll loop would show as tries.
    monkeypatch.setattr(locks, "_WAKE_SLICE", 30.0)
    with redis_server.RedisServer() as server, redis.Redis.from_url(server.url) as client:
        lock = RedisLock(url=server.url, lease=60, timeout=None)
        other = RedisLock.connect(lock.url, lock.name, timeout=None)
        assert lock.acquire() is True  # each script run once (and loaded) before the count
        lock.release()
        assert lock.acquire() is True
        client.delete(f"{{{lock.name}}}:wake")  # the wake of that release, taken by nobody
        client.config_resetstat()
        waiter, outcome = wait_in_thread(other)
        while client.info("clients")["blocked_clients"] == 0 and waiter.is_alive():
            time.sleep(0.01)  # until the waiter is in its BLPOP
        # An observation window, not a synchronisation: a waiter that polled
        # would make requests in it (a poll of any length, since the server
        # ends a short BLPOP at its next tick, 10 times a second).
        time.sleep(1.0)
        released = time.monotonic()
        lock.release()
        waiter.join(JOIN)
        assert not outcome and elapsed(released) < SLOW
        tries = client.info("commandstats")["cmdstat_evalsha"]["calls"]
        assert tries == 3, tries  # the waiter's try, the release, the waiter's try
        other.release()
        other.close()
        lock.close()


def check_forked_child(lock: Any) -> None:
    """Forked child: it holds none of its parent's locks, and its acquire waits for the parent."""
    assert lock.held is False
    try:
        lock.release()
    except ReleaseError:
        pass
    else:
        raise AssertionError("a forked child released its parent's lock")
    assert lock.acquire(timeout=SHORT) is False


@pytest.mark.parametrize("cls", [RedisLock, RedisRLock, RedisSemaphore])
def test_redis_forked_child_does_not_hold_its_parents_lock(redis_url: str, cls: type[Any]) -> None:
    with closing(cls(url=redis_url, lease=0.5, timeout=SHORT)) as lock:
        assert lock.acquire(timeout=JOIN) is True
        ctx = multiprocessing.get_context("fork")
        assert run_all([ctx.Process(target=check_forked_child, args=(lock,))]) == [0]
        assert lock.held is True  # the parent's renewals went on
        lock.release()


#: Leases every Redis kind refuses, and why.
BAD_LEASES: list[tuple[object, type[Exception], str]] = [
    ("1", TypeError, "lease must be a number of seconds"),
    (True, TypeError, "lease must be a number of seconds"),
    (-1, ValueError, "lease must be a number of seconds >= 0"),
    (math.nan, ValueError, "lease must be a number of seconds >= 0"),
    (0, ValueError, "lease must be at least 0.1 s"),
    (0.05, ValueError, "lease must be at least 0.1 s"),
    (None, ValueError, "lease must be a finite number of seconds"),
    (math.inf, ValueError, "lease must be a finite number of seconds"),
]


@pytest.mark.parametrize("cls", [RedisLock, RedisRLock, RedisSemaphore])
def test_redis_bad_leases(cls: type[Any]) -> None:
    # Refused before the server is asked (none listens at the default URL here).
    for lease, error, message in BAD_LEASES:
        with pytest.raises(error, match=message):
            cls(lease=lease)
