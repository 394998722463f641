"""The race: two processes add to one shared total without holding a lock.

UnsafeCounter.add does what most first attempts do, ``value.value =
value.value + 1``. The Value takes its lock for the read and again for the
write, but not across the pair: two processes read the same total, both
write total + 1, and one of the two adds is gone. A run is repeated (five
runs at most) if its two processes happen not to overlap, as can happen on
a busy machine.
"""

import multiprocessing

from shmref.counter import UnsafeCounter, add_worker

PROCESSES = 2
ADDS = 200_000


def run_loses_updates(ctx):
    """Start the writers together; True if the total ends short."""
    with UnsafeCounter(ctx=ctx) as counter:
        start = ctx.Barrier(PROCESSES)
        workers = [
            ctx.Process(target=add_worker, args=(counter, ADDS, start)) for _ in range(PROCESSES)
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return counter.get() < PROCESSES * ADDS


if __name__ == "__main__":
    ctx = multiprocessing.get_context("spawn")
    print(f"{PROCESSES} processes x {ADDS} adds, expected total {PROCESSES * ADDS}")
    lost = any(run_loses_updates(ctx) for _ in range(5))
    print("lost updates:", "yes" if lost else "no")
