"""A metrics board: workers report progress, the main process watches.

Four workers run their tasks; after each task, a worker stores its three
figures (completed, errors, tasks per second) in its own row of the board,
in one ``set`` call. Meanwhile the main process reads the whole board again
and again until every worker has exited. Every tenth task fails, so after n
tasks a row must read errors == n // 10: a row read half-way through an
update (new ``completed``, old ``errors``) would break that.

The same monitor runs unchanged on the three ways of shmref.metrics.
"""

import multiprocessing
from multiprocessing import connection

from shmref.metrics import CtypesMetrics, ManagerMetrics, QueueMetrics, metrics_worker

WORKERS = 4
TASKS = 1_000


def watch(board, workers):
    """Read ``board`` until ``workers`` exit.

    Returns whether a read fell while work was in progress, and how many
    rows read mixed two updates.
    """
    running = [w.sentinel for w in workers]
    in_progress = False
    mixed = 0
    while running:
        rows = board.snapshot()
        done = 0
        for row in rows:
            tasks = row["completed"] + row["errors"]
            mixed += row["errors"] != tasks // 10
            done += tasks
        in_progress = in_progress or 0 < done < WORKERS * TASKS
        for exited in connection.wait(running, timeout=0.01):
            running.remove(exited)
    for w in workers:
        w.join()
    return in_progress, mixed


if __name__ == "__main__":
    ctx = multiprocessing.get_context("spawn")
    print(f"{WORKERS} workers x {TASKS} tasks, every tenth fails")
    for way in (CtypesMetrics, QueueMetrics, ManagerMetrics):
        with way(workers=WORKERS, ctx=ctx) as board:
            workers = [
                ctx.Process(target=metrics_worker, args=(board, i, TASKS)) for i in range(WORKERS)
            ]
            for w in workers:
                w.start()
            in_progress, mixed = watch(board, workers)
            totals = board.totals()
        print(f"{way.__name__}: completed {totals['completed']}, errors {totals['errors']}")
        print(f"  read while the workers ran: {'yes' if in_progress else 'no'}")
        print(f"  rows read with fields of two updates: {mixed}")
