"""What the metrics tests and benchmarks run besides the board: a writer and the demo.

:func:`equal_fields_writer` keeps every field of its row equal, so that a
row whose fields differ is a row read half-way through a ``set``.

``python -m tests.apparatus_metrics [ctypes|queue|manager] [TASKS]`` runs
the example of docs/metrics.md as a program: four workers under spawn and
the monitor loop printing their totals as they come.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Callable
from typing import Any

from shmref.metrics import (
    CtypesMetrics,
    ManagerMetrics,
    MetricsBoard,
    QueueMetrics,
    metrics_worker,
    monitor,
)


def equal_fields_writer(
    board: MetricsBoard,
    worker: int,
    n: int,
    stop: Any = None,
    barrier: Any = None,
    timeout: float = 60.0,
    every: int = 0,
) -> None:
    """Process target: ``n`` times, set every field of the row to ``i``.

    Stops early once ``stop.value`` is true (a shared ``c_bool``); with a
    ``barrier``, waits on it before the first ``set`` and after the last.
    With ``every=k``, takes a snapshot after every ``k`` sets: a Queue's
    writer then never gets more than ``k`` messages ahead of the owner
    (without it, it floods the owner, and a reader's snapshot waits behind
    the flood). Closes the process's handle at the end.
    """
    if barrier is not None:
        barrier.wait(timeout)
    fields, set_row = board.fields, board.set
    for i in range(1, n + 1):
        set_row(worker, **dict.fromkeys(fields, i))
        if stop is not None and stop.value:
            break
        if every and i % every == 0:
            board.snapshot()
    if barrier is not None:
        board.snapshot()  # the owner has applied every update of this process
        barrier.wait(timeout)
    board.close()


WAYS: dict[str, Callable[..., MetricsBoard]] = {
    "ctypes": CtypesMetrics,
    "queue": QueueMetrics,
    "manager": ManagerMetrics,
}


def main(argv: list[str]) -> int:
    """``python -m tests.apparatus_metrics [ctypes|queue|manager] [TASKS]``."""
    way = argv[0] if argv else "ctypes"
    tasks = int(argv[1]) if len(argv) > 1 else 10_000
    if way not in WAYS:
        print(
            f"usage: python -m tests.apparatus_metrics [{'|'.join(WAYS)}] [TASKS]",
            file=sys.stderr,
        )
        return 2
    ctx = multiprocessing.get_context("spawn")
    with WAYS[way](workers=4, ctx=ctx) as board:
        workers = [
            ctx.Process(target=metrics_worker, args=(board, worker, tasks)) for worker in range(4)
        ]
        for process in workers:
            process.start()
        monitor(board, workers)
        for number, row in enumerate(board.snapshot()):
            print(f"worker {number}: {row}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
