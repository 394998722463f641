"""A metrics board: N workers x named integer fields, three ways.

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
* a Manager server: :class:`ManagerMetrics` (the rows live in the server).

:class:`UnsafeMetrics` is the shared-memory board without the sequence
counter, kept to show the half-updated rows a monitor then reads.

Objects pass to child processes as ``Process`` arguments under every start
method. The process that creates a board owns it: its ``close()`` stops the
owner process or server; ``close()`` in another process only detaches that
process's handle. This module imports only the standard library: copy it
alone into a project and it works. ``python -m shmref.metrics`` runs the
monitor loop of the worker-metrics example.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import platform
import queue
import sys
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from multiprocessing import connection, util
from multiprocessing.context import BaseContext
from multiprocessing.managers import BaseManager
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = [
    "DEFAULT_FIELDS",
    "DEFAULT_TIMEOUT",
    "INT64_MAX",
    "INT64_MIN",
    "STORES_IN_ORDER",
    "CtypesMetrics",
    "ManagerMetrics",
    "MetricsBoard",
    "MetricsManager",
    "QueueMetrics",
    "UnsafeMetrics",
    "equal_fields_writer",
    "metrics_worker",
    "monitor",
]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

DEFAULT_FIELDS = ("completed", "errors", "throughput")

#: Seconds a call waits for a lock, a reply or a consistent row before
#: raising TimeoutError.
DEFAULT_TIMEOUT = 30.0

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

    An unknown field or a non-int value raises ``TypeError``, a worker index
    out of range ``IndexError``, a field that would leave the signed 64-bit
    range ``OverflowError``; the row is then unchanged. After ``close()``
    every call raises ``ValueError``; ``close()`` may be called again.
    """

    fields: tuple[str, ...]
    workers: int

    def add(self, worker: int, /, **deltas: int) -> None: ...

    def set(self, worker: int, /, **values: int) -> None: ...

    def snapshot(self) -> list[dict[str, int]]: ...

    def totals(self) -> dict[str, int]: ...

    def close(self) -> None: ...

    def __enter__(self) -> MetricsBoard: ...

    def __exit__(self, *exc: object) -> None: ...


def _shape(workers: object, fields: Sequence[str]) -> tuple[int, tuple[str, ...]]:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int, not {workers!r}")
    names = tuple(fields)
    if isinstance(fields, str) or not names:
        raise ValueError(f"fields must be a non-empty sequence of names, not {fields!r}")
    for name in names:
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"a field name must be an identifier, not {name!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"field names must be unique: {names}")
    return workers, names


def _row(worker: object, workers: int) -> int:
    if isinstance(worker, bool) or not isinstance(worker, int):
        raise TypeError(f"worker must be an int, not {type(worker).__name__}")
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
        # bool is an int subclass; counting True as 1 is almost always a bug.
        if n.__class__ is not int and (isinstance(n, bool) or not isinstance(n, int)):
            raise TypeError(f"{name} must be an int, not {type(n).__name__}")
        out.append((column, int(n)))
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


def _context(ctx: BaseContext | None) -> Any:
    # Any: typeshed's BaseContext lacks Process, and the shared objects it
    # makes are replaced by None on close().
    return ctx if ctx is not None else multiprocessing.get_context()


def _acquire(lock: Any, timeout: float | None, what: str) -> None:
    if not lock.acquire(timeout=timeout):
        raise TimeoutError(f"{what} not acquired within {timeout} s (a holder may have died)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. EPERM: it exists, as another user
        return True
    return True


class _Closable:
    """The close/context-manager half of the protocol, shared by every way."""

    _closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"{type(self).__name__} is closed")

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Board(_Closable):
    """What every way computes the same way: ``totals`` from ``snapshot``."""

    fields: tuple[str, ...]
    workers: int

    def snapshot(self) -> list[dict[str, int]]:
        raise NotImplementedError

    def totals(self) -> dict[str, int]:
        return {name: sum(row[name] for row in self.snapshot()) for name in self.fields}


