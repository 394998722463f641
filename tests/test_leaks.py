"""The leak check itself (tests/leaks.py): what it reports, and what it lets go.

It looks for new children, threads and /dev/shm entries first, and collects
garbage only when it finds one: these tests hold it to the same verdicts as
a check that always collected.
"""

from __future__ import annotations

import multiprocessing
import time
import weakref
from multiprocessing import shared_memory

from tests.leaks import leaks_since, snapshot


def _discard(segment: shared_memory.SharedMemory) -> None:
    segment.close()
    segment.unlink()


def test_a_segment_left_behind_is_reported() -> None:
    before = snapshot()
    segment = shared_memory.SharedMemory(create=True, size=4096)
    try:
        assert leaks_since(before) == [f"/dev/shm/{segment.name.lstrip('/')}"]
    finally:
        _discard(segment)
    assert leaks_since(before) == []


def test_a_child_left_running_is_reported_and_stopped() -> None:
    before = snapshot()
    child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(60,))
    child.start()
    leaked = leaks_since(before)
    assert leaked == [f"child process {child.name!r} (pid {child.pid}) still alive"]
    assert not child.is_alive()


class _Cycle:
    """An object that only the garbage collector frees (it refers to itself)."""

    def __init__(self) -> None:
        self.itself = self
        segment = shared_memory.SharedMemory(create=True, size=4096)
        self.segment = segment
        weakref.finalize(self, _discard, segment)


def test_what_the_collector_frees_is_not_a_leak() -> None:
    before = snapshot()
    _Cycle()  # its segment goes only when a collection finds the cycle
    assert leaks_since(before) == []
