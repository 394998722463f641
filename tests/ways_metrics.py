"""The metrics board's ways, as the lifecycle contract suite (tests/test_lifecycle.py) needs."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

from shmref import metrics
from shmref.holder import RecordedLock
from tests.redis_server import home

#: Every way, by the name the contract suites give it.
WAYS: dict[str, Callable[..., Any]] = {
    "ctypes": functools.partial(metrics.CtypesMetrics, sync="seqlock"),
    "ctypes-lock": functools.partial(metrics.CtypesMetrics, sync="lock"),
    "queue": metrics.QueueMetrics,
    "manager": metrics.ManagerMetrics,
    "redis": metrics.RedisMetrics,
}


def make(way: str, ctx: Any, timeout: float | None) -> Any:
    """A new handle of ``way`` under ``ctx``, whose blocking calls wait ``timeout``."""
    return WAYS[way](2, **home(way, ctx), timeout=timeout)


#: Every public call, with valid arguments.
CALLS: dict[str, Callable[[Any], object]] = {
    "add": lambda b: b.add(0, completed=1),
    "set": lambda b: b.set(1, errors=2, throughput=3),
    "snapshot": lambda b: b.snapshot(),
    "totals": lambda b: b.totals(),
}

#: Calls with arguments every way refuses: a closed handle says "closed" first.
BAD_CALLS: dict[str, Callable[[Any], object]] = {
    "add(0, typo=1)": lambda b: b.add(0, typo=1),
    "add(0, completed=1.0)": lambda b: b.add(0, completed=1.0),
    "add(True, completed=1)": lambda b: b.add(True, completed=1),
    "set(2, errors=1)": lambda b: b.set(2, errors=1),
    "set(0, errors=2**63)": lambda b: b.set(0, errors=2**63),
}


#: Clauses a way cannot keep: strict xfail at the parameter, with the reason.
#: "holder killed": a process killed while :func:`stall` makes it hold what a
#: call waits for; another process's call must then succeed (tests/test_faults.py).
CANNOT: dict[tuple[str, str], str] = {}


def stall(way: str, handle: Any, hold: bool = True) -> Callable[[], object] | None:
    """Make a call of ``handle`` block (until the handle is closed); return that call.

    ``hold=False`` returns the call without making it block: for a process
    other than the one that called ``stall``.

    None for the Manager way: its server holds its lock for one row's update
    or copy, and nothing else waits; nor for the Redis way, whose calls wait
    on nothing but their server.
    """
    if way == "ctypes":
        if hold:
            # Row 1's writer, this process (alive: readers wait), is mid-update.
            handle._writers[1] = os.getpid()
            handle._cells[handle._stride] += 1
        return handle.snapshot
    if way == "ctypes-lock":
        if hold:
            # As if row 1's writer, alive, held it.
            RecordedLock(handle._row_holders[1], None, "row lock").acquire()
        return handle.snapshot
    if way == "queue":
        handle._owner._connection().lock.acquire()  # as if another thread waited for a reply
        return handle.snapshot
    return None
