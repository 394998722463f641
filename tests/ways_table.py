"""The table's ways, as the lifecycle contract suite (tests/test_lifecycle.py) needs them."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from shmref import table
from shmref.holder import RecordedLock
from tests.redis_server import home

#: Every way, by the name the contract suites give it.
WAYS: dict[str, Callable[..., Any]] = {
    "ctypes": table.CtypesDict,
    "queue": table.QueueDict,
    "manager": table.ManagerDict,
    "redis": table.RedisDict,
}


def make(way: str, ctx: Any, timeout: float | None) -> Any:
    """A new handle of ``way`` under ``ctx``, whose blocking calls wait ``timeout``."""
    return WAYS[way](capacity=8, key_size=8, value_size=16, **home(way, ctx), timeout=timeout)


def _lookup(t: Any) -> object:
    with contextlib.suppress(KeyError):  # absent: the answer, not an error
        return t["a"]
    return None


def _delete(t: Any) -> None:
    with contextlib.suppress(KeyError):
        del t["a"]


#: Every public call, with valid arguments (each one's own method is called first).
CALLS: dict[str, Callable[[Any], object]] = {
    "get": lambda t: t.get("a"),
    "get(default)": lambda t: t.get("a", 0),
    "[]": _lookup,
    "[]=": lambda t: t.__setitem__("a", 1),
    "del": _delete,
    "in": lambda t: "a" in t,
    "len": lambda t: len(t),
    "keys": lambda t: t.keys(),
    "items": lambda t: t.items(),
    "pop": lambda t: t.pop("a", None),
    "update": lambda t: t.update("a", table.increment, 0),
    "snapshot": lambda t: t.snapshot(),
}

#: Calls with arguments every way refuses: a closed handle says "closed" first.
BAD_CALLS: dict[str, Callable[[Any], object]] = {
    "get(1)": lambda t: t.get(1),
    "[1]": lambda t: t[1],
    "['a'] = None": lambda t: t.__setitem__("a", None),
    "['k' * 9] = 1": lambda t: t.__setitem__("k" * 9, 1),
    "del [None]": lambda t: t.__delitem__(None),
    "1 in": lambda t: 1 in t,
    "pop(1)": lambda t: t.pop(1),
    "update(1, increment, 0)": lambda t: t.update(1, table.increment, 0),
    "update('a', 5, 0)": lambda t: t.update("a", 5, 0),
}


#: Clauses a way cannot keep: strict xfail at the parameter, with the reason.
#: "holder killed": a process killed while :func:`stall` makes it hold what a
#: call waits for; another process's call must then succeed (tests/test_faults.py).
CANNOT: dict[tuple[str, str], str] = {}


def stall(way: str, handle: Any, hold: bool = True) -> Callable[[], object] | None:
    """Make a call of ``handle`` block (until the handle is closed); return that call.

    ``hold=False`` returns the call without making it block: for a process
    other than the one that called ``stall``.

    None for the Manager way: its one wait is in the server (for the table's
    lock, behind a long ``fn``), which only another caller's thread can hold;
    and for the Redis way, which waits on nothing but its server.
    """
    if way == "ctypes":
        if hold:
            # As if a writer in another process, alive, held it.
            RecordedLock(handle._holder, None, "table lock").acquire()
        return lambda: handle.__setitem__("a", 1)
    if way == "queue":
        handle._owner._connection().lock.acquire()  # as if another thread waited for a reply
        return handle.snapshot
    return None
