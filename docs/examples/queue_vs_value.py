"""Queue against shared memory: one process sets a shared value many times.

A child process calls ``value.set(i)`` 1,000 times on each way of
shmref.value (ctypes shared memory, an owner process fed by messages, a
Manager server), five rounds, and reports its fastest round: the work
alone, timed inside the child. The article's benchmark starts its clock
before ``start()`` and stops it after ``join()``, so it also times a process
start-up, which under spawn outweighs the work: the last line says whether
it is most of that clock.

The printed lines compare, they do not time: ``--times`` adds the figures
measured on this machine.
"""

import ctypes
import multiprocessing
import sys
import time

from shmref.value import CtypesValue, ManagerValue, QueueValue

SETS = 1_000
ROUNDS = 5


def set_many(value, sets, rounds, best):
    """Process target: ``value.set(i)`` ``sets`` times, ``rounds`` times over.

    Stores the fastest round's seconds per set in ``best``. Each round ends
    with a ``get``, which returns once every set has been applied (a
    QueueValue's ``set`` returns before its owner has applied it).
    """
    fastest = float("inf")
    for _ in range(rounds):
        began = time.perf_counter()
        for i in range(sets):
            value.set(i)
        value.get()
        fastest = min(fastest, time.perf_counter() - began)
    best.set(fastest / sets)
    value.close()
    best.close()


def measure(way, ctx):
    """Run the child on a fresh value of ``way``.

    Returns the last value, the child's best seconds per set and the
    seconds from ``start()`` to ``join()`` (the article's clock).
    """
    with way(ctypes.c_int, 0, ctx=ctx) as value, CtypesValue(ctypes.c_double, ctx=ctx) as best:
        child = ctx.Process(target=set_many, args=(value, SETS, ROUNDS, best))
        began = time.perf_counter()
        child.start()
        child.join()
        clock = time.perf_counter() - began
        return value.get(), best.get(), clock


if __name__ == "__main__":
    ctx = multiprocessing.get_context("spawn")
    ways = (CtypesValue, QueueValue, ManagerValue)
    print(f"{SETS} sets from a child process, fastest of {ROUNDS} rounds:")
    results = {}
    for way in ways:
        last, per_set, clock = measure(way, ctx)
        results[way.__name__] = (per_set, clock)
        print(f"{way.__name__}: last value {last}")
    shared, shared_clock = results["CtypesValue"]
    slower = ", ".join(
        f"{name} {'yes' if results[name][0] > shared else 'no'}"
        for name in ("QueueValue", "ManagerValue")
    )
    print(f"slower per set than CtypesValue: {slower}")
    # The child's sets take at least ROUNDS * SETS * shared seconds: the rest
    # of the clock is the process starting and exiting.
    start_up = 1 - ROUNDS * SETS * shared / shared_clock
    print(
        "the article's clock (start() to join()) on CtypesValue, over 90% start-up and exit:",
        "yes" if start_up > 0.9 else "no",
    )
    if "--times" in sys.argv[1:]:
        for name, (per_set, clock) in results.items():
            print(
                f"  {name}: {per_set * 1e6:.2f} us per set ({per_set / shared:.0f}x CtypesValue),"
                f" start() to join() {clock * 1e3:.0f} ms"
            )
