"""The contract of shmref.metrics, once, for every way and start method.

Each test is one clause of the :class:`~shmref.metrics.MetricsBoard`
contract. It runs for every way in :data:`FACTORIES` (or the ways
:func:`ways` names) under every start method; a way that cannot keep a
clause is marked at its parameter with the reason. The lifecycle clauses
(closed handles, ``with``, a child's ``close()``, a dead owner) are
tests/test_lifecycle.py's, from tests/ways_metrics.py. Targets of child
processes are module-level so that spawn and forkserver children can import
them.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from multiprocessing import connection
from multiprocessing.context import BaseContext
from typing import Any

import pytest

from shmref.holder import RecordedLock
from shmref.metrics import (
    INT64_MAX,
    MAX_WORKERS,
    CtypesMetrics,
    ManagerMetrics,
    MetricsBoard,
    MetricsManager,
    QueueMetrics,
    RedisMetrics,
    UnsafeMetrics,
    metrics_worker,
    monitor,
)
from tests import redis_server
from tests.apparatus_metrics import equal_fields_writer
from tests.conftest import JOIN, START_METHODS, contract

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FACTORIES: dict[str, Callable[..., MetricsBoard]] = {
    "ctypes": lambda ctx, *a, **kw: CtypesMetrics(*a, sync="seqlock", ctx=ctx, **kw),
    "ctypes-lock": lambda ctx, *a, **kw: CtypesMetrics(*a, sync="lock", ctx=ctx, **kw),
    "queue": lambda ctx, *a, **kw: QueueMetrics(*a, ctx=ctx, **kw),
    "manager": lambda ctx, *a, **kw: ManagerMetrics(*a, ctx=ctx, **kw),
    "redis": lambda ctx, *a, **kw: RedisMetrics(*a, url=redis_server.url(), **kw),
    "unsafe": lambda ctx, *a, **kw: UnsafeMetrics(*a, ctx=ctx, **kw),
}
CONTRACT = ("ctypes", "ctypes-lock", "queue", "manager", "redis")  # "unsafe" only where named
SHARED = ("ctypes", "ctypes-lock")

NOT_REPORTED_BY_ADD = "QueueMetrics.add does not wait: the next snapshot() reports the overflow"


def ways(*names: str, cannot: dict[str, str] | None = None) -> pytest.MarkDecorator:
    """Run a contract clause for the ways ``names`` (default: the contract's), every method."""
    return contract(names or CONTRACT, cannot=cannot)


@pytest.fixture
def make(way_name: str, ctx: BaseContext) -> Iterator[Callable[..., Any]]:
    """Build boards of the way under test; all are closed afterwards."""
    made: list[MetricsBoard] = []

    def make(workers: int = 2, *args: Any, **kwargs: Any) -> Any:
        board = FACTORIES[way_name](ctx, workers, *args, **kwargs)
        made.append(board)
        return board

    yield make
    for board in made:
        board.close()
    made.clear()


@pytest.fixture
def way(make: Callable[..., Any]) -> Any:
    """A two-worker board of the way under test, with the default fields."""
    return make()


def start(ctx: BaseContext, target: Callable[..., None], *args: Any) -> Any:
    process = ctx.Process(target=target, args=args)
    process.start()
    return process


def finish(*processes: Any) -> None:
    for process in processes:
        process.join(JOIN)
    assert [process.exitcode for process in processes] == [0] * len(processes)
    for process in processes:
        process.close()


# Child process targets.


def add_many(board: MetricsBoard, worker: int, n: int, barrier: Any = None) -> None:
    if barrier is not None:
        barrier.wait(JOIN)
    for _ in range(n):
        board.add(worker, completed=1, throughput=2)
    board.close()


def try_row(board: MetricsBoard, worker: int, conn: Any) -> None:
    """Report what writing ``worker``'s row does in this process."""
    try:
        board.add(worker, completed=1)
    except RuntimeError as error:
        conn.send(str(error))
    else:
        conn.send("ok")
    conn.close()
    board.close()


def claim_and_block(board: MetricsBoard, worker: int, conn: Any) -> None:
    """Claim a row, say so, and wait to be killed."""
    board.add(worker, completed=1)
    conn.send("claimed")
    conn.recv()  # never sent: the parent kills this process


def answer(ctx: BaseContext, target: Callable[..., None], *args: Any) -> Any:
    """Run ``target(*args, conn)`` in a child and return what it sends."""
    reader, writer = ctx.Pipe(duplex=False)
    with reader:
        process = start(ctx, target, *args, writer)
        writer.close()
        assert reader.poll(JOIN), "the child sent nothing"
        said = reader.recv()
    finish(process)
    return said


# Workers fill their rows; the monitor reads them.


@ways()
def test_example_workers_fill_their_rows(make: Callable[..., Any], ctx: BaseContext) -> None:
    board = make(4)
    assert isinstance(board, MetricsBoard)
    tasks = 50
    workers = [start(ctx, metrics_worker, board, worker, tasks) for worker in range(4)]
    out = io.StringIO()
    totals = monitor(board, workers, interval=0.05, out=out)
    for process in workers:
        process.close()
    rows = board.snapshot()
    assert [(row["completed"], row["errors"]) for row in rows] == [(45, 5)] * 4
    assert all(row["throughput"] > 0 for row in rows)
    assert totals == board.totals()
    assert (totals["completed"], totals["errors"]) == (180, 20)
    assert out.getvalue().splitlines()[-1].startswith("done: completed 180  errors 20  ")


@ways(*CONTRACT, "unsafe")
def test_adds_from_processes_are_exact(make: Callable[..., Any], ctx: BaseContext) -> None:
    # One writer per row: even the unsafe board loses no update.
    board = make(3)
    n = 500
    barrier = ctx.Barrier(3)
    workers = [start(ctx, add_many, board, worker, n, barrier) for worker in range(3)]
    finish(*workers)
    assert board.snapshot() == [{"completed": n, "errors": 0, "throughput": 2 * n}] * 3
    assert board.totals() == {"completed": 3 * n, "errors": 0, "throughput": 6 * n}


@ways()
def test_parent_reads_child_rows_and_child_reads_parent_rows(
    way: MetricsBoard, ctx: BaseContext
) -> None:
    way.set(0, errors=4)
    assert way.snapshot()[0]["errors"] == 4
    finish(start(ctx, add_many, way, 1, 3))  # add_many closes the child's handle
    assert way.snapshot() == [
        {"completed": 0, "errors": 4, "throughput": 0},
        {"completed": 3, "errors": 0, "throughput": 6},
    ]


@ways()
def test_named_fields(make: Callable[..., Any]) -> None:
    board = make(1, ("ok", "worker", "self"))  # names that are add()'s own parameters too
    board.add(0, ok=2, worker=3, self=4)
    board.set(0, ok=-1)
    assert board.snapshot() == [{"ok": -1, "worker": 3, "self": 4}]
    assert board.totals() == {"ok": -1, "worker": 3, "self": 4}


def test_manager_boards_share_a_manager(ctx: BaseContext) -> None:
    manager = MetricsManager(ctx=ctx)
    manager.start()
    try:
        a = ManagerMetrics(2, manager=manager)
        b = ManagerMetrics(1, ("x",), manager=manager)
        finish(start(ctx, add_many, a, 1, 3))
        b.add(0, x=5)
        assert (a.totals()["completed"], b.totals()) == (3, {"x": 5})
        a.close()
        assert b.snapshot() == [{"x": 5}]  # closing a board leaves a shared server running
        b.close()
    finally:
        manager.shutdown()


# Per-row consistency: the monitor never sees a half-updated row.

#: Fields of the boards the torn-row tests use: many, so that a set takes
#: long enough for a reader (or an owner's feeder thread) to land inside it.
WIDE = tuple(f"f{i}" for i in range(256))

#: How many snapshots must have overlapped writes (seen a row change since
#: the previous snapshot), and per way how often the writers wait for the
#: owner: a Queue's writer would otherwise flood it, and every snapshot
#: would wait behind the flood.
OVERLAPS = 300
EVERY = {"queue": 20}

#: Seconds the monitor may take to see enough overlaps on a loaded machine.
OVERLAP_WAIT = 90.0


@contextlib.contextmanager
def shaken() -> Iterator[None]:
    """A GIL switch interval of 1 µs, which processes forked meanwhile inherit.

    An owner or server forked under it switches between its threads at
    almost every bytecode (CPython's own tests do this to provoke races), so
    a reply pickled by a feeder thread while the main thread is half-way
    through a ``set`` shows up soon (issue 9). Spawned processes start with
    the default interval: under spawn and forkserver the test is less sharp.
    """
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def watch(board: MetricsBoard, writers: list[Any], stop: Any, overlaps: int) -> tuple[int, int]:
    """Snapshot ``board`` while ``writers`` run; (torn rows, snapshots that overlapped writes).

    A snapshot overlapped writes if a row changed since the previous one.
    Goes on until ``overlaps`` of them (evidence, not a count of snapshots
    that a loaded machine may not make overlap), a writer's exit, or
    :data:`OVERLAP_WAIT` seconds; then tells the writers to stop.
    """
    torn = overlapped = taken = 0
    previous: list[tuple[int, ...]] = []
    deadline = time.monotonic() + OVERLAP_WAIT
    while overlapped < overlaps and time.monotonic() < deadline:
        rows = [tuple(row.values()) for row in board.snapshot()]
        torn += sum(len(set(row)) > 1 for row in rows)
        overlapped += bool(previous) and rows != previous
        previous = rows
        taken += 1
        if taken % 64 == 0 and any(writer.exitcode is not None for writer in writers):
            break  # a writer crashed: finish() says how
    stop.value = True
    return torn, overlapped


def run_writers(board: MetricsBoard, ctx: BaseContext, way_name: str) -> tuple[int, int]:
    """Two writers keep their rows' fields equal while :func:`watch` reads the board."""
    stop = ctx.RawValue(ctypes.c_bool, False)
    barrier = ctx.Barrier(3)
    every = EVERY.get(way_name, 0)
    writers = [
        start(ctx, equal_fields_writer, board, row, 10**12, stop, barrier, JOIN, every)
        for row in (0, 1)
    ]
    barrier.wait(JOIN)
    seen = watch(board, writers, stop, OVERLAPS)
    barrier.wait(JOIN)
    finish(*writers)
    return seen


@ways()
def test_snapshot_never_shows_a_half_updated_row(
    make: Callable[..., Any], ctx: BaseContext, way_name: str
) -> None:
    # Regression (issue 9) for QueueMetrics: its owner put the live rows on
    # the reply queue, and the queue's feeder thread pickled them later,
    # while the owner's main thread went on writing them.
    with shaken():
        board = make(2, WIDE)
    torn, overlapped = run_writers(board, ctx, way_name)
    assert overlapped >= OVERLAPS, "the writers and the monitor did not overlap"
    assert torn == 0
    assert all(len(set(row.values())) == 1 for row in board.snapshot())


def test_unsafe_board_shows_half_updated_rows(ctx: BaseContext) -> None:
    # What the sequence counter prevents. Three attempts keep a machine too
    # busy to run writers and monitor at once from failing the test.
    for _ in range(3):
        with UnsafeMetrics(2, WIDE, ctx=ctx) as board:
            torn, _ = run_writers(board, ctx, "unsafe")
        if torn:
            break
    assert torn > 0


# Bad input: the same exception in every way, and nothing changes.

BAD_INPUTS: list[tuple[str, Callable[[MetricsBoard], object], type[Exception]]] = [
    ("unknown field", lambda b: b.add(0, completed=1, missing=1), TypeError),
    ("float value", lambda b: b.add(0, completed=1.0), TypeError),  # type: ignore[arg-type]
    ("bool value", lambda b: b.add(0, completed=True), TypeError),
    ("str value", lambda b: b.set(0, completed="1"), TypeError),  # type: ignore[arg-type]
    ("None value", lambda b: b.set(0, errors=None), TypeError),  # type: ignore[arg-type]
    ("worker past the end", lambda b: b.add(2, completed=1), IndexError),
    ("negative worker", lambda b: b.set(-1, completed=1), IndexError),
    ("bool worker", lambda b: b.add(True, completed=1), TypeError),
    ("str worker", lambda b: b.set("0", completed=1), TypeError),  # type: ignore[arg-type]
    ("float worker", lambda b: b.add(0.0, completed=1), TypeError),  # type: ignore[arg-type]
    ("set past int64", lambda b: b.set(0, completed=1, errors=2**63), OverflowError),
    ("set below int64", lambda b: b.set(0, errors=-(2**63) - 1), OverflowError),
]


@ways()
def test_bad_input_raises_the_same_error_in_every_way(way: MetricsBoard) -> None:
    way.add(0, completed=5, errors=1)
    before = way.snapshot()
    raised = {}
    for name, call, _ in BAD_INPUTS:
        try:
            call(way)
        except Exception as error:
            raised[name] = type(error)
            assert str(error), name  # a message that names the problem
        else:
            raised[name] = None
        assert way.snapshot() == before, name
    assert raised == {name: error for name, _, error in BAD_INPUTS}


@ways()
def test_numpy_integers_count_as_ints(way: MetricsBoard) -> None:
    numpy = pytest.importorskip("numpy")
    way.add(numpy.int64(1), completed=numpy.int32(2), errors=numpy.uint8(3))
    way.set(numpy.intp(0), throughput=numpy.int64(INT64_MAX))
    rows = way.snapshot()
    assert rows == [
        {"completed": 0, "errors": 0, "throughput": INT64_MAX},
        {"completed": 2, "errors": 3, "throughput": 0},
    ]
    assert all(type(value) is int for row in rows for value in row.values())
    for bad, error in [
        (lambda: way.add(0, completed=numpy.float64(1)), TypeError),
        (lambda: way.add(0, completed=numpy.bool_(True)), TypeError),
        (lambda: way.add(numpy.bool_(False), completed=1), TypeError),
        (lambda: way.set(0, errors=numpy.uint64(2**64 - 1)), OverflowError),
    ]:
        with pytest.raises(error):
            bad()
    assert way.snapshot() == rows


@ways(cannot={"queue": NOT_REPORTED_BY_ADD})
def test_add_that_overflows_raises_and_leaves_row(way: MetricsBoard) -> None:
    way.set(1, completed=7, throughput=INT64_MAX)
    with pytest.raises(OverflowError):
        way.add(1, completed=1, throughput=1)  # refused whole: completed stays 7
    assert way.snapshot()[1] == {"completed": 7, "errors": 0, "throughput": INT64_MAX}


@ways()
def test_add_past_int64_that_lands_in_range_is_applied(way: MetricsBoard) -> None:
    # RedisMetrics's HINCRBY takes int64 increments only: it sends pieces.
    way.set(0, completed=-1, errors=INT64_MAX)
    way.add(0, completed=2**63, errors=-(2**64) + 1)
    assert way.snapshot()[0] == {"completed": INT64_MAX, "errors": -INT64_MAX - 1, "throughput": 0}


@ways(cannot={"queue": NOT_REPORTED_BY_ADD})
def test_add_no_field_can_take_raises_and_leaves_row(way: MetricsBoard) -> None:
    way.set(0, completed=3, errors=-(2**63))
    for delta in (2**64, -(2**64), 10**30):
        with pytest.raises(OverflowError, match=f"completed would be {3 + delta}"):
            way.add(0, errors=1, completed=delta)
    assert way.snapshot()[0] == {"completed": 3, "errors": -(2**63), "throughput": 0}


@ways("queue")
def test_queue_overflow_is_reported_by_next_snapshot(way: MetricsBoard) -> None:
    way.set(1, throughput=INT64_MAX)
    way.add(1, completed=1, throughput=1)  # refused whole by the owner
    way.add(1, throughput=2)
    with pytest.raises(OverflowError, match=r"throughput would be .*\(1 more adds"):
        way.snapshot()
    assert way.snapshot()[1] == {"completed": 0, "errors": 0, "throughput": INT64_MAX}


@ways()
def test_bad_shape_is_refused(make: Callable[..., Any]) -> None:
    before = {process.pid for process in multiprocessing.active_children()}
    for args in [
        (0,),
        (True,),
        ("2",),
        (2.0,),
        (MAX_WORKERS + 1,),
        (2**40,),  # was "Python int too large to convert to C long" in one way
        (2, ()),
        (2, "abc"),
        (2, ("a", "a")),
        (2, ("a", "not a name")),
        (2, ("a", 1)),
    ]:
        with pytest.raises(ValueError):
            make(*args)
    assert {process.pid for process in multiprocessing.active_children()} == before


def test_bad_sync_is_refused(ctx: BaseContext) -> None:
    with pytest.raises(ValueError, match="sync"):
        CtypesMetrics(2, sync="none", ctx=ctx)  # type: ignore[arg-type]


# CtypesMetrics: one writer process per row.


@ways(*SHARED)
def test_a_row_has_one_writer_process(way: MetricsBoard, ctx: BaseContext) -> None:
    way.add(0, completed=1)  # the parent claims row 0
    said = answer(ctx, try_row, way, 0)
    assert said.startswith(f"row 0 is written by process {os.getpid()}")
    assert answer(ctx, try_row, way, 1) == "ok"  # row 1 is free...
    assert answer(ctx, try_row, way, 1) == "ok"  # ...and free again once its writer exits
    assert [row["completed"] for row in way.snapshot()] == [1, 2]


@ways(*SHARED)
def test_row_of_a_killed_writer_can_be_claimed(way: MetricsBoard, ctx: BaseContext) -> None:
    reader, writer = ctx.Pipe()
    with reader, writer:
        process = start(ctx, claim_and_block, way, 1, writer)
        assert reader.poll(JOIN) and reader.recv() == "claimed"
        with pytest.raises(RuntimeError):
            way.add(1, completed=1)
        process.kill()
        process.join(JOIN)
        process.close()
    way.add(1, completed=1)
    assert way.snapshot()[1]["completed"] == 2


def test_row_mid_update_by_a_live_writer_times_out(ctx: BaseContext) -> None:
    with CtypesMetrics(2, sync="seqlock", ctx=ctx, timeout=0.3) as board:
        board.set(0, completed=1)
        board._writers[1] = os.getpid()  # row 1's writer, alive, between two writes
        board._cells[board._stride] += 1
        start_time = time.monotonic()
        with pytest.raises(TimeoutError, match="row 1"):
            board.snapshot()
        assert 0.25 <= time.monotonic() - start_time < 10
        board._cells[board._stride] += 1  # the update ends
        assert board.snapshot()[1] == {"completed": 0, "errors": 0, "throughput": 0}


def _exit() -> None:
    pass


def test_row_left_mid_update_by_a_dead_writer_is_repaired(ctx: BaseContext) -> None:
    with CtypesMetrics(2, sync="seqlock", ctx=ctx, timeout=JOIN) as board:
        board.set(0, completed=1)
        dead = ctx.Process(target=_exit)
        dead.start()
        dead.join()
        board._writers[1] = dead.pid  # row 1's writer died between two writes
        board._cells[board._stride] += 1
        board._cells[board._stride + 2] = 5  # of which this one was done
        assert board.snapshot()[1] == {"completed": 0, "errors": 5, "throughput": 0}
        assert not board._cells[board._stride] & 1
        board.add(1, errors=1)  # a new writer claims the row
        assert board.snapshot()[1] == {"completed": 0, "errors": 6, "throughput": 0}


def test_lock_board_times_out_when_row_lock_is_held(ctx: BaseContext) -> None:
    with CtypesMetrics(2, sync="lock", ctx=ctx, timeout=0.2) as board:
        row = RecordedLock(board._row_holders[1], None, "row lock")
        assert row.acquire()  # as if a live writer held it
        try:
            with pytest.raises(TimeoutError):
                board.set(1, completed=1)
            with pytest.raises(TimeoutError):
                board.snapshot()
        finally:
            row.release()
        assert board.totals()["completed"] == 0


# QueueMetrics: its owner process.

CLOSE_AFTER_OWNER_DIED = """
import contextlib, multiprocessing, sys, time
from shmref.lifecycle import OwnerGone
from shmref.metrics import QueueMetrics
board = QueueMetrics(2, ctx=multiprocessing.get_context(sys.argv[1]), timeout=3)
owner = board._owner._process
owner.kill()
owner.join()
for _ in range(50_000):  # far more than a pipe holds (the feeder of old blocked)
    with contextlib.suppress(OwnerGone):  # the owner is gone: the add says so
        board.add(0, completed=1)
start = time.monotonic()
board.close()
print(time.monotonic() - start)
"""


@pytest.mark.parametrize("start_method", START_METHODS)
def test_close_returns_when_the_owner_died_with_updates_unsent(start_method: str) -> None:
    # Regression (issue 9): close() joined the requests queue's feeder
    # thread, which waited for ever to write to a full pipe nobody read.
    # In a child interpreter: a hung feeder would also hang this one's exit.
    try:
        done = subprocess.run(
            [sys.executable, "-c", CLOSE_AFTER_OWNER_DIED, start_method],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("close() hung after the owner died")
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) < 5, "close() waited for the dead owner"


@pytest.mark.parametrize("start_method", ["forkserver"])
def test_queue_owner_outlives_an_idle_second(ctx: BaseContext) -> None:
    # The owner checks every second that its creator lives; under forkserver
    # its parent is the fork server, which must not count as the creator dying
    # (the other start methods make the creator the parent: nothing to test).
    with QueueMetrics(1, ctx=ctx, timeout=5) as board:
        board.add(0, errors=1)
        sentinel = board._owner._process.sentinel
        assert not connection.wait([sentinel], timeout=1.5)
        assert board.totals()["errors"] == 1


# The example as a program.


@pytest.mark.parametrize("way_name", ["ctypes", "queue", "manager"])
def test_the_example_runs_as_a_program(way_name: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.apparatus_metrics", way_name, "100"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-5].startswith("done: completed 360  errors 40  throughput ")
    assert lines[-4].startswith("worker 0: {'completed': 90, 'errors': 10, 'throughput': ")
    assert "Traceback" not in result.stderr
