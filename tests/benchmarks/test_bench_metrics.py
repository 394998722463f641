"""Benchmarks of shmref.metrics: one worker update, one snapshot, torn rows.

``nox -s bench -- metrics`` measures and stores docs/bench/metrics.json; the
test suite runs each benchmark once, small (see timing.py). The report that
turns the stored run into tables and verdicts is docs/_ext/report_metrics.py;
the ``extra_info`` keys set here (way, processes, ops, torn, ...) are what it
reads.
"""

from __future__ import annotations

import ctypes
import multiprocessing
from collections.abc import Callable
from typing import Any

import pytest

from shmref.metrics import (
    CtypesMetrics,
    ManagerMetrics,
    QueueMetrics,
    UnsafeMetrics,
)
from tests.apparatus_metrics import equal_fields_writer

from .startup import time_startup
from .timing import BARRIER_TIMEOUT, WorkerGroup, size, time_groups

CTX = multiprocessing.get_context()

WAYS: dict[str, Callable[..., Any]] = {
    "ctypes": lambda workers: CtypesMetrics(workers, sync="seqlock", ctx=CTX),
    "ctypes-lock": lambda workers: CtypesMetrics(workers, sync="lock", ctx=CTX),
    "unsafe": lambda workers: UnsafeMetrics(workers, ctx=CTX),
    "queue": lambda workers: QueueMetrics(workers, ctx=CTX),
    "manager": lambda workers: ManagerMetrics(workers, ctx=CTX),
}
WORKERS = [1, 2, 4]

# Updates per worker in a round (roughly 0.05-0.5 s a round).
UPDATE_OPS = {
    "ctypes": 20_000,
    "ctypes-lock": 20_000,
    "unsafe": 20_000,
    "queue": 5_000,
    "manager": 500,
}
# Snapshots per round.
SNAPSHOT_OPS = {
    "ctypes": 5_000,
    "ctypes-lock": 5_000,
    "unsafe": 5_000,
    "queue": 500,
    "manager": 500,
}
# Snapshots per round while a writer updates its row as fast as it can, and
# the most updates it may make (a Queue's writer floods its owner).
BUSY_OPS = {
    "ctypes": (20_000, 10**8),
    "ctypes-lock": (20_000, 10**8),
    "unsafe": (20_000, 10**8),
    "queue": (200, 20_000),
    "manager": (1_000, 10**8),
}


@pytest.fixture
def board_for(request: pytest.FixtureRequest) -> Callable[[str, int], Any]:
    def make(way: str, workers: int) -> Any:
        board = WAYS[way](workers)
        request.addfinalizer(board.close)
        return board

    return make


def update_row(board: Any, worker: int, n: int, barrier: Any, timeout: float) -> None:
    """Process target: add 1 to each field of row ``worker``, ``n`` times."""
    barrier.wait(timeout)
    add = board.add
    for _ in range(n):
        add(worker, completed=1, errors=1, throughput=1)
    board.snapshot()  # the owner has applied every update of this process
    barrier.wait(timeout)
    board.close()


class RowWorkers(WorkerGroup):
    """A WorkerGroup whose process ``i`` writes row ``i``."""

    def __init__(self, board: Any, n: int, processes: int) -> None:
        self.barrier = CTX.Barrier(processes + 1)
        self.processes = [
            CTX.Process(target=update_row, args=(board, i, n, self.barrier, BARRIER_TIMEOUT))
            for i in range(processes)
        ]
        for p in self.processes:
            p.start()


@pytest.mark.parametrize("workers", WORKERS)
@pytest.mark.parametrize("way", list(WAYS))
def test_update(
    benchmark: Any, board_for: Callable[[str, int], Any], way: str, workers: int
) -> None:
    """P workers each update their own row N times; start-up is not timed."""
    board = board_for(way, workers)
    n = size(benchmark, UPDATE_OPS[way], 50)
    rounds = size(benchmark, 5, 1)
    benchmark.group = f"metrics-update-{workers}"
    benchmark.extra_info.update(way=way, ops=n * workers, processes=workers, per_worker=n)
    time_groups(benchmark, lambda: RowWorkers(board, n, workers), rounds=rounds)
    # One writer per row: not one update lost, whatever the way.
    expected = n * rounds
    rows = board.snapshot()
    lost = sum(3 * expected - sum(row.values()) for row in rows)
    benchmark.extra_info.update(lost=lost, attempted=3 * expected * workers)
    assert rows == [dict.fromkeys(board.fields, expected)] * workers


