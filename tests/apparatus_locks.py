"""Apparatus of the locks tests and of the examples on docs/locks.md.

Not part of :mod:`shmref.locks`: :class:`Occupancy` and :func:`occupy` prove
mutual exclusion by counting who is inside, :func:`outer_inner` is the
article's re-entry example and :func:`die_holding` a holder killed while it
holds the lock. Process targets are module-level, so that spawn and
forkserver children can import them (the docs build and pytest both put the
repository's root on ``sys.path``, and children inherit it).
"""

from __future__ import annotations

import ctypes
import os
import signal
from multiprocessing.context import BaseContext
from typing import Any

from shmref.lifecycle import DEFAULT_TIMEOUT, context
from shmref.locks import SyncPrimitive

__all__ = ["Occupancy", "die_holding", "occupy", "outer_inner"]


class Occupancy:
    """Counts the holders inside a critical section, and the most at once.

    Made to prove a lock or semaphore: every holder calls :meth:`visit`
    while it holds it, and :attr:`peak` is the most holders ever inside at
    once. A section meant for ``capacity`` holders must show a peak of
    exactly ``capacity``: to make "``capacity`` at once" observed rather than
    hoped for, a visitor waits (at most ``timeout``) until ``capacity``
    visitors are inside or all ``entries`` expected visits have begun. Then
    it stays ``window`` seconds more, time in which a broken lock would let
    one visitor too many in.
    """

    def __init__(
        self,
        capacity: int = 1,
        entries: int = 1,
        *,
        ctx: BaseContext | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        made = context(ctx)
        self.capacity, self.entries, self.timeout = capacity, entries, timeout
        self._changed = made.Condition(made.Lock())
        self._counts = made.RawArray(ctypes.c_int64, 3)  # inside, peak, entered

    @property
    def inside(self) -> int:
        return int(self._counts[0])

    @property
    def peak(self) -> int:
        return int(self._counts[1])

    @property
    def entered(self) -> int:
        return int(self._counts[2])

    def visit(self, window: float = 0.02) -> None:
        counts, changed = self._counts, self._changed
        if not changed.acquire(timeout=self.timeout):
            raise TimeoutError("Occupancy: its own lock was not acquired in time")
        try:
            counts[0] += 1
            counts[1] = max(counts[1], counts[0])
            counts[2] += 1
            changed.notify_all()
            company = changed.wait_for(
                lambda: counts[0] >= self.capacity or counts[2] >= self.entries, self.timeout
            )
            if not company:
                raise TimeoutError(f"fewer than {self.capacity} holders were ever inside at once")
            changed.wait_for(lambda: counts[0] > self.capacity, window)
            counts[0] -= 1
            changed.notify_all()
        finally:
            changed.release()

    def close(self) -> None:
        self._changed = self._counts = None


def occupy(
    lock: SyncPrimitive,
    occupancy: Occupancy,
    rounds: int = 1,
    depth: int = 1,
    start: Any = None,
) -> None:
    """Process target: ``rounds`` times, hold ``lock`` and visit ``occupancy``.

    With ``depth > 1`` the holder acquires ``lock`` that many times (an
    RLock's re-entry) before its visit. With a ``start`` barrier, all wait
    there first, so that they contend from the first round instead of
    arriving one by one as they start up. Closes both handles at the end.
    """
    if start is not None:
        start.wait(occupancy.timeout)
    for _ in range(rounds):
        for _ in range(depth):
            if not lock.acquire(timeout=occupancy.timeout):
                raise TimeoutError(f"{type(lock).__name__} not acquired in time")
        try:
            occupancy.visit()
        finally:
            for _ in range(depth):
                lock.release()
    lock.close()
    occupancy.close()


def outer_inner(lock: SyncPrimitive) -> str:
    """The article's re-entry example: ``outer`` holds the lock and calls ``inner``.

    With an RLock ``inner`` takes the lock again and runs; with a plain Lock
    it waits for itself: its ``with`` raises ``TimeoutError`` after the
    lock's timeout instead of hanging.
    """
    with lock:
        return _inner(lock)


def _inner(lock: SyncPrimitive) -> str:
    with lock:
        return "inner ran inside outer"


def die_holding(lock: SyncPrimitive) -> None:
    """Process target: acquire ``lock``, then die at once by SIGKILL, holding it.

    What a crash, the kernel's OOM killer or ``kill -9`` does to a holder:
    no ``finally``, no ``with`` exit, no release.
    """
    if not lock.acquire(timeout=DEFAULT_TIMEOUT):
        raise TimeoutError(f"{type(lock).__name__} not acquired in time")
    os.kill(os.getpid(), signal.SIGKILL)
