"""The libraries people pick instead of shmref, behind the calls the peer contract uses.

One adapter class per peer (and per setting that changes what it
guarantees), each the peer's own documented API and nothing more: the
contract report (``tests/peers_contract.py``) checks the peer, not a fix of
ours. A :class:`Peer` names the package, how to install it, the primitive
it stands in for and the clauses its API cannot express.

An adapter is a stateless object, so it pickles into a spawned child; what
a check passes to its children is the adapter's ``ref``, the handle a user
of the peer would pass: the object itself where it pickles, else its name.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import time
from dataclasses import dataclass, field
from multiprocessing.context import BaseContext
from multiprocessing.shared_memory import SharedMemory
from typing import Any


@dataclass(frozen=True)
class Peer:
    """A peer library in one setting, as the report's rows name it."""

    key: str  # the report's id: "ultradict-shared-lock"
    label: str  # what the page calls it: "UltraDict, shared_lock=True"
    primitive: str  # the shmref page it stands beside: "table" for Dict
    distribution: str  # its PyPI name, for the version and the install line
    module: str  # what to import to see whether it is installed
    adapter: str  # the adapter class in this module
    #: Environment the check runs with (a setting read at import time).
    env: dict[str, str] = field(default_factory=dict)
    #: Clause -> why the peer's API cannot express it.
    cannot: dict[str, str] = field(default_factory=dict)
    #: The only clauses to check (a setting that matters for those alone).
    only: tuple[str, ...] = ()

    @property
    def install(self) -> str:
        return f"pip install shmref[peers] (or pip install {self.distribution})"


def unique_name(prefix: str) -> str:
    """A /dev/shm name no other check (or process) uses."""
    return f"{prefix}{os.getpid()}_{time.monotonic_ns() % 10**9}"


# ---------------------------------------------------------------- Counter


class AtomicsCounter:
    """``atomics``: lock-free ``fetch_inc`` on 8 bytes of a SharedMemory block.

    atomics owns no memory: the block is the adapter's (a SharedMemory, which
    pickles by name into a spawned child).
    """

    class Handle:
        def __init__(self, block: SharedMemory) -> None:
            import atomics

            self.block, self.view = block, block.buf[:8]
            self.context = atomics.atomicview(buffer=self.view, atype=atomics.INT)
            self.counter = self.context.__enter__()

    def create(self, ctx: BaseContext) -> SharedMemory:
        block = SharedMemory(create=True, size=8)
        block.buf[:8] = bytes(8)
        return block

    def open(self, ref: SharedMemory) -> AtomicsCounter.Handle:
        return self.Handle(ref)

    def increment(self, handle: AtomicsCounter.Handle) -> None:
        handle.counter.fetch_inc()

    def total(self, handle: AtomicsCounter.Handle) -> int:
        return int(handle.counter.load())

    def close(self, handle: AtomicsCounter.Handle) -> None:
        handle.context.__exit__(None, None, None)
        handle.view.release()
        handle.block.close()

    def destroy(self, ref: SharedMemory) -> None:
        ref.close()
        ref.unlink()


# ---------------------------------------------------------------- Dict


class MappingTable:
    """A peer dict's calls are the mapping protocol's."""

    def get(self, handle: Any, key: str) -> Any:
        return handle[key]

    def set(self, handle: Any, key: str, value: Any) -> None:
        handle[key] = value

    def increment(self, handle: Any, key: str) -> None:
        handle[key] = handle[key] + 1  # for a key with one writer


#: id() of each UltraDict this process created -> its pid (a forked child inherits both).
_CREATORS: dict[int, int] = {}


class UltraDictTable(MappingTable):
    """``UltraDict``: a process-local dict replayed from a stream in shared memory.

    The creator's object is the handle everywhere: it pickles by name into a
    spawned child, a forked child inherits it. Its read-modify-write is
    ``with d.lock: d[k] = d[k] + 1``, as its README shows. The creator's
    ``close()`` unlinks (``auto_unlink``), and so would a forked child's
    close() of its copy of the creator's object: a forked child leaves it
    to the creator.
    """

    shared_lock = False

    def create(self, ctx: BaseContext) -> Any:
        from UltraDict import UltraDict

        table = UltraDict(shared_lock=self.shared_lock)
        _CREATORS[id(table)] = os.getpid()
        return table

    def open(self, ref: Any) -> Any:
        return ref

    def increment_locked(self, handle: Any, key: str) -> None:
        with handle.lock:
            handle[key] = handle[key] + 1

    def close(self, handle: Any) -> None:
        if _CREATORS.get(id(handle), os.getpid()) == os.getpid():
            handle.close()

    def destroy(self, ref: Any) -> None:
        ref.close(unlink=True)  # nothing if close() has unlinked already


class UltraDictSharedLockTable(UltraDictTable):
    """``UltraDict(shared_lock=True)``: its lock is a flag in shared memory (needs atomics)."""

    shared_lock = True


class SharedMemoryDictTable(MappingTable):
    """``shared-memory-dict``: the whole dict pickled into one SharedMemory block.

    Every process opens it by name, as its README does; it has no public
    lock and no atomic read-modify-write. Clean-up is its README's: close
    in every process, unlink once at the very end.
    """

    SIZE = 1 << 16

    def create(self, ctx: BaseContext) -> str:
        name = unique_name("smd")
        self.open(name).shm.close()  # the block stays until unlinked
        return name

    def open(self, ref: str) -> Any:
        from shared_memory_dict import SharedMemoryDict

        return SharedMemoryDict(name=ref, size=self.SIZE)

    def close(self, handle: Any) -> None:
        handle.shm.close()

    def destroy(self, ref: str) -> None:
        last = self.open(ref)
        last.shm.close()
        last.shm.unlink()