@pytest.mark.parametrize("workers", WORKERS)
@pytest.mark.parametrize("way", list(WAYS))
def test_snapshot(
    benchmark: Any, board_for: Callable[[str, int], Any], way: str, workers: int
) -> None:
    """snapshot() of a board of P rows, in one process, with no writer running."""
    board = board_for(way, workers)
    for worker in range(workers):
        board.set(worker, completed=worker, errors=1, throughput=100)
    ops = size(benchmark, SNAPSHOT_OPS[way], 20)
    benchmark.group = f"metrics-snapshot-{workers}"
    benchmark.extra_info.update(way=way, ops=ops, processes=1, rows=workers)

    def snapshots() -> None:
        snapshot = board.snapshot
        for _ in range(ops):
            snapshot()

    benchmark.pedantic(
        snapshots, rounds=size(benchmark, 15, 1), warmup_rounds=size(benchmark, 1, 0)
    )


@pytest.mark.parametrize("way", list(WAYS))
def test_snapshot_while_writing(
    benchmark: Any, board_for: Callable[[str, int], Any], way: str
) -> None:
    """M snapshots of a 2-row board while one writer sets every field of row 1.

    The writer keeps its fields equal; a row read with unequal fields is a
    torn row, read half-way through an update. The rows are checked after
    the round, outside the timing. ``written`` counts the writer's updates
    in the round (it stops moments after the monitor): how much the monitor
    held it back.
    """
    board = board_for(way, 2)
    ops, most = BUSY_OPS[way]
    ops = size(benchmark, ops, 20)
    stop = CTX.RawValue(ctypes.c_bool, False)
    benchmark.group = "metrics-snapshot-busy"
    taken: list[list[dict[str, int]]] = []
    torn: list[int] = []
    rows_read: list[int] = []
    seen: list[int] = []  # values of the writer's row seen: >1 means the two overlapped
    written: list[int] = []  # sets the writer made while the monitor read
    running: list[tuple[Any, Any]] = []

    def setup() -> tuple[tuple[()], dict[str, Any]]:
        stop.value = False
        barrier = CTX.Barrier(2)
        writer = CTX.Process(
            target=equal_fields_writer, args=(board, 1, most, stop, barrier, BARRIER_TIMEOUT)
        )
        writer.start()
        running.append((writer, barrier))
        barrier.wait(BARRIER_TIMEOUT)
        return (), {}

    def snapshots() -> None:
        snapshot = board.snapshot
        taken.extend(snapshot() for _ in range(ops))

    def teardown() -> None:
        writer, barrier = running.pop()
        stop.value = True
        barrier.wait(BARRIER_TIMEOUT)
        writer.join(BARRIER_TIMEOUT)
        written.append(board.snapshot()[1]["completed"])  # the writer's last i
        torn.append(sum(len(set(row.values())) > 1 for rows in taken for row in rows))
        rows_read.append(sum(len(rows) for rows in taken))
        seen.append(len({rows[1]["completed"] for rows in taken}))
        taken.clear()

    try:
        benchmark.pedantic(snapshots, setup=setup, teardown=teardown, rounds=size(benchmark, 5, 1))
    finally:
        # pytest-benchmark skips teardown when disabled: finish what is left.
        while running:
            teardown()
    benchmark.extra_info.update(
        way=way,
        ops=ops,
        processes=2,
        torn=torn,
        rows_read=rows_read,
        seen=seen,
        written=written,
    )
    if way != "unsafe":
        assert sum(torn) == 0


#: Rows of the boards whose start-up is timed, as many as the largest runs above.
STARTUP_WORKERS = max(WORKERS)


@pytest.mark.parametrize("way", ["ctypes", "ctypes-lock", "queue", "manager"])
def test_startup(benchmark: Any, way: str) -> None:
    """Create and close a board: the Queue's owner or the Manager's server starts."""
    time_startup(
        benchmark,
        "metrics-startup",
        way,
        lambda: WAYS[way](STARTUP_WORKERS),
        CTX.get_start_method(),
        rows=STARTUP_WORKERS,
    )
