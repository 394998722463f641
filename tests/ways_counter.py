"""The counter's ways, as the lifecycle contract suite (tests/test_lifecycle.py) needs them."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from shmref import counter
from tests.redis_server import home

#: Every way, by the name the contract suites give it.
WAYS: dict[str, Callable[..., Any]] = {
    "ctypes": counter.CtypesCounter,
    "slot": counter.SlotCounter,
    "queue": counter.QueueCounter,
    "manager": counter.ManagerCounter,
    "redis": counter.RedisCounter,
}


def make(way: str, ctx: Any, timeout: float | None) -> Any:
    """A new handle of ``way`` under ``ctx``, whose blocking calls wait ``timeout``."""
    return WAYS[way](**home(way, ctx), timeout=timeout)


#: Every public call, with valid arguments.
CALLS: dict[str, Callable[[Any], object]] = {
    "add": lambda c: c.add(1),
    "get": lambda c: c.get(),
}

#: Calls with arguments every way refuses: a closed handle says "closed" first.
BAD_CALLS: dict[str, Callable[[Any], object]] = {
    "add('x')": lambda c: c.add("x"),
    "add(True)": lambda c: c.add(True),
}


def stall(way: str, handle: Any, hold: bool = True) -> Callable[[], object] | None:
    """Make a call of ``handle`` block (until the handle is closed); return that call.

    ``hold=False`` returns the call without making it block: for a process
    other than the one that called ``stall``.

    None where no call of the way can block (``SlotCounter.add`` takes no lock
    once its slot is claimed, ``ManagerCounter`` and ``RedisCounter`` wait on
    nothing but their server).
    """
    if way == "ctypes":
        if hold:
            handle._lock.acquire()  # as if another, live, process held it
            handle._record[0] = os.getpid()
        return handle.add
    if way == "queue":
        handle._owner._connection().lock.acquire()  # as if another thread waited for a reply
        return handle.get
    return None
