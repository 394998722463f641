"""Functions the value tests hand to ``update``: the owner or server imports them from here."""

from __future__ import annotations

import time
from typing import Any

#: Seconds a function waits for the test to release it; pytest-timeout is the backstop.
WAIT = 60.0


def wait_then_add(current: int, n: int, entered: Any, release: Any) -> int:
    """``current + n``, once ``release`` is set; sets ``entered`` first.

    The events are Manager events, which the owner process or server can use:
    the test knows that fn is running, and decides when it returns.
    """
    entered.set()
    if not release.wait(WAIT):
        raise TimeoutError("the test never released fn")
    return current + n


def exit_in_fn(current: Any) -> Any:
    raise SystemExit(3)


class Unpicklable(Exception):
    """An exception whose copy cannot be made: unpickling calls ``__init__`` with one argument."""

    def __init__(self, what: str, detail: str) -> None:
        super().__init__(what)
        self.detail = detail


def raise_unpicklable(current: Any) -> Any:
    raise Unpicklable("no copy", "of this")


def sleep_for_ever(current: Any) -> Any:
    """An update that never returns (its thread or process is stopped by ``close()``)."""
    while True:
        time.sleep(3600)
