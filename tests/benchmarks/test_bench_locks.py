"""Benchmarks of shmref.locks: uncontended cost, contention, holding time, claims.

``nox -s bench -- locks`` measures and stores docs/bench/locks.json; the test
suite runs each benchmark once, small (see timing.py). The report that turns
the stored run into tables and verdicts is docs/_ext/report_locks.py; the
``extra_info`` keys set here (way, primitive, style, processes, threads,
hold, ops) are what it reads. One operation is one acquire and one release.
Two ways are threads of one process, for the article's advice that threads
use ``threading.Lock`` rather than ``multiprocessing.Lock`` (docs/_ext/claims.py,
``threading-lock``): "threading", a ``threading.Lock``, and, in the hand-off,
"stdlib-threads", the bare ``multiprocessing.Lock`` taken by two threads.
"""

from __future__ import annotations

import ctypes
import itertools
import multiprocessing
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from shmref.locks import (
    CtypesLock,
    CtypesRLock,
    CtypesSemaphore,
    ManagerLock,
    ManagerRLock,
    ManagerSemaphore,
    QueueLock,
    QueueRLock,
    QueueSemaphore,
    RobustLock,
)

from .peers import describe, posix_semaphore
from .startup import time_startup
from .timing import BARRIER_TIMEOUT, WorkerGroup, size, time_groups

CTX = multiprocessing.get_context()

#: (primitive, way) -> callable(ctx, value) making it. "stdlib" is the bare
#: multiprocessing object the ctypes way wraps, to measure the wrapper.
MAKERS: dict[tuple[str, str], Callable[[Any, int], Any]] = {
    ("lock", "ctypes"): lambda ctx, n: CtypesLock(ctx=ctx),
    ("lock", "queue"): lambda ctx, n: QueueLock(ctx=ctx),
    ("lock", "manager"): lambda ctx, n: ManagerLock(ctx=ctx),
    ("lock", "robust"): lambda ctx, n: RobustLock(ctx=ctx),
    ("lock", "stdlib"): lambda ctx, n: ctx.Lock(),
    # Not for processes: the lock threads of one process would use instead.
    ("lock", "threading"): lambda ctx, n: threading.Lock(),
    ("rlock", "ctypes"): lambda ctx, n: CtypesRLock(ctx=ctx),
    ("rlock", "queue"): lambda ctx, n: QueueRLock(ctx=ctx),
    ("rlock", "manager"): lambda ctx, n: ManagerRLock(ctx=ctx),
    ("rlock", "stdlib"): lambda ctx, n: ctx.RLock(),
    ("semaphore", "ctypes"): lambda ctx, n: CtypesSemaphore(n, ctx=ctx),
    ("semaphore", "queue"): lambda ctx, n: QueueSemaphore(n, ctx=ctx),
    ("semaphore", "manager"): lambda ctx, n: ManagerSemaphore(n, ctx=ctx),
    ("semaphore", "stdlib"): lambda ctx, n: ctx.BoundedSemaphore(n),
    # A peer (peers.py): a named POSIX semaphore, a lock at value 1.
    ("lock", "posix-ipc"): lambda ctx, n: posix_semaphore(1),
    ("semaphore", "posix-ipc"): lambda ctx, n: posix_semaphore(n),
}
#: The peer each peer way measures.
PEER_OF = {"posix-ipc": "posix-ipc"}
WAYS = ["ctypes", "queue", "manager"]

# Operations per timed round, sized so a round lasts roughly 10-50 ms.
UNCONTENDED_OPS = {"ctypes": 50_000, "robust": 50_000, "stdlib": 50_000, "queue": 1_000}
UNCONTENDED_OPS["threading"] = 50_000
UNCONTENDED_OPS["posix-ipc"] = 50_000
UNCONTENDED_OPS["manager"] = 500
# Operations per process in the contended runs (roughly 0.1-0.3 s a round).
CONTENDED_OPS = {"ctypes": 20_000, "robust": 20_000, "queue": 1_000, "manager": 500}
CONTENDED_OPS.update({"stdlib": 20_000, "posix-ipc": 20_000})
# Threads hand the GIL over every 5 ms (sys.getswitchinterval()), and a lock
# changes threads mostly then: 100,000 sections each (about 50 ms a round)
# span several switches.
CONTENDED_OPS.update({"threading": 100_000, "stdlib-threads": 100_000})


@pytest.fixture
def make(request: pytest.FixtureRequest, benchmark: Any) -> Callable[..., Any]:
    def make(primitive: str, way: str, value: int = 1) -> Any:
        if way in PEER_OF:
            describe(benchmark, PEER_OF[way])
        lock = MAKERS[primitive, way](CTX, value)
        if hasattr(lock, "close"):
            request.addfinalizer(lock.close)
        if hasattr(lock, "unlink"):  # a named semaphore: its name goes first
            request.addfinalizer(lock.unlink)
        return lock

    return make


