"""The libraries people pick instead of shmref, behind the calls its benchmarks make.

Each adapter wraps one peer (``pip install shmref[peers]``) in the few
calls that shmref's own benchmark workers make (``put``/``get`` for a
channel, ``add``/``get`` for a counter, ``write``/``readinto`` for an
array, ``with`` for a lock), so a peer does the same work, in the same
loops, as shmref's ways, and nothing here is shmref's code. An adapter adds
what a user of the peer would write anyway (a name to attach by, a view
kept open) and no more. A missing peer skips its benchmarks with the line
that installs it (:func:`need`); the rest of the run goes on. Every
benchmark of a peer stores the peer's installed version in its
``extra_info`` (:func:`describe`), which is where the pages read it from.

The adapters follow the benchmarks' default start method (fork on Linux up
to Python 3.13): faster-fifo's queue cannot be pickled, and no adapter is
meant for spawn. UltraDict is not here: importing it changes the whole
process (see peers_table.py).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import multiprocessing
import os
import secrets
from collections.abc import Iterable
from types import ModuleType
from typing import Any

import pytest

#: Peer -> (module to import, distribution on PyPI). The keys are the
#: ``peer`` values the benchmarks store and the reports read.
PEERS = {
    "faster-fifo": ("faster_fifo", "faster-fifo"),
    "ultradict": ("UltraDict", "ultradict"),
    "shared-memory-dict": ("shared_memory_dict", "shared-memory-dict"),
    "atomics": ("atomics", "atomics"),
    "sharedarray": ("SharedArray", "SharedArray"),
    "posix-ipc": ("posix_ipc", "posix-ipc"),
}


def install_line(peer: str) -> str:
    """What a skipped peer's benchmark says."""
    return f"{peer} is not installed: pip install shmref[peers] (or pip install {PEERS[peer][1]})"


def installed(peer: str) -> bool:
    """Whether ``peer`` can be imported, without importing it (UltraDict must not be)."""
    return importlib.util.find_spec(PEERS[peer][0]) is not None


def need(peer: str) -> ModuleType:
    """``peer``'s module, or skip the calling benchmark with the line that installs it."""
    if not installed(peer):
        pytest.skip(install_line(peer))
    return importlib.import_module(PEERS[peer][0])


def version(peer: str) -> str:
    """The installed version of ``peer``'s distribution."""
    return importlib.metadata.version(PEERS[peer][1])


def describe(benchmark: Any, peer: str) -> None:
    """Marks ``benchmark``'s stored row as a peer's, with the version it measured."""
    if not installed(peer):
        pytest.skip(install_line(peer))
    benchmark.extra_info.update(peer=peer, version=version(peer))


