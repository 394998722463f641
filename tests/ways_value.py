"""The value's ways, as the lifecycle contract suite (tests/test_lifecycle.py) needs them."""

from __future__ import annotations

import ctypes
import operator
import os
from collections.abc import Callable
from typing import Any

from shmref import value
from tests.apparatus_value import sleep_for_ever
from tests.redis_server import home

#: Every way, by the name the contract suites give it.
WAYS: dict[str, Callable[..., Any]] = {
    "ctypes": value.CtypesValue,
    "queue": value.QueueValue,
    "manager": value.ManagerValue,
    "redis": value.RedisValue,
}


def make(way: str, ctx: Any, timeout: float | None) -> Any:
    """A new handle of ``way`` under ``ctx``, whose blocking calls wait ``timeout``."""
    return WAYS[way](ctypes.c_longlong, **home(way, ctx), timeout=timeout)


#: Every public call, with valid arguments.
CALLS: dict[str, Callable[[Any], object]] = {
    "get": lambda v: v.get(),
    "set": lambda v: v.set(1),
    "update": lambda v: v.update(operator.add, 1),
}

#: Calls with arguments every way refuses: a closed handle says "closed" first.
BAD_CALLS: dict[str, Callable[[Any], object]] = {
    "set('x')": lambda v: v.set("x"),
    "set(True)": lambda v: v.set(True),
    "set(2**63)": lambda v: v.set(2**63),
    "update(3)": lambda v: v.update(3),
}


def stall(way: str, handle: Any, hold: bool = True) -> Callable[[], object] | None:
    """Make a call of ``handle`` block (until the handle is closed); return that call.

    ``hold=False`` returns the call without making it block: for a process
    other than the one that called ``stall``.

    None for ``RedisValue``: it waits on nothing but its server (``update``
    runs ``fn`` in the caller, holding nothing).
    """
    if way == "ctypes":
        if hold:
            handle._lock.acquire()  # as if another, live, process held it
            handle._record[0] = os.getpid()
        return lambda: handle.set(handle.get())
    if way == "queue":
        handle._owner._connection().lock.acquire()  # as if another thread waited for a reply
        return handle.get
    if way == "redis":
        return None
    # The server runs fn in the thread serving this connection: the call
    # returns when close() stops the server.
    return lambda: handle.update(sleep_for_ever)
