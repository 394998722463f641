"""The contract of shmref.metrics, once, for every way and start method.

Each test is one clause of the :class:`~shmref.metrics.MetricsBoard`
contract. It runs for every way in :data:`FACTORIES` (or the ways
:func:`ways` names) under every start method; a way that cannot keep a
clause is marked at its parameter with the reason. Targets of child
processes are module-level so that spawn and forkserver children can import
them.
"""

from __future__ import annotations

import ctypes
import io
import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from multiprocessing.context import BaseContext
from typing import Any

import pytest

from shmref.metrics import (
    INT64_MAX,
    CtypesMetrics,
    ManagerMetrics,
    MetricsBoard,
    QueueMetrics,
    UnsafeMetrics,
    equal_fields_writer,
    metrics_worker,
    monitor,
)
from tests.conftest import JOIN, contract

#: Seconds to wait for a child to finish or reply; pytest-timeout is the backstop.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FACTORIES: dict[str, Callable[..., MetricsBoard]] = {
    "ctypes": lambda ctx, *a, **kw: CtypesMetrics(*a, sync="seqlock", ctx=ctx, **kw),
    "ctypes-lock": lambda ctx, *a, **kw: CtypesMetrics(*a, sync="lock", ctx=ctx, **kw),
    "queue": lambda ctx, *a, **kw: QueueMetrics(*a, ctx=ctx, **kw),
    "manager": lambda ctx, *a, **kw: ManagerMetrics(*a, ctx=ctx, **kw),
    "unsafe": lambda ctx, *a, **kw: UnsafeMetrics(*a, ctx=ctx, **kw),
}
CONTRACT = ("ctypes", "ctypes-lock", "queue", "manager")  # "unsafe" only where named
SHARED = ("ctypes", "ctypes-lock")
OWNED_WAYS = ("queue", "manager")

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
    finish(start(ctx, add_many, way, 1, 3))
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


# Per-row consistency: the monitor never sees a half-updated row.


def watch(
    board: MetricsBoard, writer: Any, stop: Any, snapshots: int, overlap: int = 50
) -> tuple[int, int]:
    """Snapshot ``board`` while ``writer`` runs; (rows with unequal fields, values seen).

    Takes at least ``snapshots`` snapshots and goes on until the writer has
    been seen at ``overlap`` different values (so the two really overlapped),
    the writer process ends, or 10 s pass.
    """
    torn, seen = 0, set()
    deadline = time.monotonic() + 10
    taken = 0
    while taken < snapshots or (len(seen) < overlap and time.monotonic() < deadline):
        for row in board.snapshot():
            values = set(row.values())
            torn += len(values) > 1
            seen |= values
        taken += 1
        if taken % 100 == 0 and not writer.is_alive():
            break
    stop.value = True
    return torn, len(seen)


#: Per way: updates the writer may make, snapshots the monitor takes at
#: least, and how many values of the writer's row it must see. A Queue's
#: writer floods the queue, and each snapshot request waits behind the
#: flood (its feeder thread competes for the queue's write lock), so it
#: takes fewer, slower snapshots.
WATCH = {
    "ctypes": (10**7, 3000, 50),
    "ctypes-lock": (10**7, 3000, 50),
    "unsafe": (10**7, 3000, 50),
    "queue": (20_000, 20, 5),
    "manager": (10**7, 200, 50),
}


@ways()
def test_snapshot_never_shows_a_half_updated_row(
    make: Callable[..., Any], ctx: BaseContext, way_name: str
) -> None:
    board = make(2)
    stop = ctx.RawValue(ctypes.c_bool, False)
    n, snapshots, overlap = WATCH[way_name]
    barrier = ctx.Barrier(2)
    writer = start(ctx, equal_fields_writer, board, 1, n, stop, barrier)
    barrier.wait(JOIN)
    torn, seen = watch(board, writer, stop, snapshots, overlap)
    barrier.wait(JOIN)
    finish(writer)
    assert seen >= overlap, "the writer and the monitor did not overlap"
    assert torn == 0
    last = board.snapshot()[1]
    assert len(set(last.values())) == 1


def test_unsafe_board_shows_half_updated_rows(ctx: BaseContext) -> None:
    # What the sequence counter prevents. Three attempts keep a machine too
    # busy to run writer and monitor at once from failing the test.
    n, snapshots, _ = WATCH["unsafe"]
    for _ in range(3):
        with UnsafeMetrics(2, ctx=ctx) as board:
            stop = ctx.RawValue(ctypes.c_bool, False)
            barrier = ctx.Barrier(2)
            writer = start(ctx, equal_fields_writer, board, 1, n, stop, barrier)
            barrier.wait(JOIN)
            torn, _ = watch(board, writer, stop, snapshots)
            barrier.wait(JOIN)
            finish(writer)
        if torn:
            break
    assert torn > 0


# Bad input changes nothing.


@ways()
def test_bad_input_leaves_rows_unchanged(way: MetricsBoard) -> None:
    way.add(0, completed=5, errors=1)
    before = way.snapshot()
    bad_calls: list[tuple[Callable[[], None], type[Exception]]] = [
        (lambda: way.add(0, completed=1, missing=1), TypeError),
        (lambda: way.add(0, completed=1.0), TypeError),  # type: ignore[arg-type]
        (lambda: way.add(0, completed=True), TypeError),
        (lambda: way.set(0, completed="1"), TypeError),  # type: ignore[arg-type]
        (lambda: way.add(2, completed=1), IndexError),
        (lambda: way.add(-1, completed=1), IndexError),
        (lambda: way.add(True, completed=1), TypeError),
        (lambda: way.set(0, completed=1, errors=2**63), OverflowError),
        (lambda: way.set(0, errors=-(2**63) - 1), OverflowError),
    ]
    for call, error in bad_calls:
        with pytest.raises(error):
            call()
        assert way.snapshot() == before


