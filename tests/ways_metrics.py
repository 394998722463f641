"""The metrics board's ways, as the lifecycle contract suite (tests/test_lifecycle.py) needs."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from shmref import metrics
from tests.conftest import NOT_ROBUST

#: Every way, by the name the contract suites give it.
WAYS: dict[str, Callable[..., Any]] = {
    "ctypes": functools.partial(metrics.CtypesMetrics, sync="seqlock"),
    "ctypes-lock": functools.partial(metrics.CtypesMetrics, sync="lock"),
    "queue": metrics.QueueMetrics,
    "manager": metrics.ManagerMetrics,
}


def make(way: str, ctx: Any, timeout: float | None) -> Any:
    """A new handle of ``way`` under ``ctx``, whose blocking calls wait ``timeout``."""
    return WAYS[way](2, ctx=ctx, timeout=timeout)


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
CANNOT: dict[tuple[str, str], str] = {
    ("holder killed", "ctypes"): (
        "a writer killed mid-update leaves its row's sequence odd: readers time out "
        "instead of repairing it"
    ),
    ("holder killed", "ctypes-lock"): NOT_ROBUST,
}


def stall(way: str, handle: Any, hold: bool = True) -> Callable[[], object] | None:
    """Make a call of ``handle`` block (until the handle is closed); return that call.

    ``hold=False`` returns the call without making it block: for a process
    other than the one that called ``stall``.

    None for the Manager way: its server holds its lock for one row's update
    or copy, and nothing else waits.
    """
    if way == "ctypes":
        if hold:
            handle._cells[handle._stride] += 1  # row 1's writer "died" mid-update
        return handle.snapshot
    if way == "ctypes-lock":
        if hold:
            handle._row_locks[1].acquire()  # as if row 1's writer held it
        return handle.snapshot
    if way == "queue":
        handle._owner._reply_lock.acquire()  # as if another reader waited for a reply
        return handle.snapshot
    return None
