"""A metrics board: N workers x named integer fields, four ways.

Every class here implements :class:`MetricsBoard`. Worker ``i`` updates its
own row with ``add(i, completed=1)`` or ``set(i, throughput=120)`` (several
fields in one call change together); a monitor reads every row with
``snapshot()`` and the column sums with ``totals()``. Fields are signed
64-bit integers, named when the board is made (default ``completed``,
``errors``, ``throughput``).

* ctypes shared memory: :class:`CtypesMetrics` (one ``RawArray`` row per
  worker; a per-row sequence counter, or a per-row lock, keeps the fields of
  a row consistent);
* message passing: :class:`QueueMetrics` (an owner process holds the rows);
* a Manager server: :class:`ManagerMetrics` (the rows live in the server);
* a Redis server: :class:`RedisMetrics` (the rows are one Redis hash, each
  call one Lua script; reachable from any host that can reach the server).

:class:`UnsafeMetrics` is the shared-memory board without the sequence
counter, kept to show the half-updated rows a monitor then reads.

The four ways raise the same exception types for the same input; numpy's
integer scalars count as ints. Objects pass to child processes as
``Process`` arguments under every start method. The process that creates a
board owns it: its ``close()`` stops the owner process or server;
``close()`` in another process only detaches that process's handle.
``python -m shmref.standalone metrics`` writes this module and the shared
machinery it uses as one file that imports only the standard library, to
copy into a project (:class:`RedisMetrics` imports the ``redis`` package when
one is made).
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
import threading
import time
from collections.abc import Sequence
from multiprocessing import connection, util
from multiprocessing.context import BaseContext
from multiprocessing.managers import BaseManager
from typing import Any, Literal, Protocol, runtime_checkable

from shmref.holder import Holder, process_gone
from shmref.keyspace import DEFAULT_URL, RedisHandle, Script, int64_pieces
from shmref.lifecycle import (
    DEFAULT_TIMEOUT,
    INT64_MAX,
    INT64_MIN,
    Closable,
    Deadline,
    context,
    integer,
    reset_after_fork,
    seconds,
    size,
)
from shmref.owner import Owner
from shmref.server import ManagerHandle, Served, register_state

__all__ = [
    "DEFAULT_FIELDS",
    "DEFAULT_TIMEOUT",
    "INT64_MAX",
    "INT64_MIN",
    "MAX_WORKERS",
    "STORES_IN_ORDER",
    "CtypesMetrics",
    "ManagerMetrics",
    "MetricsBoard",
    "MetricsManager",
    "QueueMetrics",
    "RedisMetrics",
    "UnsafeMetrics",
    "metrics_worker",
    "monitor",
]


DEFAULT_FIELDS = ("completed", "errors", "throughput")

#: The most rows a board may have, in every way: the bound is the ctypes
#: way's, whose ``sync="lock"`` boards hold one semaphore per row (each one a
#: memory mapping; Linux allows about 65 000 per process).
MAX_WORKERS = 2**14

#: True where the CPU makes one core's stores visible to the others in the
#: order they were made (x86 is TSO), which is all the sequence counter of
#: :class:`CtypesMetrics` relies on. Elsewhere it uses per-row locks.
STORES_IN_ORDER = platform.machine().lower() in {"x86_64", "amd64", "i386", "i686", "x86"}

Sync = Literal["seqlock", "lock"]


@runtime_checkable
class MetricsBoard(Protocol):
    """What every board in this module guarantees.

    ``add(worker, **deltas)`` adds to, and ``set(worker, **values)`` stores,
    the named fields of one worker's row, all of them in one atomic step.
    ``snapshot()`` returns one dict per worker in which every row is
    consistent: it never shows some fields of an ``add``/``set`` and not
    the others. ``totals()`` sums the rows of one snapshot.

    An unknown field or a value that is not an int (``bool`` included)
    raises ``TypeError``, a worker index out of range ``IndexError``, a
    field that would leave the signed 64-bit range ``OverflowError``; the
    row is then unchanged. After ``close()`` every call raises
    ``ValueError``; ``close()`` may be called again.
    """

    fields: tuple[str, ...]
    workers: int

    def add(self, worker: int, /, **deltas: int) -> None: ...

    def set(self, worker: int, /, **values: int) -> None: ...

    def snapshot(self) -> list[dict[str, int]]: ...

    def totals(self) -> dict[str, int]: ...

    def close(self) -> None: ...

    def __enter__(self) -> MetricsBoard: ...

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None: ...


def _shape(workers: object, fields: Sequence[str]) -> tuple[int, tuple[str, ...]]:
    workers = size(workers, "workers", MAX_WORKERS)
    names = tuple(fields)
    if isinstance(fields, str) or not names:
        raise ValueError(f"fields must be a non-empty sequence of names, not {fields!r}")
    for name in names:
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"a field name must be an identifier, not {name!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"field names must be unique: {names}")
    return workers, names


def _row(worker: int, workers: int) -> int:
    if worker.__class__ is not int:
        worker = integer(worker, "worker")  # numpy's ints pass, bool does not
    if not 0 <= worker < workers:
        raise IndexError(f"worker {worker} out of range: the board has {workers} rows")
    return worker


def _changes(columns: dict[str, int], changes: dict[str, Any]) -> tuple[tuple[int, int], ...]:
    """``{field: n}`` as ``((column, n), ...)``, after checking names and types."""
    out = []
    for name, n in changes.items():
        column = columns.get(name)
        if column is None:
            raise TypeError(f"no field {name!r}; the fields are {', '.join(columns)}")
        if n.__class__ is not int:
            # bool is an int subclass; counting True as 1 is almost always a bug.
            n = integer(n, name)
        out.append((column, n))
    return tuple(out)


def _out_of_range(name: str, value: int) -> OverflowError:
    return OverflowError(
        f"{name} would be {value}, outside the signed 64-bit range; the row is unchanged"
    )


def _check_values(fields: tuple[str, ...], changes: tuple[tuple[int, int], ...]) -> None:
    for column, value in changes:
        if not INT64_MIN <= value <= INT64_MAX:
            raise _out_of_range(fields[column], value)


def _added(
    fields: tuple[str, ...], row: Sequence[int], changes: tuple[tuple[int, int], ...]
) -> tuple[tuple[int, int], ...]:
    """The new values of an ``add``, or OverflowError with the row unchanged."""
    new = []
    for column, delta in changes:
        value = row[column] + delta
        if not INT64_MIN <= value <= INT64_MAX:
            raise _out_of_range(fields[column], value)
        new.append((column, value))
    return tuple(new)


class _Board(Closable):
    """What every way computes the same way: ``totals`` from ``snapshot``."""

    fields: tuple[str, ...]
    workers: int

    def snapshot(self) -> list[dict[str, int]]:
        raise NotImplementedError

    def totals(self) -> dict[str, int]:
        return {name: sum(row[name] for row in self.snapshot()) for name in self.fields}


def _release_rows(
    writers: Any, claims: Holder, rows: set[int], me: int, timeout: float | None
) -> None:
    """Let other processes claim ``rows``, which process ``me`` claimed."""
    # A finalizer, run at close() or at exit: it gives up rather than raise.
    try:
        claims.enter(timeout, "claim lock")
        for worker in rows:
            if writers[worker] == me:
                writers[worker] = 0
        claims.leave()
    except TimeoutError:
        pass
    except BaseException:
        claims.abandon()
        raise
    finally:
        rows.clear()


class CtypesMetrics(_Board):
    """One ``RawArray`` row per worker, each written by one process only.

    Layout: row ``i`` is ``[sequence, field 0, field 1, ...]`` of signed
    64-bit cells. A row has exactly one writer process, so its updates need
    no lock to be exact: nobody else writes those cells. The first ``add``
    or ``set`` of a process to row ``i`` claims it (under a lock, once); a
    second live process writing row ``i`` gets ``RuntimeError``. The claim
    ends with ``close()`` in that process or with the process itself.

    What a single writer does not give is a consistent *reading*: a monitor
    may copy a row between two of its field writes. With ``sync="seqlock"``
    the writer makes the row's sequence odd, writes the fields, and makes it
    even again; a reader keeps a copy only if the sequence was even and did
    not change while it copied, else it reads the row again. Writers never
    wait. This relies on stores becoming visible in program order (x86-64,
    see :data:`STORES_IN_ORDER`), so elsewhere the default is
    ``sync="lock"``: one lock per row, taken by its writer and by readers.

    ``snapshot`` is consistent per row, not across rows: two rows may be
    read at different moments. ``timeout`` bounds every wait: for the claim
    lock, for a row lock, and for a row to hold still (a reader waiting for
    a row sleeps between looks rather than spin). A writer killed in the
    middle of an update does not leave its row unreadable: with the seqlock,
    a reader that finds the row mid-update and its writer gone makes the
    sequence even again; with ``sync="lock"``, and for the claim lock, the
    next waiter takes the dead process's lock over after about
    :data:`shmref.holder.STALE` seconds (Linux; elsewhere ``TimeoutError``).
    Each field of the interrupted update is then old or new: there is no
    undo record. A writer whose pid was reused by a new process looks alive:
    its row then times out. Two threads of one process must not write one
    row.

    >>> from shmref.metrics import CtypesMetrics
    >>> with CtypesMetrics(workers=2) as board:
    ...     board.add(0, completed=3, errors=1)
    ...     board.set(1, throughput=250)
    ...     board.totals()
    {'completed': 3, 'errors': 1, 'throughput': 250}
    """

    def __init__(
        self,
        workers: int,
        fields: Sequence[str] = DEFAULT_FIELDS,
        *,
        sync: Sync | None = None,
        ctx: BaseContext | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        self.workers, self.fields = _shape(workers, fields)
        if sync is None:
            sync = "seqlock" if STORES_IN_ORDER else "lock"
        if sync not in ("seqlock", "lock"):
            raise ValueError(f"sync must be 'seqlock' or 'lock', not {sync!r}")
        self._timeout = seconds(timeout)
        ctx = context(ctx)
        self.sync: str = sync
        self._stride = len(self.fields) + 1
        self._cells = ctx.RawArray(ctypes.c_int64, self.workers * self._stride)
        self._writers = ctx.RawArray(ctypes.c_int64, self.workers)  # pid per row
        # Locks that record their holder, taken over if it dies (shmref.holder).
        self._claims: Any = Holder(ctx)
        self._row_holders = [Holder(ctx) for _ in range(self.workers)] if sync == "lock" else None
        self._attach()

    def _attach(self) -> None:
        self._columns = {name: column + 1 for column, name in enumerate(self.fields)}
        self._names = ("sequence", *self.fields)  # by column
        self._after_fork()
        reset_after_fork(self)

    def _after_fork(self) -> None:
        # Rows claimed by a parent are not a forked child's.
        self._mine: set[int] = set()  # rows this process has claimed
        self._finalizer: util.Finalize | None = None

    def __getstate__(self) -> dict[str, Any]:
        self._check_open()
        state = self.__dict__.copy()
        del state["_columns"], state["_names"], state["_mine"], state["_finalizer"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._attach()

    def _claim(self, worker: int) -> None:
        claims, me = self._claims, os.getpid()
        try:
            claims.enter(self._timeout, "claim lock", self)
            writer = self._writers[worker]
            if writer not in (0, me) and not process_gone(writer):
                raise RuntimeError(
                    f"row {worker} is written by process {writer}: each row has one writer"
                )
            self._writers[worker] = me
            base = worker * self._stride
            if self._cells[base] & 1:  # the last writer died mid-update
                self._cells[base] += 1
            claims.leave()
        except BaseException:
            claims.abandon()
            raise
        self._mine.add(worker)
        if self._finalizer is None:
            # Releases this process's rows on close(), when the handle is
            # dropped, or when the process exits normally.
            self._finalizer = util.Finalize(
                self,
                _release_rows,
                args=(self._writers, self._claims, self._mine, me, self._timeout),
                exitpriority=10,
            )

    def _write(self, base: int, changes: tuple[tuple[int, int], ...]) -> None:
        cells = self._cells
        if self.sync == "seqlock":
            sequence = cells[base]
            try:
                cells[base] = sequence + 1  # odd: readers retry
                for column, value in changes:
                    cells[base + column] = value
            finally:
                # Even again, a caught KeyboardInterrupt included (each field
                # of a cut update is then old or new, as after a killed writer).
                cells[base] = sequence + 2
        elif self.sync == "lock":
            row = self._row_holders[base // self._stride]  # type: ignore[index]
            try:
                row.enter(self._timeout, "row lock", self)
                for column, value in changes:
                    cells[base + column] = value
                row.leave()
            except BaseException:
                row.abandon()
                raise
        else:  # UnsafeMetrics
            for column, value in changes:
                cells[base + column] = value

    def add(self, worker: int, /, **deltas: int) -> None:
        if self._closed:
            self._refuse()
        worker = _row(worker, self.workers)
        changes = _changes(self._columns, deltas)
        if worker not in self._mine:
            self._claim(worker)
        base = worker * self._stride
        # Only this process writes the row: reading it here races with nobody.
        row = self._cells[base : base + self._stride]
        self._write(base, _added(self._names, row, changes))

    def set(self, worker: int, /, **values: int) -> None:
        if self._closed:
            self._refuse()
        worker = _row(worker, self.workers)
        changes = _changes(self._columns, values)
        _check_values(self._names, changes)
        if worker not in self._mine:
            self._claim(worker)
        self._write(worker * self._stride, changes)

    def _rows(self) -> list[list[int]]:
        """Every row, each one consistent, without field names."""
        cells, stride = self._cells, self._stride
        if self.sync == "lock":
            rows = []
            for worker, row in enumerate(self._row_holders):  # type: ignore[arg-type]
                try:
                    row.enter(self._timeout, "row lock", self)
                    rows.append(cells[worker * stride + 1 : (worker + 1) * stride])
                    row.leave()
                except BaseException:
                    row.abandon()
                    raise
            return rows
        data = cells[:]
        if self.sync != "seqlock":
            return [data[base + 1 : base + stride] for base in range(0, len(data), stride)]
        after = cells[0::stride]
        rows = []
        for worker, sequence in enumerate(after):
            base = worker * stride
            if sequence == data[base] and not sequence & 1:
                rows.append(data[base + 1 : base + stride])
            else:  # written while copied: read this row alone until it holds still
                rows.append(self._read_row(base))
        return rows

    def _read_row(self, base: int) -> list[int]:
        cells, end = self._cells, base + self._stride
        deadline = None
        attempts = 0
        pause = 0.0
        while True:
            row: list[int] = cells[base:end]
            if not row[0] & 1 and cells[base] == row[0]:
                return row[1:]
            attempts += 1
            if attempts % 64 == 0:
                if self._closed:  # by another thread, while this one waited
                    self._refuse()
                if row[0] & 1 and self._repair(base, row[0]):
                    continue
                # The writer may be descheduled mid-update: let it run, and
                # after a while look less often (up to every 10 ms), not at
                # full CPU.
                if pause:
                    time.sleep(pause)
                elif hasattr(os, "sched_yield"):
                    os.sched_yield()
                pause = min(0.01, pause * 2 or (0.0001 if attempts >= 1024 else 0.0))
                if deadline is None:
                    deadline = Deadline(self._timeout)
                elif deadline.expired:
                    raise TimeoutError(
                        f"row {base // self._stride} stayed mid-update for {self._timeout} s "
                        "(its writer is alive, or its pid was reused)"
                    )

    def _repair(self, base: int, sequence: int) -> bool:
        """Make the row even again if its writer died mid-update; True if it did."""
        worker = base // self._stride
        writer = self._writers[worker]
        if writer != 0 and not process_gone(writer):
            return False
        claims = self._claims
        try:
            # Under the claim lock, so that no new writer claims the row meanwhile.
            claims.enter(self._timeout, "claim lock", self)
            repaired = self._writers[worker] == writer and self._cells[base] == sequence
            if repaired:
                self._cells[base] = sequence + 1  # each field of the cut update: old or new
            claims.leave()
        except BaseException:
            claims.abandon()
            raise
        return repaired

    def snapshot(self) -> list[dict[str, int]]:
        if self._closed:
            self._refuse()
        fields = self.fields
        return [dict(zip(fields, row, strict=True)) for row in self._rows()]

    def _release(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None
        # Drop the shared objects: their memory and semaphores go with the
        # last handle, in whichever process that is.
        self._cells = self._writers = self._claims = self._row_holders = None


class UnsafeMetrics(CtypesMetrics):
    """Anti-pattern kept to show the torn row: no sequence counter, no lock.

    Each row still has one writer, so no update is lost: the totals are
    exact. But a monitor copying a row while its writer is between two field
    writes sees some fields of the update and not the others. Do not use
    this; it exists so that the tests and the documentation can show it.
    """

    def __init__(
        self,
        workers: int,
        fields: Sequence[str] = DEFAULT_FIELDS,
        *,
        ctx: BaseContext | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__(workers, fields, sync="seqlock", ctx=ctx, timeout=timeout)
        self.sync = "none"


class _Rows:
    """The rows as an owner process or a Manager server holds them."""

    def __init__(self, workers: int, fields: tuple[str, ...]) -> None:
        self._fields = fields
        self._rows = [[0] * len(fields) for _ in range(workers)]

    def _add(self, worker: int, changes: tuple[tuple[int, int], ...]) -> None:
        row = self._rows[worker]
        for column, value in _added(self._fields, row, changes):
            row[column] = value

    def _set(self, worker: int, changes: tuple[tuple[int, int], ...]) -> None:
        row = self._rows[worker]
        for column, value in changes:
            row[column] = value  # checked by the caller


class _OwnedRows(_Rows):
    """The state of a :class:`QueueMetrics`'s owner process, one message at a time."""

    def __init__(self, workers: int, fields: tuple[str, ...]) -> None:
        super().__init__(workers, fields)
        self._refused: list[str] = []

    def add(self, worker: int, changes: tuple[tuple[int, int], ...]) -> None:
        try:
            self._add(worker, changes)
        except OverflowError as error:  # nobody waits for an add: the next snapshot says it
            self._refused.append(str(error))

    def set(self, worker: int, changes: tuple[tuple[int, int], ...]) -> None:
        self._set(worker, changes)

    def snapshot(self) -> list[list[int]]:
        if self._refused:
            first, more = self._refused[0], len(self._refused) - 1
            self._refused = []
            raise OverflowError(f"{first} ({more} more adds were refused too)")
        # The live rows, not a copy: the owner pickles its reply before it
        # applies the next message (issue 9: a Queue's feeder thread used to
        # pickle them later, while the owner went on writing).
        return self._rows


