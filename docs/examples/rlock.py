"""Re-entry: a function holding the lock calls another that takes it too.

``outer`` takes the lock and calls ``inner``, which takes the same lock
again before it adds one to a shared value. With an RLock the holder may
take it again (and must release it as many times), so two children each
run ``outer`` and the value ends at 2, with each of the three ways of
shmref.locks. With a plain Lock, ``inner`` waits for ``outer``, which waits
for ``inner``: a deadlock. shmref's ``with`` blocks wait at most the
lock's ``timeout``, so here the deadlock ends in a TimeoutError instead of
a hang.
"""

import ctypes
import multiprocessing
import operator

from shmref.locks import CtypesLock, CtypesRLock, ManagerRLock, QueueRLock
from shmref.value import CtypesValue


def outer(lock, value):
    """Process target: take ``lock``, then call ``inner``, which takes it again."""
    with lock:
        inner(lock, value)


def inner(lock, value):
    with lock:
        value.update(operator.add, 1)


if __name__ == "__main__":
    ctx = multiprocessing.get_context("spawn")
    # A lock's own ``with`` acquires it (as the standard library's does), so
    # the locks are closed by hand.
    for way in (CtypesRLock, QueueRLock, ManagerRLock):
        lock = way(ctx=ctx)
        with CtypesValue(ctypes.c_int, 0, ctx=ctx) as value:
            children = [ctx.Process(target=outer, args=(lock, value)) for _ in range(2)]
            for child in children:
                child.start()
            for child in children:
                child.join()
            exits = [child.exitcode for child in children]
            print(f"{way.__name__}: children's exit codes {exits}, value {value.get()}")
        lock.close()
    lock = CtypesLock(ctx=ctx, timeout=0.2)
    with CtypesValue(ctypes.c_int, 0, ctx=ctx) as value:
        try:
            outer(lock, value)
        except TimeoutError as error:
            print(f"CtypesLock: {error}")
    lock.close()