@ways(cannot={"queue": NOT_REPORTED_BY_ADD})
def test_add_that_overflows_raises_and_leaves_row(way: MetricsBoard) -> None:
    way.set(1, completed=7, throughput=INT64_MAX)
    with pytest.raises(OverflowError):
        way.add(1, completed=1, throughput=1)  # refused whole: completed stays 7
    assert way.snapshot()[1] == {"completed": 7, "errors": 0, "throughput": INT64_MAX}


@ways(*OWNED_WAYS[:1])
def test_queue_overflow_is_reported_by_next_snapshot(way: MetricsBoard) -> None:
    way.set(1, throughput=INT64_MAX)
    way.add(1, completed=1, throughput=1)  # refused whole by the owner
    with pytest.raises(OverflowError):
        way.snapshot()
    assert way.snapshot()[1] == {"completed": 0, "errors": 0, "throughput": INT64_MAX}


@ways()
def test_bad_shape_is_refused(make: Callable[..., Any]) -> None:
    before = {process.pid for process in multiprocessing.active_children()}
    for args, error in [
        ((0,), ValueError),
        ((True,), ValueError),
        ((2, ()), ValueError),
        ((2, "abc"), ValueError),
        ((2, ("a", "a")), ValueError),
        ((2, ("a", "not a name")), ValueError),
    ]:
        with pytest.raises(error):
            make(*args)
    assert {process.pid for process in multiprocessing.active_children()} == before


# close() and the context-manager protocol.


@ways()
def test_closed_board_refuses_calls(way: MetricsBoard) -> None:
    way.add(0, completed=1)
    way.close()
    for call in (
        lambda: way.add(0, completed=1),
        lambda: way.set(0, completed=1),
        way.snapshot,
        way.totals,
    ):
        with pytest.raises(ValueError, match="closed"):
            call()
    way.close()


@ways()
def test_context_manager_closes(make: Callable[..., Any]) -> None:
    board = make()
    assert isinstance(board, MetricsBoard)
    with board as entered:
        assert entered is board
        board.add(1, errors=2)
        assert board.totals() == {"completed": 0, "errors": 2, "throughput": 0}
    with pytest.raises(ValueError):
        board.snapshot()


@ways()
def test_child_close_keeps_board_open(way: MetricsBoard, ctx: BaseContext) -> None:
    finish(start(ctx, add_many, way, 1, 2))  # add_many closes the child's handle
    way.add(0, completed=1)
    assert way.totals()["completed"] == 3


@ways(*OWNED_WAYS)
def test_creator_close_stops_owner(make: Callable[..., Any]) -> None:
    before = {process.pid for process in multiprocessing.active_children()}
    board = make()
    started = {process.pid for process in multiprocessing.active_children()} - before
    assert len(started) == 1
    board.close()
    assert not started & {process.pid for process in multiprocessing.active_children()}


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


def test_row_left_mid_update_times_out_until_reclaimed(ctx: BaseContext) -> None:
    with CtypesMetrics(2, sync="seqlock", ctx=ctx, timeout=0.3) as board:
        board.set(0, completed=1)
        board._cells[board._stride] += 1  # row 1's writer "died" between two writes
        start_time = time.monotonic()
        with pytest.raises(TimeoutError, match="row 1"):
            board.snapshot()
        assert 0.25 <= time.monotonic() - start_time < 10
        board.add(1, errors=1)  # the new writer's claim makes the row readable again
        assert board.snapshot()[1] == {"completed": 0, "errors": 1, "throughput": 0}


def test_lock_board_times_out_when_row_lock_is_held(ctx: BaseContext) -> None:
    with CtypesMetrics(2, sync="lock", ctx=ctx, timeout=0.2) as board:
        board._row_locks[1].acquire()
        try:
            with pytest.raises(TimeoutError):
                board.set(1, completed=1)
            with pytest.raises(TimeoutError):
                board.snapshot()
        finally:
            board._row_locks[1].release()
        assert board.totals()["completed"] == 0


def test_queue_snapshot_times_out_when_owner_is_dead(ctx: BaseContext) -> None:
    board = QueueMetrics(2, ctx=ctx, timeout=0.5)
    board._owner.kill()
    board._owner.join(JOIN)
    with pytest.raises(TimeoutError):
        board.snapshot()
    board.close()
    with pytest.raises(ValueError):
        board.snapshot()


@pytest.mark.parametrize("start_method", ["forkserver"])
def test_queue_owner_outlives_an_idle_second(ctx: BaseContext) -> None:
    # The owner checks every second that its creator lives; under forkserver
    # its parent is the fork server, which must not count as the creator dying
    # (the other start methods make the creator the parent: nothing to test).
    with QueueMetrics(1, ctx=ctx, timeout=5) as board:
        board.add(0, errors=1)
        board._owner.join(1.5)  # idle for longer than one check
        assert board._owner.is_alive()
        assert board.totals()["errors"] == 1


# The runnable example.


@pytest.mark.parametrize("way_name", ["ctypes", "queue", "manager"])
def test_python_m_shmref_metrics(way_name: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "shmref.metrics", way_name, "100"],
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
