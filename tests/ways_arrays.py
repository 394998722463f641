"""The arrays' ways, as the lifecycle contract suite (tests/test_lifecycle.py) needs them."""

from __future__ import annotations

import array
import contextlib
import functools
from collections.abc import Callable
from typing import Any

from shmref import arrays
from tests.redis_server import home

#: Every way, by the name the contract suites give it (as in tests/test_arrays.py).
WAYS: dict[str, Callable[..., Any]] = {
    "ctypes": functools.partial(arrays.CtypesArray, segment=False),
    "segment": functools.partial(arrays.CtypesArray, segment=True),
    "queue": arrays.QueueArray,
    "manager": arrays.ManagerArray,
    "redis": arrays.RedisArray,
}

#: Items of every handle made here.
N = 4


def make(way: str, ctx: Any, timeout: float | None) -> Any:
    """A new handle of ``way`` under ``ctx``, whose blocking calls wait ``timeout``."""
    return WAYS[way]("q", N, **home(way, ctx), timeout=timeout)


def _as_numpy(shared: Any) -> object:
    # Only CtypesArray has a view; the others refuse with NotImplementedError,
    # and a closed handle of any way with the closed error. The view is
    # dropped at once, so that close() has none to refuse for.
    with contextlib.suppress(NotImplementedError, ModuleNotFoundError):
        shared.as_numpy()
    return None


def _ctypes_only(shared: Any) -> object:
    # get_lock() and name are CtypesArray's own; the other ways, which have
    # neither, read typecode, so that the call still meets the handle.
    if isinstance(shared, arrays.CtypesArray):
        return shared.get_lock(), shared.name
    return shared.typecode


#: Every public call, with valid arguments.
CALLS: dict[str, Callable[[Any], object]] = {
    "a[0]": lambda a: a[0],
    "a[1:3]": lambda a: a[1:3],
    "a[0] = 1": lambda a: a.__setitem__(0, 1),
    "a[::2] = [1, 2]": lambda a: a.__setitem__(slice(None, None, 2), [1, 2]),
    "read()": lambda a: a.read(),
    "readinto()": lambda a: a.readinto(array.array("q", bytes(8 * N))),
    "write()": lambda a: a.write(range(N)),
    "list(a)": lambda a: list(a),
    "len(a)": lambda a: len(a),
    "typecode": lambda a: a.typecode,
    "as_numpy()": _as_numpy,
    "get_lock(), name": _ctypes_only,
}

#: Calls with arguments every way refuses: a closed handle says "closed" first.
BAD_CALLS: dict[str, Callable[[Any], object]] = {
    "a[0] = True": lambda a: a.__setitem__(0, True),
    "a[0] = '1'": lambda a: a.__setitem__(0, "1"),
    "a[0] = 2**63": lambda a: a.__setitem__(0, 2**63),
    "a[N]": lambda a: a[N],
    "a['0']": lambda a: a["0"],
    "a[::0]": lambda a: a[::0],
    "a[0:2] = [1]": lambda a: a.__setitem__(slice(0, 2), [1]),
    "write([1])": lambda a: a.write([1]),
    "readinto(bytes)": lambda a: a.readinto(bytes(8 * N)),
}


#: Clauses a way cannot keep: strict xfail at the parameter, with the reason.
#: "holder killed": a process killed while :func:`stall` makes it hold what a
#: call waits for; another process's call must then succeed (tests/test_faults.py).
CANNOT: dict[tuple[str, str], str] = {}


def stall(way: str, handle: Any, hold: bool = True) -> Callable[[], object] | None:
    """Make a call of ``handle`` block (until the handle is closed); return that call.

    ``hold=False`` returns the call without making it block: for a process
    other than the one that called ``stall``.

    None for ``ManagerArray``: the server holds its lock only for a copy, so
    no call of it waits on anything a test can hold; nor for ``RedisArray``,
    whose calls wait on nothing but their server.
    """
    read: Callable[[], object] = handle.read
    if way in ("ctypes", "segment"):
        if hold:
            handle.get_lock().acquire()  # as if another process held it
        return read
    if way == "queue":
        handle._link._connection().lock.acquire()  # as if another thread waited for a reply
        return read
    return None
