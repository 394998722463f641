"""The locks' ways, as the lifecycle contract suite (tests/test_lifecycle.py) needs them.

A way here is one primitive made one way, named as in tests/test_locks.py.
Unlike every other handle of shmref, a lock's ``with`` acquires and releases
it and does not close it (:data:`NOT_APPLICABLE`). The Queue ways' lock
lives in an owner process and the Manager ways' in a server, which can die;
the ctypes ways' in shared memory; the Redis ways' in a Redis server, as
tokens with a lease (:data:`LEASE` here), so that a holder that dies (the
creator included) gives the lock back when its lease ends: they are in
:data:`TAKES_OVER`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from shmref import locks
from shmref.holder import HELD
from tests.redis_server import home

#: Every way, by the name the contract suites give it.
WAYS: dict[str, Callable[..., Any]] = {
    "ctypes-lock": locks.CtypesLock,
    "ctypes-rlock": locks.CtypesRLock,
    "ctypes-sem": locks.CtypesSemaphore,
    "robust-lock": locks.RobustLock,
    "queue-lock": locks.QueueLock,
    "queue-rlock": locks.QueueRLock,
    "queue-sem": locks.QueueSemaphore,
    "manager-lock": locks.ManagerLock,
    "manager-rlock": locks.ManagerRLock,
    "manager-sem": locks.ManagerSemaphore,
    "redis-lock": locks.RedisLock,
    "redis-rlock": locks.RedisRLock,
    "redis-sem": locks.RedisSemaphore,
}

#: The Redis ways' lease in the suites: short, so that a dead holder's lock
#: is free again well within the waits of tests/test_lifecycle.py (a waiter
#: must wake within about a second plus its slack); long enough for this
#: process to renew it in time on a loaded machine.
LEASE = 2.0

#: Clauses of the lifecycle suite that mean something else for a lock.
NOT_APPLICABLE: dict[str, str] = {
    "with": "a lock's with acquires and releases it; only close() closes it",
}


def make(way: str, ctx: Any, timeout: float | None) -> Any:
    """A new handle of ``way`` under ``ctx``, whose ``with`` blocks wait ``timeout``."""
    lease = {"lease": LEASE} if way.startswith("redis") else {}
    return WAYS[way](**home(way, ctx), **lease, timeout=timeout)


#: Every public call, with valid arguments, in an order that works on an
#: open handle: no call waits on a lock this thread holds, and the last one
#: (which a Queue way's token, put back a moment after a release, may miss)
#: leaves the lock held or not.
CALLS: dict[str, Callable[[Any], object]] = {
    "acquire()": lambda lock: lock.acquire(),
    "release()": lambda lock: lock.release(),
    "__enter__()": lambda lock: lock.__enter__(),
    "__exit__()": lambda lock: lock.__exit__(None, None, None),
    "acquire(timeout=5)": lambda lock: lock.acquire(timeout=5),
    "release() again": lambda lock: lock.release(),
    "acquire(False)": lambda lock: lock.acquire(False),
}

#: Calls of :data:`CALLS` whose wait has no end (timeout=None), which the
#: stopped-owner clause leaves out: nothing tells a Queue way's owner that
#: is stopped from one that parks the acquire until the lock is free, so the
#: caller waits; a Manager way's wait is a round trip per slice, and one the
#: server leaves unanswered for the handle's timeout raises TimeoutError.
ENDLESS = ("acquire()",)

#: Calls with arguments every way refuses: a closed handle says "closed" first.
BAD_CALLS: dict[str, Callable[[Any], object]] = {
    "acquire(5)": lambda lock: lock.acquire(5),
    "acquire(timeout='1')": lambda lock: lock.acquire(timeout="1"),
    "acquire(timeout=True)": lambda lock: lock.acquire(timeout=True),
    "acquire(timeout=-1)": lambda lock: lock.acquire(timeout=-1),
    "acquire(timeout=nan)": lambda lock: lock.acquire(timeout=float("nan")),
    "acquire(False, 1.0)": lambda lock: lock.acquire(False, 1.0),
}


def _hold_until_closed(lock: Any, held: threading.Event) -> None:
    # A RobustLock is owned by a thread, which must outlive the handle's
    # close(): a thread that ends holding it hands it over (holder_died).
    # It unlocks through its own reference to the mutex, which close() drops.
    lock.acquire()
    mutex, pointer, unlock = lock._mutex, lock._pointer, lock._unlock
    held.set()
    while not lock._closed:
        time.sleep(0.01)
    unlock(pointer)
    HELD.pop(id(mutex), None)  # what release() would do
    del mutex


def stall(way: str, handle: Any) -> Callable[[], object] | None:
    """Make a call of ``handle`` block (until the handle is closed); return that call.

    The lock is taken first, as another holder would, and the call returned
    is ``acquire()``, which waits as long as it takes. Run it in another
    thread than this one: an RLock lets the thread that holds it back in.
    """
    if way == "robust-lock":
        held = threading.Event()
        threading.Thread(target=_hold_until_closed, args=(handle, held), daemon=True).start()
        if not held.wait(30):
            raise TimeoutError("the RobustLock holder thread did not acquire it")
    else:
        handle.acquire()
    return handle.acquire


#: Ways whose waiter takes the lock over when its holder, the creator, dies,
#: instead of raising: what a robust mutex is for (``holder_died`` is then
#: True). A Queue way's owner ends with its creator: its waiters get OwnerGone.
TAKES_OVER: dict[str, str] = {
    "robust-lock": "EOWNERDEAD hands the mutex to the next waiter",
    **{
        way: "the creator's lease runs out: the next waiter takes the lock"
        for way in ("redis-lock", "redis-rlock", "redis-sem")
    },
}


def hold_for_child(way: str, handle: Any) -> None:
    """Make :func:`wait_in_child` wait on the creator: the creator takes the lock."""
    handle.acquire()


def connect_in_child(handle: Any) -> None:
    """Before the creator can be killed, connect (a Manager proxy connects at its first call).

    A ManagerRLock's owner is the id of the server thread serving it: a
    waiter connecting after the creator died can be served by a new thread
    with the dead one's id, which then owns the creator's RLock (the flaw
    docs/locks.md describes), so its acquire returns at once.
    """
    assert handle.acquire(blocking=False) is False  # the creator holds it


def wait_in_child(handle: Any) -> object:
    """In another process: a call only the creator could end (by a release, or its close)."""
    return handle.acquire(timeout=None)