# Rows claimed in a parent are not the child's after fork(): forget them.
_claimants: weakref.WeakSet[CtypesMetrics] = weakref.WeakSet()


def _forget_claims() -> None:
    for board in list(_claimants):
        board._mine = set()
        board._finalizer = None


def _release_rows(writers: Any, lock: Any, rows: set[int], me: int, timeout: float | None) -> None:
    """Let other processes claim ``rows``, which process ``me`` claimed."""
    if lock.acquire(timeout=timeout):
        try:
            for worker in rows:
                if writers[worker] == me:
                    writers[worker] = 0
        finally:
            lock.release()
    rows.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_claims)


class CtypesMetrics(_Board):
    """One ``RawArray`` row per worker, each written by one process only.

    Layout: row ``i`` is ``[sequence, field 0, field 1, ...]`` of signed
    64-bit cells. A row has exactly one writer process, so its updates need
    no lock to be exact: nobody else writes those cells. The first ``add``
    or ``set`` of a process to row ``i`` claims the row (under a lock, once);
    a second live process writing row ``i`` gets ``RuntimeError``. The claim
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
    read at different moments. A writer killed in the middle of an update
    leaves its row unreadable (``TimeoutError`` after ``timeout`` seconds):
    with the seqlock until a new process claims the row (the fields of that
    update are then partly written), with ``sync="lock"`` for good, since
    nobody can release the dead writer's row lock. Two threads of one
    process must not write one row.

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
        context = _context(ctx)
        self.sync: str = sync
        self._stride = len(self.fields) + 1
        self._cells = context.RawArray(ctypes.c_int64, self.workers * self._stride)
        self._writers = context.RawArray(ctypes.c_int64, self.workers)  # pid per row
        self._claim_lock = context.Lock()
        self._row_locks = [context.Lock() for _ in range(self.workers)] if sync == "lock" else None
        self._timeout = timeout
        self._attach()

    def _attach(self) -> None:
        self._columns = {name: column + 1 for column, name in enumerate(self.fields)}
        self._names = ("sequence", *self.fields)  # by column
        self._mine: set[int] = set()  # rows this process has claimed
        self._finalizer: util.Finalize | None = None
        _claimants.add(self)

    def __getstate__(self) -> dict[str, Any]:
        self._check_open()
        state = self.__dict__.copy()
        del state["_columns"], state["_names"], state["_mine"], state["_finalizer"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._attach()

    def _claim(self, worker: int) -> None:
        self._check_open()
        _acquire(self._claim_lock, self._timeout, "claim lock")
        try:
            holder, me = self._writers[worker], os.getpid()
            if holder not in (0, me) and _alive(holder):
                raise RuntimeError(
                    f"row {worker} is written by process {holder}: each row has one writer"
                )
            self._writers[worker] = me
            base = worker * self._stride
            if self._cells[base] & 1:  # the last writer died mid-update
                self._cells[base] += 1
        finally:
            self._claim_lock.release()
        self._mine.add(worker)
        if self._finalizer is None:
            # Releases this process's rows on close(), when the handle is
            # dropped, or when the process exits normally.
            self._finalizer = util.Finalize(
                self,
                _release_rows,
                args=(self._writers, self._claim_lock, self._mine, me, self._timeout),
                exitpriority=10,
            )

    def _write(self, base: int, changes: tuple[tuple[int, int], ...]) -> None:
        cells = self._cells
        if self.sync == "seqlock":
            sequence = cells[base]
            cells[base] = sequence + 1  # odd: readers retry
            for column, value in changes:
                cells[base + column] = value
            cells[base] = sequence + 2
        elif self.sync == "lock":
            lock = self._row_locks[base // self._stride]  # type: ignore[index]
            _acquire(lock, self._timeout, "row lock")
            try:
                for column, value in changes:
                    cells[base + column] = value
            finally:
                lock.release()
        else:  # UnsafeMetrics
            for column, value in changes:
                cells[base + column] = value

    def add(self, worker: int, /, **deltas: int) -> None:
        worker = _row(worker, self.workers)
        changes = _changes(self._columns, deltas)
        if worker not in self._mine:
            self._claim(worker)
        base = worker * self._stride
        # Only this process writes the row: reading it here races with nobody.
        row = self._cells[base : base + self._stride]
        self._write(base, _added(self._names, row, changes))

    def set(self, worker: int, /, **values: int) -> None:
        worker = _row(worker, self.workers)
        changes = _changes(self._columns, values)
        _check_values(self._names, changes)
        if worker not in self._mine:
            self._claim(worker)
        self._write(worker * self._stride, changes)

    def _rows(self) -> list[list[int]]:
        """Every row, each one consistent, without field names."""
        self._check_open()
        cells, stride = self._cells, self._stride
        if self.sync == "lock":
            rows = []
            for worker, lock in enumerate(self._row_locks):  # type: ignore[arg-type]
                _acquire(lock, self._timeout, "row lock")
                try:
                    rows.append(cells[worker * stride + 1 : (worker + 1) * stride])
                finally:
                    lock.release()
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
        while True:
            row: list[int] = cells[base:end]
            if not row[0] & 1 and cells[base] == row[0]:
                return row[1:]
            attempts += 1
            if attempts % 64 == 0:
                # The writer may be descheduled mid-update: let it run.
                if hasattr(os, "sched_yield"):
                    os.sched_yield()
                now = time.monotonic()
                if deadline is None:
                    deadline = now + (self._timeout if self._timeout is not None else 1e9)
                elif now > deadline:
                    raise TimeoutError(
                        f"row {base // self._stride} stayed mid-update for {self._timeout} s "
                        "(its writer may have died)"
                    )

    def snapshot(self) -> list[dict[str, int]]:
        fields = self.fields
        return [dict(zip(fields, row, strict=True)) for row in self._rows()]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None
        # Drop the shared objects: their memory and semaphores go with the
        # last handle, in whichever process that is.
        self._cells = self._writers = self._claim_lock = self._row_locks = None


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


# Queue way: messages from workers to the owner process.
_ADD = "add"
_SET = "set"
_SNAPSHOT = "snapshot"
_STOP = "stop"

#: Seconds between the owner's checks that its creator is still alive.
_IDLE_CHECK = 1.0


def _queue_owner(
    requests: Any, replies: Any, workers: int, fields: tuple[str, ...], creator: int
) -> None:
    """Owner process of a :class:`QueueMetrics`: applies messages in order."""
    rows = [[0] * len(fields) for _ in range(workers)]
    rejected: list[str] = []
    while True:
        try:
            message = requests.get(timeout=_IDLE_CHECK)
        except queue.Empty:
            # Not os.getppid(): under forkserver the parent is the fork server.
            if not _alive(creator):  # the creator died without close()
                return
            continue
        kind = message[0]
        if kind == _ADD:
            row = rows[message[1]]
            try:
                new = _added(fields, row, message[2])
            except OverflowError as error:
                rejected.append(str(error))
            else:
                for column, value in new:
                    row[column] = value
        elif kind == _SET:
            row = rows[message[1]]
            for column, value in message[2]:
                row[column] = value
        elif kind == _SNAPSHOT:
            if rejected:
                text = f"{rejected[0]} ({len(rejected) - 1} more adds were refused too)"
                replies.put((message[1], None, text))
                rejected = []
            else:
                replies.put((message[1], rows, None))
        elif kind == _STOP:
            replies.put((message[1], None, None))
            return


class QueueMetrics(_Board):
    """Rows held by an owner process, updated by messages on a Queue.

    ``add`` and ``set`` check their input, put one message and return
    without waiting; the owner applies each message whole, so rows are
    always consistent, and ``snapshot`` (a request and its reply) is a
    snapshot of the whole board at one moment. A process's messages arrive
    in the order it sent them, so ``snapshot`` sees every update made before
    it *by the same process*; another process's updates are seen once that
    process has itself called ``snapshot`` after them, or has exited. Any
    process may write any row.

    Part of the contract it cannot keep: ``add`` does not wait, so a field
    that would overflow is not reported by that ``add``. The owner refuses
    it (the row is unchanged) and the next ``snapshot`` raises
    ``OverflowError``. If the owner dies, ``snapshot`` raises
    ``TimeoutError`` after ``timeout`` seconds.

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
        context = _context(ctx)
        self._columns = {name: column for column, name in enumerate(self.fields)}
        self._requests = context.Queue()
        self._replies = context.Queue()
        # One reply queue for all readers: a reader holds this lock from its
        # request to its reply, so it cannot take another reader's reply.
        self._reply_lock = context.Lock()
        self._timeout = timeout
        self._creator = os.getpid()
        self._sequence = 0
        self._owner: Any = context.Process(
            target=_queue_owner,
            args=(self._requests, self._replies, self.workers, self.fields, os.getpid()),
            name="shmref-metrics-owner",
            daemon=True,
        )
        self._owner.start()

    def __getstate__(self) -> dict[str, Any]:
        self._check_open()
        state = self.__dict__.copy()
        state["_owner"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def add(self, worker: int, /, **deltas: int) -> None:
        worker = _row(worker, self.workers)
        changes = _changes(self._columns, deltas)
        if self._closed:
            self._check_open()
        self._requests.put((_ADD, worker, changes))

    def set(self, worker: int, /, **values: int) -> None:
        worker = _row(worker, self.workers)
        changes = _changes(self._columns, values)
        _check_values(self.fields, changes)
        if self._closed:
            self._check_open()
        self._requests.put((_SET, worker, changes))

    def _request(self, kind: str) -> Any:
        _acquire(self._reply_lock, self._timeout, "reply lock")
        try:
            self._sequence += 1
            token = (os.getpid(), id(self), self._sequence)
            self._requests.put((kind, token))
            while True:
                try:
                    answer, rows, refused = self._replies.get(timeout=self._timeout)
                except queue.Empty:
                    raise TimeoutError(
                        f"no reply from the board's owner within {self._timeout} s"
                    ) from None
                # A reply for a reader that timed out earlier: nobody waits for it.
                if answer == token:
                    break
        finally:
            self._reply_lock.release()
        if refused is not None:
            raise OverflowError(refused)
        return rows

    def snapshot(self) -> list[dict[str, int]]:
        self._check_open()
        fields = self.fields
        return [dict(zip(fields, row, strict=True)) for row in self._request(_SNAPSHOT)]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        owner, self._owner = self._owner, None
        if owner is None or os.getpid() != self._creator:
            return  # another process's handle: detach only
        try:
            if owner.is_alive():
                self._request(_STOP)
        except TimeoutError:
            pass  # killed below
        finally:
            owner.join(self._timeout)
            if owner.is_alive():
                owner.kill()
                owner.join()
            owner.close()
            for q in (self._requests, self._replies):
                q.close()
                q.join_thread()


class _BoardState:
    """The rows, living in a manager's server process.

    The server serves each client connection in a thread of its own, so two
    processes' calls can run at once: the lock makes each one whole.
    """

    def __init__(self, workers: int, fields: tuple[str, ...]) -> None:
        self._fields = fields
        self._rows = [[0] * len(fields) for _ in range(workers)]
        self._lock = threading.Lock()

    def add(self, worker: int, changes: tuple[tuple[int, int], ...]) -> None:
        with self._lock:
            row = self._rows[worker]
            for column, value in _added(self._fields, row, changes):
                row[column] = value

    def set(self, worker: int, changes: tuple[tuple[int, int], ...]) -> None:
        with self._lock:
            row = self._rows[worker]
            for column, value in changes:
                row[column] = value

    def snapshot(self) -> list[list[int]]:
        with self._lock:
            return [row[:] for row in self._rows]


class MetricsManager(BaseManager):
    """A manager whose ``Board(workers, fields)`` is a board living in its server."""


MetricsManager.register("Board", _BoardState, exposed=("add", "set", "snapshot"))


class ManagerMetrics(_Board):
    """Rows living in a Manager server; every call is one round trip.

    The server applies each ``add`` and ``set`` whole and copies the rows
    for ``snapshot`` under one lock, so rows are always consistent and a
    snapshot is of the whole board at one moment. Every call returns once
    the server has applied it, so ``snapshot`` sees every update that has
    returned in any process. Any process may write any row. Pass a started
    :class:`MetricsManager` as ``manager`` to share one server; otherwise
    each board starts its own. A dead server makes calls fail at once
    (``EOFError`` or ``ConnectionError``) rather than hang.

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
    ) -> None:
        self.workers, self.fields = _shape(workers, fields)
        self._columns = {name: column for column, name in enumerate(self.fields)}
        self._manager: MetricsManager | None = None
        self._creator = os.getpid()
        if manager is None:
            manager = self._manager = MetricsManager(ctx=_context(ctx))
            manager.start()
        self._proxy: Any = manager.Board(self.workers, self.fields)  # type: ignore[attr-defined]

    def __getstate__(self) -> dict[str, Any]:
        self._check_open()
        return {"workers": self.workers, "fields": self.fields, "proxy": self._proxy}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.workers, self.fields = state["workers"], state["fields"]
        self._columns = {name: column for column, name in enumerate(self.fields)}
        self._proxy = state["proxy"]
        self._manager = None

    def add(self, worker: int, /, **deltas: int) -> None:
        worker = _row(worker, self.workers)
        changes = _changes(self._columns, deltas)
        if self._closed:
            self._check_open()
        self._proxy.add(worker, changes)

    def set(self, worker: int, /, **values: int) -> None:
        worker = _row(worker, self.workers)
        changes = _changes(self._columns, values)
        _check_values(self.fields, changes)
        if self._closed:
            self._check_open()
        self._proxy.set(worker, changes)

    def snapshot(self) -> list[dict[str, int]]:
        self._check_open()
        fields = self.fields
        return [dict(zip(fields, row, strict=True)) for row in self._proxy.snapshot()]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._proxy = None  # the server drops its object before it stops
        # A forked child holds a copy of the creator's manager: not its to stop.
        if self._manager is not None and os.getpid() == self._creator:
            self._manager.shutdown()
            self._manager = None


# Process targets and the example's monitor loop.


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


def equal_fields_writer(
    board: MetricsBoard,
    worker: int,
    n: int,
    stop: Any = None,
    barrier: Any = None,
    timeout: float = 60.0,
) -> None:
    """Process target: ``n`` times, set every field of the row to ``i``.

    A row in which the fields differ is a row read half-way through a
    ``set``. Stops early once ``stop.value`` is true (a shared ``c_bool``);
    with a ``barrier``, waits on it before the first ``set`` and after the
    last. Closes the process's handle at the end.
    """
    if barrier is not None:
        barrier.wait(timeout)
    fields, set_row = board.fields, board.set
    for i in range(1, n + 1):
        set_row(worker, **dict.fromkeys(fields, i))
        if stop is not None and stop.value:
            break
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


WAYS: dict[str, Callable[..., MetricsBoard]] = {
    "ctypes": CtypesMetrics,
    "queue": QueueMetrics,
    "manager": ManagerMetrics,
}


def _main(argv: list[str]) -> int:
    """``python -m shmref.metrics [ctypes|queue|manager] [TASKS]``."""
    way = argv[0] if argv else "ctypes"
    tasks = int(argv[1]) if len(argv) > 1 else 10_000
    if way not in WAYS:
        print(f"usage: python -m shmref.metrics [{'|'.join(WAYS)}] [TASKS]", file=sys.stderr)
        return 2
    ctx = multiprocessing.get_context("spawn")
    with WAYS[way](workers=4, ctx=ctx) as board:
        workers = [
            ctx.Process(target=metrics_worker, args=(board, worker, tasks)) for worker in range(4)
        ]
        for process in workers:
            process.start()
        monitor(board, workers)
        for number, row in enumerate(board.snapshot()):
            print(f"worker {number}: {row}")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
