"""The fix: make the read-add-write one step, or give each writer its own slot.

The same two processes as in race.py, with two counters that lose nothing:

* CtypesCounter holds a lock across the read, the add and the write;
* SlotCounter takes no lock at all: each process writes only its own slot
  of a shared array, so no two writers ever touch the same memory, and
  get() sums the slots.
"""

import multiprocessing

from shmref.counter import CtypesCounter, SlotCounter, add_worker

PROCESSES = 2
ADDS = 200_000


def total(way, ctx):
    """Run the writers on a fresh counter of ``way``; return its total."""
    with way(ctx=ctx) as counter:
        start = ctx.Barrier(PROCESSES)
        workers = [
            ctx.Process(target=add_worker, args=(counter, ADDS, start)) for _ in range(PROCESSES)
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return counter.get()


if __name__ == "__main__":
    ctx = multiprocessing.get_context("spawn")
    print(f"{PROCESSES} processes x {ADDS} adds, expected total {PROCESSES * ADDS}")
    for way in (CtypesCounter, SlotCounter):
        print(f"{way.__name__}: {total(way, ctx)}")