# ---------------------------------------------------------------- Array


class SharedArrayArray:
    """``SharedArray``: a numpy array in a named /dev/shm file; children attach by name."""

    def create(self, ctx: BaseContext, items: int) -> str:
        import numpy as np
        import SharedArray

        name = unique_name("sa")
        SharedArray.create(f"shm://{name}", items, dtype=np.int64)
        return name

    def attach(self, ref: str) -> Any:
        import SharedArray

        return SharedArray.attach(f"shm://{ref}")

    def destroy(self, ref: str) -> None:
        import SharedArray

        SharedArray.delete(ref)


# ---------------------------------------------------------------- Channel


class FasterFifoChannel:
    """``faster-fifo``: a ring buffer in shared memory, its ``Queue`` pickles into children."""

    #: Sizes the consumer's receive buffer itself before its first get.
    sized_receive_buffer = False

    def create(self, ctx: BaseContext, capacity_bytes: int) -> Any:
        from faster_fifo import Queue

        return Queue(max_size_bytes=capacity_bytes)

    def prepare_consumer(self, ref: Any, largest_message: int) -> None:
        if self.sized_receive_buffer:
            ref.reallocate_msg_buffer(2 * largest_message)

    def put(self, ref: Any, message: Any, timeout: float) -> None:
        ref.put(message, timeout=timeout)  # queue.Full when it times out

    def get(self, ref: Any, timeout: float) -> Any:
        return ref.get(timeout=timeout)  # queue.Empty when it times out

    def destroy(self, ref: Any) -> None:
        ref.close()


class FasterFifoSizedChannel(FasterFifoChannel):
    """faster-fifo with each consumer's ``reallocate_msg_buffer()`` called first."""

    sized_receive_buffer = True


# ---------------------------------------------------------------- Lock


class PosixIpcLock:
    """``posix_ipc.Semaphore`` with initial value 1, opened by name in each process."""

    class Timeout(Exception):
        pass

    def create(self, ctx: BaseContext) -> str:
        import posix_ipc

        name = "/" + unique_name("pi")
        posix_ipc.Semaphore(name, posix_ipc.O_CREX, initial_value=1).close()
        return name

    def open(self, ref: str) -> Any:
        import posix_ipc

        return posix_ipc.Semaphore(ref)

    def acquire(self, handle: Any, timeout: float) -> bool:
        import posix_ipc

        try:
            handle.acquire(timeout)
        except posix_ipc.BusyError:
            return False
        return True

    def release(self, handle: Any) -> None:
        handle.release()

    def close(self, handle: Any) -> None:
        handle.close()

    def destroy(self, ref: str) -> None:
        import posix_ipc

        with contextlib.suppress(posix_ipc.ExistentialError):
            posix_ipc.unlink_semaphore(ref)


#: Every peer the report checks, in the order of the pages.
PEERS: tuple[Peer, ...] = (
    Peer(
        "atomics",
        "atomics",
        "counter",
        "atomics",
        "atomics",
        "AtomicsCounter",
        cannot={"leaves": "it owns no memory; the segment is the caller's"},
    ),
    Peer("ultradict", "UltraDict", "table", "ultradict", "UltraDict", "UltraDictTable"),
    Peer(
        "ultradict-shared-lock",
        "UltraDict, shared_lock=True",
        "table",
        "ultradict",
        "UltraDict",
        "UltraDictSharedLockTable",
    ),
    Peer(
        "shared-memory-dict",
        "shared-memory-dict",
        "table",
        "shared-memory-dict",
        "shared_memory_dict",
        "SharedMemoryDictTable",
        cannot={"same-key": "no lock or atomic read-modify-write in its API"},
    ),
    Peer(
        "shared-memory-dict-lock",
        "shared-memory-dict, SHARED_MEMORY_USE_LOCK=1",
        "table",
        "shared-memory-dict",
        "shared_memory_dict",
        "SharedMemoryDictTable",
        env={"SHARED_MEMORY_USE_LOCK": "1"},
        cannot={"same-key": "no lock or atomic read-modify-write in its API"},
    ),
    Peer("sharedarray", "SharedArray", "arrays", "SharedArray", "SharedArray", "SharedArrayArray"),
    Peer(
        "faster-fifo", "faster-fifo", "channel", "faster-fifo", "faster_fifo", "FasterFifoChannel"
    ),
    Peer(
        "faster-fifo-sized",
        "faster-fifo, receive buffer sized first",
        "channel",
        "faster-fifo",
        "faster_fifo",
        "FasterFifoSizedChannel",
        only=("order-large",),
    ),
    Peer("posix-ipc", "posix_ipc.Semaphore", "locks", "posix-ipc", "posix_ipc", "PosixIpcLock"),
)


def adapter(peer: Peer) -> Any:
    """A fresh adapter for ``peer``: a class of this module, or ``module:Class``."""
    module, _, name = peer.adapter.rpartition(":")
    return getattr(importlib.import_module(module), name)() if module else globals()[name]()
