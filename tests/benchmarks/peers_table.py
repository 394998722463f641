"""The dict peers, UltraDict and shared-memory-dict, measured in interpreters of their own.

Importing UltraDict turns off the resource tracker's shared_memory
registration for the whole process (TOOLCHAIN.md), which would change what
every later benchmark and leak check in that process sees; so neither peer
is imported here or anywhere in the pytest process. A spawned holder
(:func:`run_peer`) creates the peer's dict, fills it and forks the workers
(:func:`round_worker`), which do one round of work each time the parent's
barrier lets them, so the parent times rounds between two barrier meetings
as timing.WorkerGroup does. The goal benchmarks run ``CtypesDict`` through
the same processes, so both sides pay the same barrier and start the same
way.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
from collections.abc import Callable
from typing import Any, NamedTuple

from shmref.table import increment

from .peers import need
from .timing import BARRIER_TIMEOUT

SPAWN = multiprocessing.get_context("spawn")

#: Way -> the peer it measures (peers.PEERS).
TABLE_PEERS = {
    "ultradict": "ultradict",
    "ultradict-shared-lock": "ultradict",
    "shared-memory-dict": "shared-memory-dict",
}

#: Bytes of shared-memory-dict's one segment: the whole dict, pickled, must fit.
SMD_BYTES = 4 * 1024 * 1024


def do(
    table: Any,
    op: str,
    keys: list[str],
    n: int,
    update: Callable[[str, Callable[[Any], Any], Any], Any] | None = None,
) -> None:
    """``n`` operations ``op`` on ``table``, cycling through ``keys``.

    ``get``, ``set``, ``update`` (``update(key, increment, 0)``, by default
    the table's own) or ``mix``: a ``get`` and a ``set`` in turn. The same
    loops for shmref's ways and the peers.
    """
    keys = (keys * (n // len(keys) + 1))[:n]
    get = table.get
    if op == "get":
        for key in keys:
            get(key)
    elif op == "set":
        for i, key in enumerate(keys):
            table[key] = i
    elif op == "update":
        update = update or table.update
        for key in keys:
            update(key, increment, 0)
    elif op == "mix":
        for i, key in enumerate(keys):
            if i & 1:
                table[key] = i
            else:
                get(key)
    else:
        raise ValueError(f"no such operation: {op!r}")


class _Opened:
    """A peer's dict in this process, with an update and a close as its users write them."""

    def __init__(self, way: str, name: str, create: bool) -> None:
        self.way = way
        self.create = create
        if way.startswith("ultradict"):
            UltraDict = need("ultradict").UltraDict
            self.table: Any = UltraDict(
                name=name,
                create=create,
                shared_lock=way == "ultradict-shared-lock",
                auto_unlink=False,
            )
            # UltraDict's documented way to make a read-modify-write atomic;
            # without shared_lock=True its lock is each process's own.
            self.lock: Any = self.table.lock
        else:
            SharedMemoryDict = need("shared-memory-dict").SharedMemoryDict
            self.table = SharedMemoryDict(name=name, size=SMD_BYTES)
            self.lock = None  # it has no lock between processes: nothing to take

    def update(self, key: str, fn: Callable[[Any], Any], default: Any) -> Any:
        if self.lock is None:
            self.table[key] = value = fn(self.table.get(key, default))
            return value
        with self.lock:
            self.table[key] = value = fn(self.table.get(key, default))
        return value

    def close(self) -> None:
        if self.way.startswith("ultradict"):
            self.table.close(unlink=self.create)
        else:
            block = self.table._memory_block  # it has no public way to remove its segment
            self.table.cleanup()
            if self.create:
                block.unlink()


class Job(NamedTuple):
    """What one benchmark's processes do, on a table of ``keys``.

    One worker per entry of ``keys_of`` (the keys it cycles through), each
    doing ``calls`` rounds of ``n`` operations ``op``.
    """

    way: str
    keys: list[str]
    op: str
    keys_of: list[list[str]]
    n: int
    calls: int


def run_peer(table: Any, job: Job, barrier: Any, conn: Any, timeout: float) -> None:
    """Process target (spawned): a peer's whole benchmark, in a /dev/shm of its own.

    ``table`` is a shmref table, already filled, or the name to create the
    peer's dict under, filled here with ``keys`` at 0. Then forks one
    round_worker per entry of ``keys_of`` and waits for them. UltraDict
    can leave segments behind (issue 12); in a /dev/shm of this process's
    own (tests.leaks.private_dev_shm, as root on Linux) they go when it
    exits, and their names are sent back with the workers' exit codes.
    """
    from tests.leaks import private_dev_shm

    private = private_dev_shm()
    opened = None
    if isinstance(table, str):
        opened = _Opened(job.way, table, create=True)
        # One write of every key: shared-memory-dict pickles its whole dict
        # again on each set, which for 10,000 keys one by one takes minutes.
        opened.table.update(dict.fromkeys(job.keys, 0))
    conn.send("ready")
    fork = multiprocessing.get_context("fork")
    workers = [
        fork.Process(
            target=round_worker,
            args=(table, job.way, job.op, part, job.n, job.calls, barrier, timeout),
        )
        for part in job.keys_of
    ]
    for worker in workers:
        worker.start()
    running = {worker.sentinel: worker for worker in workers}
    while running:
        ended = multiprocessing.connection.wait(list(running), timeout)
        if not ended:
            break  # none ended in ``timeout``: the exit codes below say None
        for sentinel in ended:
            worker = running.pop(sentinel)
            worker.join()
            if worker.exitcode != 0:
                # A peer's worker died (UltraDict's can, issue 12): break the
                # barrier, so the parent learns it now, not at its timeout.
                barrier.abort()
    if opened is not None:
        opened.close()
    left = sorted(os.listdir("/dev/shm")) if private else []
    conn.send(([worker.exitcode for worker in workers], left))
    conn.close()


def round_worker(
    table: Any,
    way: str,
    op: str,
    keys: list[str],
    n: int,
    calls: int,
    barrier: Any,
    timeout: float,
) -> None:
    """Process target: ``calls`` times, meet the others, do ``n`` operations, meet them again.

    ``table`` is a shmref table or the name of a peer's dict to attach to.
    """
    if isinstance(table, str):
        opened = _Opened(way, table, create=False)
        table, update, close = opened.table, opened.update, opened.close
    else:
        update, close = table.update, table.close
    for _ in range(calls):
        barrier.wait(timeout)
        do(table, op, keys, n, update)
        barrier.wait(timeout)
    close()


class PeerRun:
    """One benchmark's processes (run_peer and its workers); ``run()`` is one timed round.

    The parent only meets the workers at the barrier: it never imports a peer.
    """

    def __init__(self, table: Any, job: Job) -> None:
        self.way = job.way
        self.barrier = SPAWN.Barrier(len(job.keys_of) + 1)
        self._results, writer = SPAWN.Pipe(duplex=False)
        self._process = SPAWN.Process(
            target=run_peer, args=(table, job, self.barrier, writer, BARRIER_TIMEOUT)
        )
        self._process.start()
        writer.close()
        self._answer()

    def _answer(self) -> Any:
        if not self._results.poll(BARRIER_TIMEOUT):
            self._process.join(BARRIER_TIMEOUT)
            raise RuntimeError(f"{self.way}: no answer (exit code {self._process.exitcode})")
        return self._results.recv()

    def run(self) -> None:
        self.barrier.wait(BARRIER_TIMEOUT)
        self.barrier.wait(BARRIER_TIMEOUT)

    def join(self) -> list[str]:
        """The /dev/shm entries the run left (where it had a /dev/shm of its own)."""
        exitcodes, left = self._answer()
        self._results.close()
        self._process.join(BARRIER_TIMEOUT)
        if self._process.exitcode != 0 or any(exitcodes):
            raise RuntimeError(f"{self.way}: exit codes {self._process.exitcode}, {exitcodes}")
        return list(left)