def _owner_name(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{secrets.token_hex(4)}"


# ---------------------------------------------------------------- channel


def _as_is(message: bytes) -> bytes:
    return message


#: faster-fifo bounds its buffer in bytes, not messages; each message also
#: takes a length header of a few bytes, which this covers.
FIFO_HEADER = 64


class FasterFifoChannel:
    """faster-fifo's ``Queue``, bounded to hold ``capacity`` messages of ``max_size``.

    ``pickled=False`` passes bytes through unchanged (``dumps`` returns the
    message, ``loads`` copies it to ``bytes``, as shmref's ``get`` returns
    them); ``pickled=True`` is faster-fifo's default, every message pickled.
    The receive buffer is made large enough before any process starts:
    faster-fifo grows it on demand in each process, and with two consumers
    a blocking ``get`` can raise ``queue.Empty`` at once when a message is
    larger than it (TOOLCHAIN.md).
    """

    def __init__(self, capacity: int, max_size: int, *, pickled: bool) -> None:
        faster_fifo = need("faster-fifo")
        room = capacity * (max_size + FIFO_HEADER)
        codec = {} if pickled else {"loads": bytes, "dumps": _as_is}
        self.queue = faster_fifo.Queue(max_size_bytes=room, **codec)
        self.queue.reallocate_msg_buffer(room)

    @staticmethod
    def _seconds(timeout: float | None) -> float:
        # faster-fifo takes a number only; None means "wait as long as it takes".
        return 365 * 86400.0 if timeout is None else timeout

    def put(self, message: bytes, timeout: float | None = None) -> None:
        self.queue.put(message, timeout=self._seconds(timeout))

    def put_many(self, messages: Iterable[bytes], timeout: float | None = None) -> None:
        self.queue.put_many(list(messages), timeout=self._seconds(timeout))

    def get(self, timeout: float | None = None) -> bytes:
        return self.queue.get(timeout=self._seconds(timeout))  # type: ignore[no-any-return]

    def get_many(self, n: int, timeout: float | None = None) -> list[bytes]:
        return self.queue.get_many(  # type: ignore[no-any-return]
            timeout=self._seconds(timeout), max_messages_to_get=n
        )

    def close(self) -> None:
        # faster-fifo's close() closes the queue for every process; its
        # memory goes with the last process's reference instead.
        pass


# ---------------------------------------------------------------- counter


class AtomicsCounter:
    """A 64-bit integer in a ``RawArray``, added to with atomics' lock-free ``add``.

    Each process opens its own atomic view of the shared word on its first
    call and keeps it until ``close()``, as a user of atomics would.
    """

    def __init__(self, ctx: Any = None) -> None:
        self._atomics = need("atomics")
        ctx = ctx or multiprocessing.get_context()
        self._word = ctx.RawArray("q", 1)
        self._view: tuple[int, Any, Any] | None = None

    def _atomic(self) -> Any:
        if self._view is None or self._view[0] != os.getpid():
            context = self._atomics.atomicview(
                buffer=memoryview(self._word).cast("B"), atype=self._atomics.INT
            )
            self._view = (os.getpid(), context, context.__enter__())
        return self._view[2]

    @property
    def add(self) -> Any:
        """atomics' own ``inc``, bound: ``add()`` adds one (the benchmarks' only call)."""
        return self._atomic().inc

    def get(self) -> int:
        return int(self._atomic().load())

    def close(self) -> None:
        if self._view is not None and self._view[0] == os.getpid():
            self._view[1].__exit__(None, None, None)
        self._view = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_view": None}


# ---------------------------------------------------------------- array


class _NumpyTransfer:
    """The calls of a round trip on a numpy array in shared memory: copies, no lock.

    Unlike ``CtypesArray.write``/``readinto``, nothing stops a reader from
    seeing half of a concurrent write; the round trip never overlaps them.
    """

    array: Any

    def __len__(self) -> int:
        return len(self.array)

    def write(self, values: Any) -> None:
        self.array[:] = values

    def readinto(self, out: Any) -> None:
        out[:] = self.array

    def read(self) -> Any:
        return self.array.copy()


class SharedArrayTransfer(_NumpyTransfer):
    """SharedArray's ``create``/``attach``: a numpy array in a named POSIX segment."""

    def __init__(self, n: int) -> None:
        self._sa = need("sharedarray")
        self.name = "shm://" + _owner_name("shmref-bench")
        self.array = self._sa.create(self.name, n, dtype="float64")
        self._creator = os.getpid()

    def close(self) -> None:
        if os.getpid() == self._creator:
            self._sa.delete(self.name)
        self.array = None


class SharedMemoryTransfer(_NumpyTransfer):
    """``multiprocessing.shared_memory`` with a numpy view: what people write by hand."""

    def __init__(self, n: int) -> None:
        from multiprocessing.shared_memory import SharedMemory

        import numpy as np

        self._segment = SharedMemory(create=True, size=8 * n)
        self.array = np.ndarray((n,), dtype=np.float64, buffer=self._segment.buf)
        self._creator = os.getpid()

    def close(self) -> None:
        self.array = None  # the view goes before the segment
        self._segment.close()
        if os.getpid() == self._creator:
            self._segment.unlink()


# ---------------------------------------------------------------- locks


def posix_semaphore(value: int = 1) -> Any:
    """A new named POSIX semaphore from posix_ipc, as people use it: a lock at ``value=1``.

    The object itself, so that ``with`` and ``acquire``/``release`` are its
    own C calls. Its ``close()`` closes one process's handle; the creator
    also calls ``unlink()`` to remove the name.
    """
    posix_ipc = need("posix-ipc")
    name = "/" + _owner_name("shmref-bench")
    return posix_ipc.Semaphore(name, posix_ipc.O_CREX, initial_value=value)
