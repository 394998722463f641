"""A shared integer counter, three ways.

Every class here implements :class:`Counter`: ``add(n=1)``, ``get()``,
``close()`` and the context-manager protocol, for a signed 64-bit total.

* ctypes shared memory: :class:`CtypesCounter` (one ``multiprocessing.Value``
  and its lock) and :class:`SlotCounter` (lock-free, one slot per writer);
* message passing: :class:`QueueCounter` (an owner process applies the
  messages that writers put on a ``multiprocessing.Queue``);
* a Manager server: :class:`ManagerCounter` (``add`` runs in the server, one
  round trip per call).

:class:`NaiveManagerCounter` and :class:`UnsafeCounter` are the patterns
people write by hand, kept to measure and to show what goes wrong.

Objects pass to child processes as ``Process`` arguments under every start
method. The process that creates a counter owns it: its ``close()`` releases
the owner process or server; ``close()`` in another process only detaches
that process's handle. This module imports only the standard library: copy it
alone into a project and it works.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import queue
import threading
import weakref
from multiprocessing import util
from multiprocessing.context import BaseContext
from multiprocessing.managers import BaseManager, SyncManager
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "Counter",
    "CounterManager",
    "CtypesCounter",
    "ManagerCounter",
    "NaiveManagerCounter",
    "QueueCounter",
    "SlotCounter",
    "UnsafeCounter",
    "add_worker",
]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

#: Seconds a call waits for a lock or a reply before raising TimeoutError.
#: Long enough for a loaded machine, short enough that a dead peer is noticed.
DEFAULT_TIMEOUT = 30.0


@runtime_checkable
class Counter(Protocol):
    """What every counter in this module guarantees.

    ``add(n)`` adds the int ``n``; ``get()`` returns the total. A ``bool``,
    ``float`` or ``str`` increment raises ``TypeError``; a total that would
    leave the signed 64-bit range raises ``OverflowError`` and leaves the
    total as it was. After ``close()`` both raise ``ValueError``; ``close()``
    may be called again.
    """

    def add(self, n: int = 1) -> None: ...

    def get(self) -> int: ...

    def close(self) -> None: ...

    def __enter__(self) -> Counter: ...

    def __exit__(self, *exc: object) -> None: ...


def _increment(n: object) -> int:
    # bool is an int subclass; counting True as 1 is almost always a bug.
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"increment must be an int, not {type(n).__name__}")
    return int(n)


def _initial(value: object) -> int:
    value = _increment(value)
    if value > INT64_MAX or value < INT64_MIN:
        raise OverflowError(f"initial value {value} is outside the signed 64-bit range")
    return value


def _overflow(total: int, n: int) -> OverflowError:
    return OverflowError(
        f"{total} + {n} is outside the signed 64-bit range; the counter is unchanged"
    )


def _context(ctx: BaseContext | None) -> Any:
    # Any: typeshed's BaseContext lacks Process, and the shared objects it
    # makes are replaced by None on close().
    return ctx if ctx is not None else multiprocessing.get_context()


def _acquire(lock: Any, timeout: float | None, what: str) -> None:
    if not lock.acquire(timeout=timeout):
        raise TimeoutError(f"{what} not acquired within {timeout} s (a holder may have died)")


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


class CtypesCounter(_Closable):
    """A 64-bit ``multiprocessing.Value`` guarded by its lock.

    Guarantees: every ``add`` is atomic; ``get`` returns the total after the
    last ``add`` to complete in any process. Cost: one uncontended lock
    round trip per call; under contention the writers queue on that lock.
    If a process dies while holding the lock (it holds it for nanoseconds),
    other callers raise ``TimeoutError`` after ``timeout`` seconds.

    >>> from shmref.counter import CtypesCounter
    >>> with CtypesCounter() as c:
    ...     c.add(2)
    ...     c.add(-5)
    ...     c.get()
    -3
    """

    def __init__(
        self,
        value: int = 0,
        *,
        ctx: BaseContext | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        ctx = _context(ctx)
        # A plain Lock, not Value's default RLock: add() never re-enters.
        self._shared = ctx.Value(ctypes.c_int64, _initial(value), lock=ctx.Lock())
        self._timeout = timeout
        self._attach()

    def _attach(self) -> None:
        # Keep the raw ctypes object: Value's own .value property takes the
        # lock again on every read and write.
        self._lock = self._shared.get_lock()
        self._raw = self._shared.get_obj()

    def __getstate__(self) -> dict[str, Any]:
        self._check_open()
        return {"shared": self._shared, "timeout": self._timeout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._shared = state["shared"]
        self._timeout = state["timeout"]
        self._attach()

    def add(self, n: int = 1) -> None:
        if n.__class__ is not int:
            n = _increment(n)
        if self._closed:
            self._check_open()
        _acquire(self._lock, self._timeout, "counter lock")
        try:
            total = self._raw.value + n
            if total > INT64_MAX or total < INT64_MIN:
                raise _overflow(self._raw.value, n)
            self._raw.value = total
        finally:
            self._lock.release()

    def get(self) -> int:
        self._check_open()
        _acquire(self._lock, self._timeout, "counter lock")
        try:
            return int(self._raw.value)
        finally:
            self._lock.release()

    def close(self) -> None:
        # Drop the shared objects: their memory and semaphores go with the
        # last handle, in whichever process that is.
        self._closed = True
        self._shared = self._lock = self._raw = None


# Slots claimed in a parent are not the child's after fork(): forget them.
_slot_holders: weakref.WeakSet[SlotCounter] = weakref.WeakSet()


def _forget_slots() -> None:
    for counter in list(_slot_holders):
        counter._slot = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_slots)


#: int64 items per slot: 64 bytes, the cache line of x86-64 and most AArch64.
_STRIDE = 8


class SlotCounter(_Closable):
    """A lock-free counter: one ``RawArray`` slot per writing process.

    The first ``add`` in a process claims a free slot (under a lock, once);
    after that the process only ever writes its own slot, and ``get`` sums
    all slots. No lock is needed because each slot has exactly one writer:
    the read-modify-write of a slot cannot interleave with another write to
    it, and an aligned 8-byte store is seen whole by readers on x86-64 and
    AArch64, so ``get`` never reads a torn slot.

    It breaks when two writers share a slot: two threads of one process
    calling ``add`` on the same handle lose updates, exactly like
    :class:`UnsafeCounter`. Give each thread its own process or use
    :class:`CtypesCounter`.

    ``get`` is not a snapshot: it sums slots one by one while writers go on,
    so it returns a total that includes every ``add`` completed before the
    call started, plus some of the concurrent ones. ``OverflowError`` is
    raised when the writer's own slot would leave the 64-bit range; ``get``
    returns the exact sum as a Python int. At most ``slots`` processes can
    ever write; the next one gets ``RuntimeError``.

    >>> from shmref.counter import SlotCounter
    >>> with SlotCounter(slots=4) as c:
    ...     c.add(3)
    ...     c.get()
    3
    """

    def __init__(
        self,
        value: int = 0,
        *,
        slots: int = 64,
        ctx: BaseContext | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
            raise ValueError(f"slots must be a positive int, not {slots!r}")
        ctx = _context(ctx)
        # Slot 0 holds the initial value and is never written again. Each
        # slot has a cache line of its own: writers on different cores would
        # otherwise keep stealing one line from each other (false sharing).
        self._slots = ctx.RawArray(ctypes.c_int64, (slots + 1) * _STRIDE)
        self._slots[0] = _initial(value)
        self._next_slot = ctx.Value(ctypes.c_int64, 1, lock=ctx.Lock())
        self._timeout = timeout
        self._slot: int | None = None
        _slot_holders.add(self)

    def __getstate__(self) -> dict[str, Any]:
        self._check_open()
        return {"slots": self._slots, "next": self._next_slot, "timeout": self._timeout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._slots = state["slots"]
        self._next_slot = state["next"]
        self._timeout = state["timeout"]
        self._slot = None
        _slot_holders.add(self)

    def _claim(self) -> int:
        self._check_open()
        lock = self._next_slot.get_lock()
        _acquire(lock, self._timeout, "slot lock")
        try:
            slot = self._next_slot.get_obj().value
            if slot >= len(self._slots) // _STRIDE:
                raise RuntimeError(f"all {len(self._slots) // _STRIDE - 1} slots are claimed")
            self._next_slot.get_obj().value = slot + 1
        finally:
            lock.release()
        self._slot = slot * _STRIDE  # the slot's index in the array
        return self._slot

    def add(self, n: int = 1) -> None:
        if n.__class__ is not int:
            n = _increment(n)
        slot = self._slot
        if slot is None:
            slot = self._claim()
        slots = self._slots
        total = slots[slot] + n
        if total > INT64_MAX or total < INT64_MIN:
            raise _overflow(slots[slot], n)
        slots[slot] = total

    def get(self) -> int:
        self._check_open()
        return sum(self._slots[::_STRIDE])

    def close(self) -> None:
        self._closed = True
        self._slot = None
        self._slots = self._next_slot = None


# Queue way: messages from writers to the owner process. An add is a bare int
# (the cheapest message to pickle); anything else is a tuple.
_GET = "get"
_STOP = "stop"


def _queue_owner(requests: Any, replies: Any, total: int) -> None:
    """Owner process of a :class:`QueueCounter`: applies messages in order."""
    # The creator, watched through its sentinel: under forkserver os.getppid()
    # is the fork server, not the creator.
    creator = multiprocessing.parent_process()
    rejected: list[int] = []
    while True:
        try:
            message = requests.get(timeout=1.0)
        except queue.Empty:
            if creator is not None and not creator.is_alive():  # died without close()
                return
            continue
        if message.__class__ is int:
            new = total + message
            if INT64_MIN <= new <= INT64_MAX:
                total = new
            else:
                rejected.append(message)
        elif message[0] == _GET:
            if rejected:
                text = f"add({rejected[0]}) and {len(rejected) - 1} more were rejected"
                replies.put((message[1], _overflow(total, rejected[0]), text))
                rejected = []
            else:
                replies.put((message[1], total, None))
        elif message[0] == _STOP:
            replies.put((message[1], total, None))
            return


class _Pending:
    """Adds buffered in one process by a batching :class:`QueueCounter`."""

    def __init__(self, requests: Any) -> None:
        self.requests = requests
        self.total = 0
        self.count = 0

    def flush(self) -> None:
        if self.count:
            total, self.total, self.count = self.total, 0, 0
            self.requests.put(total)


_queue_handles: weakref.WeakSet[QueueCounter] = weakref.WeakSet()


def _forget_pending() -> None:
    # The parent's buffered adds are the parent's to send, not the child's.
    for counter in list(_queue_handles):
        counter._pending = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pending)


class QueueCounter(_Closable):
    """A total owned by one process, updated by messages on a Queue.

    ``add`` puts a message and returns without waiting for the owner; ``get``
    sends a request and waits for the reply. One queue carries both, and a
    process's messages arrive in the order it sent them, so ``get`` returns
    a value that includes every ``add`` that returned before it *in the same
    process*. An ``add`` in another process is included only once that
    process has itself called ``get`` (or ``flush``) after it.

    With ``batch=k`` a process sums up to ``k`` adds locally and sends one
    message; ``get``, ``flush``, ``close`` and the process's normal exit send
    the rest. A process killed with SIGKILL loses its unsent adds. The owner
    checks the 64-bit range once per message, on the batch's sum.

    Part of the contract it cannot keep: ``add`` does not wait, so a total
    that would overflow is not reported by that ``add``. The owner refuses
    it (the total is unchanged) and the next ``get`` raises ``OverflowError``.

    >>> from shmref.counter import QueueCounter
    >>> with QueueCounter() as c:
    ...     c.add(2)
    ...     c.get()
    2
    """

    def __init__(
        self,
        value: int = 0,
        *,
        batch: int = 1,
        ctx: BaseContext | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be a positive int, not {batch!r}")
        value = _initial(value)
        context = _context(ctx)
        self._requests = context.Queue()
        self._replies = context.Queue()
        # One reply queue for all readers: a reader holds this lock from its
        # request to its reply, so it cannot take another reader's reply.
        self._reply_lock = context.Lock()
        self._batch = batch
        self._timeout = timeout
        self._creator = os.getpid()
        self._sequence = 0
        self._pending: _Pending | None = None
        self._owner: Any = context.Process(
            target=_queue_owner,
            args=(self._requests, self._replies, value),
            name="shmref-counter-owner",
            daemon=True,
        )
        self._owner.start()
        _queue_handles.add(self)

    def __getstate__(self) -> dict[str, Any]:
        self._check_open()
        state = self.__dict__.copy()
        state.update(_owner=None, _pending=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        _queue_handles.add(self)

    def add(self, n: int = 1) -> None:
        if n.__class__ is not int:
            n = _increment(n)
        if self._closed:
            self._check_open()
        if self._batch == 1:
            self._requests.put(n)
            return
        pending = self._pending
        if pending is None:
            pending = self._pending = _Pending(self._requests)
            # Runs at this process's normal exit, and if the handle is dropped;
            # before the Queue's own exit finalizer (priority 10) closes it.
            util.Finalize(self, pending.flush, exitpriority=20)
        if not INT64_MIN <= pending.total + n <= INT64_MAX:
            # Send what is buffered first, so that the owner refuses only
            # the add that overflows, not the ones batched before it.
            pending.flush()
        pending.total += n
        pending.count += 1
        if pending.count >= self._batch:
            pending.flush()

    def flush(self) -> None:
        """Send this process's buffered adds to the owner now."""
        self._check_open()
        if self._pending is not None:
            self._pending.flush()

    def _request(self, kind: str) -> int:
        self.flush()
        _acquire(self._reply_lock, self._timeout, "reply lock")
        try:
            self._sequence += 1
            token = (os.getpid(), id(self), self._sequence)
            self._requests.put((kind, token))
            while True:
                try:
                    answer, value, text = self._replies.get(timeout=self._timeout)
                except queue.Empty:
                    raise TimeoutError(
                        f"no reply from the counter's owner within {self._timeout} s"
                    ) from None
                # A reply for a reader that timed out earlier: nobody waits for it.
                if answer == token:
                    break
        finally:
            self._reply_lock.release()
        if isinstance(value, OverflowError):
            raise OverflowError(f"{value} ({text})")
        return int(value)

    def get(self) -> int:
        self._check_open()
        return self._request(_GET)

    def close(self) -> None:
        if self._closed:
            return
        stopped = False
        try:
            mine = os.getpid() == self._creator and self._owner is not None
            if mine and self._owner.is_alive():
                self._request(_STOP)
                stopped = True
        finally:
            self._closed = True
            if self._owner is not None and os.getpid() == self._creator:
                self._owner.join(self._timeout if stopped else 0)
                if self._owner.is_alive():
                    self._owner.kill()
                    self._owner.join()
                self._owner.close()
                self._owner = None
                for q in (self._requests, self._replies):
                    if not stopped:
                        # Nobody will read what is still buffered: do not
                        # wait for the feeder thread to write it.
                        q.cancel_join_thread()
                    q.close()
                    q.join_thread()
            elif self._pending is not None:
                self._pending.flush()