class QueueMetrics(_Board):
    """Rows held by an owner process, updated by messages to it.

    ``add`` and ``set`` check their input, write one message and return
    without waiting for it to be applied; the owner applies each message
    whole, so rows are always consistent, and ``snapshot`` (a request and
    its reply) is a snapshot of the whole board at one moment. The owner
    answers it after applying what every process had sent
    (:mod:`shmref.owner`), so it sees every update that returned before it,
    in any process. Any process may write any row.

    ``timeout`` bounds every wait: for room in the connection while the
    owner is behind, and for the owner's reply. If the owner dies, calls
    raise :class:`~shmref.lifecycle.OwnerGone`.

    Part of the contract it cannot keep: ``add`` does not wait, so a field
    that would overflow is not reported by that ``add``. The owner refuses
    it (the row is unchanged) and the next ``snapshot`` raises
    ``OverflowError``.

    >>> from shmref.metrics import QueueMetrics
    >>> with QueueMetrics(workers=2) as board:
    ...     board.add(1, completed=2)
    ...     board.snapshot()[1]
    {'completed': 2, 'errors': 0, 'throughput': 0}
    """

    def __init__(
        self,
        workers: int,
        fields: Sequence[str] = DEFAULT_FIELDS,
        *,
        ctx: BaseContext | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        self.workers, self.fields = _shape(workers, fields)
        timeout = seconds(timeout)
        self._columns = {name: column for column, name in enumerate(self.fields)}
        self._owner = Owner(
            context(ctx),
            _OwnedRows,
            (self.workers, self.fields),
            what="QueueMetrics",
            timeout=timeout,
        )

    def __getstate__(self) -> dict[str, Any]:
        self._check_open()
        return {"workers": self.workers, "fields": self.fields, "owner": self._owner}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.workers, self.fields = state["workers"], state["fields"]
        self._columns = {name: column for column, name in enumerate(self.fields)}
        self._owner = state["owner"]

    def add(self, worker: int, /, **deltas: int) -> None:
        if self._closed:
            self._refuse()
        worker = _row(worker, self.workers)
        self._owner.send("add", worker, _changes(self._columns, deltas))

    def set(self, worker: int, /, **values: int) -> None:
        if self._closed:
            self._refuse()
        worker = _row(worker, self.workers)
        changes = _changes(self._columns, values)
        _check_values(self.fields, changes)
        self._owner.send("set", worker, changes)

    def snapshot(self) -> list[dict[str, int]]:
        if self._closed:
            self._refuse()
        fields = self.fields
        return [dict(zip(fields, row, strict=True)) for row in self._owner.call("snapshot")]

    def _release(self) -> None:
        self._owner.close()


class _BoardState(_Rows, Served):
    """The rows, living in a manager's server process.

    The server serves each client connection in a thread of its own, so two
    processes' calls can run at once: the lock makes each one whole.
    """

    def __init__(self, workers: int, fields: tuple[str, ...]) -> None:
        super().__init__(workers, fields)
        self._lock = threading.Lock()

    def add(self, worker: int, changes: tuple[tuple[int, int], ...]) -> None:
        with self._lock:
            self._add(worker, changes)

    def set(self, worker: int, changes: tuple[tuple[int, int], ...]) -> None:
        with self._lock:
            self._set(worker, changes)

    def snapshot(self) -> list[list[int]]:
        with self._lock:
            return [row[:] for row in self._rows]


class MetricsManager(BaseManager):
    """A manager whose ``Board(workers, fields)`` is a board living in its server."""


register_state(MetricsManager, "Board", _BoardState)


class ManagerMetrics(_Board, ManagerHandle):
    """Rows living in a Manager server; every call is one round trip.

    The server applies each ``add`` and ``set`` whole and copies the rows
    for ``snapshot`` under one lock, so rows are always consistent and a
    snapshot is of the whole board at one moment. Every call returns once
    the server has applied it, so ``snapshot`` sees every update that has
    returned in any process. Any process may write any row. Pass a started
    :class:`MetricsManager` as ``manager`` to share one server; otherwise
    each board starts its own. A dead server makes calls raise
    :class:`~shmref.lifecycle.OwnerGone` at once rather than hang.
    ``timeout`` bounds the wait for the server's reply (a server stopped or
    hung: ``TimeoutError``): the server holds its lock for one row's update
    or one copy of the rows, and nothing else waits.

    >>> from shmref.metrics import ManagerMetrics
    >>> with ManagerMetrics(workers=1, fields=("ok", "failed")) as board:
    ...     board.add(0, ok=5)
    ...     board.add(0, ok=-1, failed=1)
    ...     board.totals()
    {'ok': 4, 'failed': 1}
    """

    def __init__(
        self,
        workers: int,
        fields: Sequence[str] = DEFAULT_FIELDS,
        *,
        manager: MetricsManager | None = None,
        ctx: BaseContext | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        address: tuple[str, int] | None = None,
        authkey: bytes | None = None,
    ) -> None:
        self.workers, self.fields = _shape(workers, fields)
        timeout = seconds(timeout)
        self._columns = {name: column for column, name in enumerate(self.fields)}
        self._server = self._serve(
            MetricsManager,
            "Board",
            (self.workers, self.fields),
            manager,
            ctx,
            address,
            authkey,
            timeout,
        )
        self._publish()

    def __getstate__(self) -> dict[str, Any]:
        self._check_open()
        return {"workers": self.workers, "fields": self.fields, "server": self._server}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.workers, self.fields = state["workers"], state["fields"]
        self._columns = {name: column for column, name in enumerate(self.fields)}
        self._server = state["server"]

    def add(self, worker: int, /, **deltas: int) -> None:
        if self._closed:
            self._refuse()
        worker = _row(worker, self.workers)
        self._server.call("add", worker, _changes(self._columns, deltas))

    def set(self, worker: int, /, **values: int) -> None:
        if self._closed:
            self._refuse()
        worker = _row(worker, self.workers)
        changes = _changes(self._columns, values)
        _check_values(self.fields, changes)
        self._server.call("set", worker, changes)

    def snapshot(self) -> list[dict[str, int]]:
        if self._closed:
            self._refuse()
        fields = self.fields
        return [dict(zip(fields, row, strict=True)) for row in self._server.answer("snapshot")]

    def _release(self) -> None:
        self._server.close()


# The Redis way's rows: one hash, KEYS[2], whose field "w:c" is worker w's
# column c (absent: 0). ARGV[1] is the worker, then (column, number) pairs.
# An add is HINCRBY's, which refuses a total outside the 64-bit range and
# changes nothing: then the fields the add changed are put back, so the
# add happens whole or not at all. A column may come more than once, with
# the pieces of a number HINCRBY cannot take at once (int64_pieces).
_REDIS_ADD = Script(
    """
local before = {}
for i = 2, #ARGV, 2 do
  local field = ARGV[1] .. ':' .. ARGV[i]
  if before[field] == nil then before[field] = redis.call('HGET', KEYS[2], field) or false end
  local total = redis.pcall('HINCRBY', KEYS[2], field, ARGV[i + 1])
  if type(total) == 'table' then
    for name, value in pairs(before) do
      if value then redis.call('HSET', KEYS[2], name, value)
      else redis.call('HDEL', KEYS[2], name) end
    end
    if string.find(total.err, 'overflow') then
      return redis.error_reply('OVERFLOW ' .. ARGV[i] .. ' ' .. (before[field] or '0'))
    end
    return total
  end
end
return 1
"""
)
_REDIS_SET = Script(
    """
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[1] .. ':' .. ARGV[i], ARGV[i + 1]) end
return 1
"""
)
_REDIS_ROWS = Script("return redis.call('HGETALL', KEYS[2])")
_REDIS_FIELD = Script("return redis.call('HGET', KEYS[2], ARGV[1])")


class RedisMetrics(_Board, RedisHandle):
    """Rows in one Redis hash; every call is one Lua script, one round trip.

    A script runs alone on the server, so each ``add`` and ``set`` changes
    its fields together, and ``snapshot`` (one ``HGETALL``) is of the whole
    board at one moment: rows are always consistent, and a snapshot sees
    every update that returned, in any process on any host. An ``add``
    whose field would leave the signed 64-bit range raises
    ``OverflowError`` (``HINCRBY`` refuses it) and leaves the row as it
    was. Any process may write any row.

    See :class:`~shmref.keyspace.RedisHandle` for ``url``, ``name``,
    ``connect()``, ``close()``, what it needs, and the errors of a server
    gone or slow. It cannot keep one part of the contract: a creator killed
    without ``close()`` leaves its keys on the server.
    """

    def __init__(
        self,
        workers: int,
        fields: Sequence[str] = DEFAULT_FIELDS,
        *,
        url: str = DEFAULT_URL,
        name: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        workers, fields = _shape(workers, fields)
        self._create(url, name, timeout, description={"workers": workers, "fields": list(fields)})

    def _adopt(self, description: dict[str, Any]) -> None:
        super()._adopt(description)
        self.workers = description["workers"]
        self.fields = tuple(description["fields"])
        self._columns = {name: column for column, name in enumerate(self.fields)}

    def add(self, worker: int, /, **deltas: int) -> None:
        keyspace = self._keyspace
        if self._closed:
            self._refuse()
        worker = _row(worker, self.workers)
        changes = _changes(self._columns, deltas)
        args: list[int] = [worker]
        for column, delta in changes:
            pieces = int64_pieces(delta)
            if pieces is None:  # no field can take it: say what it would be
                old = keyspace.run(_REDIS_FIELD, ("rows",), (f"{worker}:{column}",))
                raise _out_of_range(self.fields[column], int(old or 0) + delta)
            for piece in pieces:
                args += (column, piece)

        def overflow(text: str) -> OverflowError:
            column, old = map(int, text.split())
            delta = sum(n for c, n in changes if c == column)
            return _out_of_range(self.fields[column], old + delta)

        keyspace.run(_REDIS_ADD, ("rows",), args, {"OVERFLOW": overflow})

    def set(self, worker: int, /, **values: int) -> None:
        keyspace = self._keyspace
        if self._closed:
            self._refuse()
        worker = _row(worker, self.workers)
        changes = _changes(self._columns, values)
        _check_values(self.fields, changes)
        args: list[int] = [worker]
        for column, value in changes:
            args += (column, value)
        keyspace.run(_REDIS_SET, ("rows",), args)

    def snapshot(self) -> list[dict[str, int]]:
        keyspace = self._keyspace
        if self._closed:
            self._refuse()
        flat = keyspace.run(_REDIS_ROWS, ("rows",))
        rows = [[0] * len(self.fields) for _ in range(self.workers)]
        for i in range(0, len(flat), 2):
            worker, column = map(int, flat[i].split(b":"))
            rows[worker][column] = int(flat[i + 1])
        fields = self.fields
        return [dict(zip(fields, row, strict=True)) for row in rows]


# The example's process target and monitor loop.


def _task(number: int) -> bool:
    """Stand-in for real work: a little arithmetic; every tenth task fails."""
    sum(i * i for i in range(2000))
    return number % 10 != 9


def metrics_worker(
    board: MetricsBoard, worker: int, tasks: int, barrier: Any = None, timeout: float = 60.0
) -> None:
    """Process target of the example: run ``tasks`` tasks, report after each.

    After every task the worker stores its three figures in one ``set``
    (completed, errors, tasks per second), so a monitor sees them change
    together. The board must have the default fields.
    """
    if barrier is not None:
        barrier.wait(timeout)
    completed = errors = 0
    start = time.perf_counter()
    for number in range(tasks):
        if _task(number):
            completed += 1
        else:
            errors += 1
        elapsed = time.perf_counter() - start
        rate = int((number + 1) / elapsed) if elapsed > 0 else 0
        board.set(worker, completed=completed, errors=errors, throughput=rate)
    if barrier is not None:
        board.snapshot()  # the owner has applied every update of this process
        barrier.wait(timeout)
    board.close()


def monitor(
    board: MetricsBoard,
    processes: Sequence[Any],
    interval: float = 0.2,
    out: Any = None,
) -> dict[str, int]:
    """The article's monitor loop: print the totals until the workers exit.

    Prints one line every ``interval`` seconds while any of ``processes``
    is alive, joins them, prints the final totals and returns them.
    """
    out = out if out is not None else sys.stdout
    running = [process.sentinel for process in processes]
    while running:
        totals = board.totals()
        print("  ".join(f"{name} {value:>7}" for name, value in totals.items()), file=out)
        # Polling is the point of the example: wait up to one interval,
        # less if a worker exits meanwhile.
        for done in connection.wait(running, timeout=interval):
            running.remove(done)
    for process in processes:
        process.join()
    totals = board.totals()
    print("done:", "  ".join(f"{name} {value}" for name, value in totals.items()), file=out)
    return totals
