"""A Semaphore(2): five processes, at most two inside at once.

Five children wait together at a barrier, then each enters the semaphore,
stays a moment and leaves. Inside, each one adds itself to a shared count of
the processes inside and records the largest count seen: the peak. A
semaphore that let a third process in would show a peak of 3.
"""

import ctypes
import multiprocessing
import operator
import time

from shmref.locks import CtypesSemaphore, ManagerSemaphore, QueueSemaphore
from shmref.value import CtypesValue

PROCESSES = 5
VALUE = 2
STAY = 0.15  # seconds inside: long enough for a second process to come in


def visit(pool, start, inside, peak, entered):
    """Process target: wait for the others, enter ``pool``, stay, leave."""
    start.wait()
    with pool:
        now = inside.update(operator.add, 1)
        peak.update(max, now)
        entered.update(operator.add, 1)
        time.sleep(STAY)
        inside.update(operator.sub, 1)
    for value in (inside, peak, entered):
        value.close()


if __name__ == "__main__":
    ctx = multiprocessing.get_context("spawn")
    print(f"{PROCESSES} processes, Semaphore({VALUE})")
    for way in (CtypesSemaphore, QueueSemaphore, ManagerSemaphore):
        pool = way(VALUE, ctx=ctx)
        inside, peak, entered = (CtypesValue(ctypes.c_int, 0, ctx=ctx) for _ in range(3))
        start = ctx.Barrier(PROCESSES)
        children = [
            ctx.Process(target=visit, args=(pool, start, inside, peak, entered))
            for _ in range(PROCESSES)
        ]
        for child in children:
            child.start()
        for child in children:
            child.join()
        print(f"{way.__name__}: {entered.get()} entered, at most {peak.get()} inside at once")
        for value in (inside, peak, entered):
            value.close()
        pool.close()