class _CounterState:
    """The total, living in a manager's server process."""

    def __init__(self, value: int = 0) -> None:
        self._value = value
        # The server serves each client connection in a thread of its own:
        # without this lock two processes' adds could interleave.
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            total = self._value + n
            if total > INT64_MAX or total < INT64_MIN:
                raise _overflow(self._value, n)
            self._value = total

    def get(self) -> int:
        return self._value


class CounterManager(BaseManager):
    """A manager whose ``Counter(value)`` is a counter living in its server."""


CounterManager.register("Counter", _CounterState, exposed=("add", "get"))


class ManagerCounter(_Closable):
    """A counter living in a Manager server; every call is one round trip.

    ``add`` runs in the server under a lock (the server answers each client
    connection in a thread of its own), so every ``add`` is atomic and
    ``get`` sees every ``add`` that has returned in any process. Pass a
    started :class:`CounterManager` as ``manager`` to share one server
    between counters; otherwise each counter starts its own. A dead server
    makes calls fail at once (``EOFError`` or ``ConnectionError``) rather
    than hang. The server could run on another
    host; this class starts it locally.

    >>> from shmref.counter import ManagerCounter
    >>> with ManagerCounter(5) as c:
    ...     c.add()
    ...     c.get()
    6
    """

    def __init__(
        self,
        value: int = 0,
        *,
        manager: CounterManager | None = None,
        ctx: BaseContext | None = None,
    ) -> None:
        value = _initial(value)
        self._manager: CounterManager | None = None
        self._creator = os.getpid()
        if manager is None:
            manager = self._manager = CounterManager(ctx=_context(ctx))
            manager.start()
        self._proxy: Any = manager.Counter(value)  # type: ignore[attr-defined]

    def __getstate__(self) -> dict[str, Any]:
        self._check_open()
        return {"proxy": self._proxy}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._proxy = state["proxy"]
        self._manager = None

    def add(self, n: int = 1) -> None:
        if n.__class__ is not int:
            n = _increment(n)
        if self._closed:
            self._check_open()
        self._proxy.add(n)

    def get(self) -> int:
        self._check_open()
        return int(self._proxy.get())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._proxy = None  # the server drops its object before it stops
        # A forked child holds a copy of the creator's manager: not its to stop.
        if self._manager is not None and os.getpid() == self._creator:
            self._manager.shutdown()
            self._manager = None


