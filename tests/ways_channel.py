"""The channel's ways, as the lifecycle contract suite (tests/test_lifecycle.py) needs them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shmref import channel
from tests.redis_server import home

#: Every way, by the name the contract suites give it.
WAYS: dict[str, Callable[..., Any]] = {
    "ctypes": channel.CtypesChannel,
    "queue": channel.QueueChannel,
    "manager": channel.ManagerChannel,
    "redis": channel.RedisChannel,
}


def make(way: str, ctx: Any, timeout: float | None) -> Any:
    """A new handle of ``way`` under ``ctx``, whose blocking calls wait ``timeout``."""
    return WAYS[way](capacity=4, max_size=64, **home(way, ctx), timeout=timeout)


#: Every public call, with valid arguments; in this order they all succeed on
#: a new handle (what the puts put, the gets get).
CALLS: dict[str, Callable[[Any], object]] = {
    "put": lambda c: c.put(b"x", timeout=10),
    "put_many": lambda c: c.put_many([b"y", b"z"], timeout=10),
    "get": lambda c: c.get(timeout=10),
    "get_many": lambda c: c.get_many(2, timeout=10),
}

#: Calls with arguments every way refuses: a closed handle says "closed" first.
BAD_CALLS: dict[str, Callable[[Any], object]] = {
    "put('text')": lambda c: c.put("text"),
    "put(b'x', timeout=True)": lambda c: c.put(b"x", timeout=True),
    "get(timeout=nan)": lambda c: c.get(timeout=float("nan")),
    "get_many(0)": lambda c: c.get_many(0),
}


#: Clauses a way cannot keep yet (strict xfail, with the reason).
CANNOT: dict[tuple[str, str], str] = {
    ("creator_killed_wakes", "redis"): (
        "a creator killed without close() leaves its keys on the server: the channel "
        "stays open, and a getter waits for a put"
    ),
}


def stall(way: str, handle: Any) -> Callable[[], object] | None:
    """Make a call of ``handle`` block (until the handle is closed); return that call.

    Every way: ``get()`` on the new, empty channel waits as long as it takes.
    """
    call: Callable[[], object] = handle.get
    return call


def hold_for_child(way: str, handle: Any) -> None:
    """Make :func:`wait_in_child` wait on the creator: nothing to do, the channel is empty."""


def wait_in_child(handle: Any) -> object:
    """In another process: a call only the creator could end (by a put, or its close)."""
    return handle.get(timeout=None)