def explicit_calls(lock: Any, ops: int) -> None:
    acquire, release = lock.acquire, lock.release
    for _ in range(ops):
        acquire()
        release()


def with_block(lock: Any, ops: int) -> None:
    for _ in range(ops):
        with lock:
            pass


STYLES = {"calls": explicit_calls, "with": with_block}


@pytest.mark.parametrize("style", list(STYLES))
@pytest.mark.parametrize(("primitive", "way"), MAKERS, ids=[f"{p}-{w}" for p, w in MAKERS])
def test_uncontended(
    benchmark: Any, make: Callable[..., Any], primitive: str, way: str, style: str
) -> None:
    """Acquire and release in one process, nobody else using the lock."""
    lock = make(primitive, way)
    ops = size(benchmark, UNCONTENDED_OPS[way], 20)
    benchmark.group = "locks-uncontended"
    benchmark.extra_info.update(way=way, primitive=primitive, style=style, ops=ops, processes=1)
    benchmark.pedantic(
        STYLES[style],
        args=(lock, ops),
        rounds=size(benchmark, 20, 1),
        warmup_rounds=size(benchmark, 1, 0),
    )


# Several processes: worker targets, module-level for every start method.


def busy(seconds: float) -> None:
    """Work for ``seconds`` of CPU time: the critical section of the hold runs."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def section_worker(
    lock: Any, ops: int, hold: float, barrier: Any = None, timeout: float = 60.0
) -> None:
    """Process target: ``ops`` times enter ``lock`` and work ``hold`` seconds inside."""
    if barrier is not None:
        barrier.wait(timeout)
    for _ in range(ops):
        with lock:
            if hold:
                busy(hold)
    if barrier is not None:
        barrier.wait(timeout)
    # A bare multiprocessing lock has no close(); a posix_ipc one closes
    # this process's handle.
    close = getattr(lock, "close", None)
    if close is not None:
        close()


class Unlocked:
    """No lock at all: the same sections run in parallel (the no-lock baseline)."""

    def __enter__(self) -> bool:
        return True

    def __exit__(self, *exc: object) -> None:
        pass

    def close(self) -> None:
        pass


def time_sections(benchmark: Any, lock: Any, processes: int, ops: int, hold: float) -> None:
    time_groups(
        benchmark,
        lambda: WorkerGroup(CTX, section_worker, lambda b: (lock, ops, hold, b), processes),
        rounds=size(benchmark, 5, 1),
    )


HANDOFF = [("lock", way) for way in [*WAYS, "robust", "stdlib", "posix-ipc"]]
HANDOFF += [("rlock", way) for way in WAYS]


@pytest.mark.parametrize(("primitive", "way"), HANDOFF, ids=[f"{p}-{w}" for p, w in HANDOFF])
def test_handoff(benchmark: Any, make: Callable[..., Any], primitive: str, way: str) -> None:
    """Two processes take the lock in turn, empty sections: contention only."""
    lock = make(primitive, way)
    ops = size(benchmark, CONTENDED_OPS[way], 20)
    benchmark.group = "locks-handoff"
    benchmark.extra_info.update(way=way, primitive=primitive, ops=2 * ops, processes=2)
    time_sections(benchmark, lock, 2, ops, 0.0)


class ThreadGroup(WorkerGroup):
    """Threads of this process, not processes, running section_worker on one lock."""

    def __init__(self, lock: Any, ops: int, threads: int) -> None:
        self.barrier = threading.Barrier(threads + 1)
        self.failed: list[BaseException] = []
        self.threads = [
            threading.Thread(target=self._work, args=(lock, ops), daemon=True)
            for _ in range(threads)
        ]
        for t in self.threads:
            t.start()

    def _work(self, lock: Any, ops: int) -> None:
        try:
            section_worker(lock, ops, 0.0, self.barrier, BARRIER_TIMEOUT)
        except BaseException as error:  # handed to join(), in the test's thread
            self.failed.append(error)
            self.barrier.abort()  # the timed run() then fails at once instead of waiting

    def join(self) -> None:
        for t in self.threads:
            t.join(BARRIER_TIMEOUT)
            if t.is_alive():
                raise RuntimeError(f"{t.name} still running after {BARRIER_TIMEOUT} s")
        if self.failed:
            raise self.failed[0]


#: The hand-off between two threads of one process: way -> the lock's maker in MAKERS.
THREAD_HANDOFF = {"threading": "threading", "stdlib-threads": "stdlib"}


@pytest.mark.parametrize("way", list(THREAD_HANDOFF))
def test_handoff_threads(benchmark: Any, make: Callable[..., Any], way: str) -> None:
    """Two threads of one process take the lock in turn, empty sections.

    ``multiprocessing.Lock`` is measured here too, so the article's advice is
    weighed like with like: threads using either lock.
    """
    lock = make("lock", THREAD_HANDOFF[way])
    ops = size(benchmark, CONTENDED_OPS[way], 20)
    benchmark.group = "locks-handoff"
    benchmark.extra_info.update(way=way, primitive="lock", ops=2 * ops, processes=1, threads=2)
    time_groups(benchmark, lambda: ThreadGroup(lock, ops, 2), rounds=size(benchmark, 5, 1))


def turn_worker(
    lock: Any, log: Any, me: int, ops: int, barrier: Any = None, timeout: float = 60.0
) -> None:
    """Process target: ``ops`` times take ``lock`` and note in ``log`` who took it."""
    if barrier is not None:
        barrier.wait(timeout)
    for _ in range(ops):
        with lock:
            n = log[0] + 1
            log[0] = n
            log[n] = me
    if barrier is not None:
        barrier.wait(timeout)
    lock.close()


class TurnGroup(WorkerGroup):
    """Two turn_workers sharing one log, which starts empty."""

    def __init__(self, lock: Any, log: Any, ops: int) -> None:
        log[0] = 0
        self.barrier = CTX.Barrier(3)
        self.processes = [
            CTX.Process(target=turn_worker, args=(lock, log, me, ops, self.barrier))
            for me in (1, 2)
        ]
        for p in self.processes:
            p.start()


@pytest.mark.parametrize("way", [*WAYS, "robust"])
def test_turns(benchmark: Any, make: Callable[..., Any], way: str) -> None:
    """The hand-off loop again, noting who takes the lock: how often it changes hands."""
    lock = make("lock", way)
    ops = size(benchmark, CONTENDED_OPS[way], 20)
    log = CTX.RawArray(ctypes.c_int32, 2 * ops + 1)
    benchmark.group = "locks-turns"
    time_groups(benchmark, lambda: TurnGroup(lock, log, ops), rounds=size(benchmark, 3, 1))
    takers = log[1 : 2 * ops + 1]
    assert log[0] == 2 * ops and sorted(set(takers)) == [1, 2]
    changes = sum(1 for a, b in itertools.pairwise(takers) if a != b)
    benchmark.extra_info.update(
        way=way,
        primitive="lock",
        ops=2 * ops,
        processes=2,
        changes=changes,
        handovers=changes / (2 * ops - 1),
    )


@pytest.mark.parametrize("way", [*WAYS, "stdlib", "posix-ipc"])
def test_semaphore(benchmark: Any, make: Callable[..., Any], way: str) -> None:
    """Semaphore(2) shared by 4 processes, short sections (10 µs of work)."""
    semaphore = make("semaphore", way, 2)
    ops = size(benchmark, CONTENDED_OPS[way] // 4, 10)
    benchmark.group = "locks-semaphore"
    benchmark.extra_info.update(
        way=way, primitive="semaphore", value=2, ops=4 * ops, processes=4, hold=1e-5
    )
    time_sections(benchmark, semaphore, 4, ops, 1e-5)


#: Seconds a holder works inside the section, for the throughput-vs-hold curve.
#: 1 and 10 µs check the article's "a lock held for microseconds sees negligible
#: contention". busy() waits on perf_counter for them: time.sleep cannot (on
#: Linux it sleeps some 50 µs at the least, the timer slack), and a sleeping
#: holder would leave its core to the other process. A check of the clock takes
#: about 0.1 µs, so a 1 µs hold works some 1.2 µs; the "none" baseline runs the
#: same busy() and overshoots as much.
HOLDS = [0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2]
#: Sections per process: about 0.1 s of held time per round (at least 5).
#: Empty sections: as many as the hand-off runs (20,000 without a lock).
HOLD_OPS = {hold: max(5, int(0.05 / hold)) if hold else 20_000 for hold in HOLDS}


@pytest.mark.parametrize("hold", HOLDS, ids=[f"{h * 1e3:g}ms" for h in HOLDS])
@pytest.mark.parametrize("way", [*WAYS, "none"])
def test_hold(benchmark: Any, make: Callable[..., Any], way: str, hold: float) -> None:
    """Two processes take a Lock and work ``hold`` seconds inside it; "none": no lock."""
    lock = Unlocked() if way == "none" else make("lock", way)
    ops = size(benchmark, min(HOLD_OPS[hold], CONTENDED_OPS.get(way, HOLD_OPS[hold])), 3)
    benchmark.group = "locks-hold"
    benchmark.extra_info.update(way=way, primitive="lock", hold=hold, ops=2 * ops, processes=2)
    time_sections(benchmark, lock, 2, ops, hold)


@pytest.mark.parametrize("way", [*WAYS, "robust"])
def test_startup(benchmark: Any, way: str) -> None:
    """Create and close a Lock: the Queue's owner or the Manager's server starts."""
    time_startup(
        benchmark,
        "locks-startup",
        way,
        lambda: MAKERS["lock", way](CTX, 1),
        CTX.get_start_method(),
        primitive="lock",
    )