class NaiveManagerCounter(_Closable):
    """Anti-pattern kept for measurement: ``manager.Value`` + ``manager.Lock``.

    This is the code people write first::

        with lock:
            value.value = value.value + n

    It is correct, but every ``add`` makes four round trips to the server
    (acquire, read, write, release) where :class:`ManagerCounter` makes one.
    """

    def __init__(
        self,
        value: int = 0,
        *,
        ctx: BaseContext | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        value = _initial(value)
        self._creator = os.getpid()
        self._manager: SyncManager | None = SyncManager(ctx=_context(ctx))
        self._manager.start()
        self._value: Any = self._manager.Value("q", value)
        self._lock: Any = self._manager.Lock()
        self._timeout = timeout

    def __getstate__(self) -> dict[str, Any]:
        self._check_open()
        return {"_value": self._value, "_lock": self._lock, "_timeout": self._timeout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._manager = None

    def add(self, n: int = 1) -> None:
        n = _increment(n)
        self._check_open()
        _acquire(self._lock, self._timeout, "manager lock")
        try:
            total = self._value.value + n
            if total > INT64_MAX or total < INT64_MIN:
                raise _overflow(total - n, n)
            self._value.value = total
        finally:
            self._lock.release()

    def get(self) -> int:
        self._check_open()
        return int(self._value.value)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._value = self._lock = None
        if self._manager is not None and os.getpid() == self._creator:
            self._manager.shutdown()
            self._manager = None


class UnsafeCounter(_Closable):
    """The race, kept to show it: ``value.value = value.value + n``.

    ``multiprocessing.Value`` locks each read and each write, but not the
    pair: two processes read the same total, both add, and one write is
    lost. Do not use this; it exists so the documentation can show the race.
    """

    def __init__(self, value: int = 0, *, ctx: BaseContext | None = None) -> None:
        self._value = _context(ctx).Value(ctypes.c_int64, _initial(value))

    def __getstate__(self) -> dict[str, Any]:
        self._check_open()
        return {"value": self._value}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._value = state["value"]

    def add(self, n: int = 1) -> None:
        n = _increment(n)
        self._check_open()
        total = self._value.value + n  # another process may write here...
        if total > INT64_MAX or total < INT64_MIN:
            raise _overflow(total - n, n)
        self._value.value = total  # ...and this write erases its update

    def get(self) -> int:
        self._check_open()
        return int(self._value.value)

    def close(self) -> None:
        self._closed = True
        self._value = None


def add_worker(counter: Counter, n: int, barrier: Any = None, timeout: float = 60.0) -> None:
    """Process target: ``counter.add()`` ``n`` times.

    With a ``barrier``, wait on it before the first add (so that all workers
    start together) and after the last one, once ``get`` has confirmed that
    the owner holds every add of this process: a caller waiting on the same
    barrier times the work alone, without process start-up.
    """
    if barrier is not None:
        barrier.wait(timeout)
    add = counter.add
    for _ in range(n):
        add()
    counter.get()
    if barrier is not None:
        barrier.wait(timeout)
    counter.close()
