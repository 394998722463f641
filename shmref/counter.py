"""A shared integer counter, four ways.

Every class here implements :class:`Counter`: ``add(n=1)``, ``get()``,
``close()`` and the context-manager protocol, for a signed 64-bit total.

* ctypes shared memory: :class:`CtypesCounter` (one ``multiprocessing.Value``
  and its lock) and :class:`SlotCounter` (lock-free, one slot per writer);
* message passing: :class:`QueueCounter` (an owner process applies the
  messages that writers put on a ``multiprocessing.Queue``);
* a Manager server: :class:`ManagerCounter` (``add`` runs in the server, one
  round trip per call);
* a Redis server: :class:`RedisCounter` (``add`` is one ``INCRBY``, reachable
  from any host that can reach the server).

:class:`NaiveManagerCounter` and :class:`UnsafeCounter` are the patterns
people write by hand, kept to measure and to show what goes wrong.

Objects pass to child processes as ``Process`` arguments under every start
method. The process that creates a counter owns it: its ``close()`` releases
the owner process or server; ``close()`` in another process only detaches
that process's handle. This module imports only the standard library: copy it
alone into a project and it works (:class:`RedisCounter` imports the ``redis``
package when one is made).
"""

from __future__ import annotations

import ctypes
import threading
from multiprocessing import util
from multiprocessing.context import BaseContext
from multiprocessing.managers import BaseManager, SyncManager
from typing import Any, Protocol, runtime_checkable

from shmref.holder import Holder
from shmref.keyspace import DEFAULT_URL, RedisHandle, Script, int64_pieces
from shmref.lifecycle import (
    DEFAULT_TIMEOUT,
    INT64_MAX,
    INT64_MIN,
    Closable,
    acquire,
    context,
    integer,
    reset_after_fork,
    seconds,
)
from shmref.owner import Owner
from shmref.server import ManagerHandle, Served, Server, register_state

__all__ = [
    "DEFAULT_TIMEOUT",
    "INT64_MAX",
    "INT64_MIN",
    "Counter",
    "CounterManager",
    "CtypesCounter",
    "ManagerCounter",
    "NaiveManagerCounter",
    "QueueCounter",
    "RedisCounter",
    "SlotCounter",
    "UnsafeCounter",
    "add_worker",
]


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

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None: ...


def _increment(n: object) -> int:
    # bool is an int subclass; counting True as 1 is almost always a bug.
    return integer(n, "increment")


def _initial(value: object) -> int:
    value = _increment(value)
    if value > INT64_MAX or value < INT64_MIN:
        raise OverflowError(f"initial value {value} is outside the signed 64-bit range")
    return value


def _overflow(total: int, n: int) -> OverflowError:
    return OverflowError(
        f"{total} + {n} is outside the signed 64-bit range; the counter is unchanged"
    )


class CtypesCounter(Closable):
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
        self._timeout = seconds(timeout)
        ctx = context(ctx)
        self._raw = ctx.RawValue(ctypes.c_int64, _initial(value))
        # A plain Lock, not Value's default RLock (add() never re-enters),
        # that a waiter takes over if its holder dies inside add().
        self._holder: Any = Holder(ctx)
        self._attach()

    def _attach(self) -> None:
        self._lock = self._holder.lock
        self._record: Any = self._holder.record

    def __getstate__(self) -> dict[str, Any]:
        self._check_open()
        return {"raw": self._raw, "holder": self._holder, "timeout": self._timeout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._raw = state["raw"]
        self._holder = state["holder"]
        self._timeout = state["timeout"]
        self._attach()

    def add(self, n: int = 1) -> None:
        # Read before the check: a close() in another thread drops them. One
        # load per line: a 4-tuple assignment builds and unpacks a tuple.
        lock = self._lock
        raw = self._raw
        holder = self._holder
        record = self._record
        if self._closed:
            self._refuse()
        if n.__class__ is not int:
            n = _increment(n)
        # One try, taking the lock included (see shmref.holder): an
        # exception anywhere, a KeyboardInterrupt too, gives the lock back.
        try:
            if not lock.acquire(False):
                holder.wait(self._timeout, "counter lock", self)
            record[0] = holder.pid
            total = raw.value + n
            if total > INT64_MAX or total < INT64_MIN:
                raise _overflow(raw.value, n)
            raw.value = total
            record[0] = 0
            lock.release()
        except BaseException:
            holder.abandon()
            raise

    def get(self) -> int:
        # No lock: an aligned 8-byte load is never torn on x86-64 and AArch64,
        # and it sees every add completed before it.
        raw = self._raw
        if self._closed:
            self._refuse()
        return int(raw.value)

    def _release(self) -> None:
        # Drop the shared objects: their memory and semaphores go with the
        # last handle, in whichever process that is.
        self._raw = self._lock = self._holder = self._record = None


#: int64 items per slot: 64 bytes, the cache line of x86-64 and most AArch64.
_STRIDE = 8


def _safe_slot(initial: int, slots: int) -> tuple[int, int]:
    """The range every slot may stay in without the sum leaving the 64-bit range.

    Both ends are kept, not one bound and its negation: negating a large int
    in ``add`` would allocate a new one on every call.
    """
    safe = (INT64_MAX - abs(initial)) // slots
    return -safe, safe


class SlotCounter(Closable):
    """A lock-free counter: one ``RawArray`` slot per writing process.

    The first ``add`` in a process claims a free slot (under a lock, once:
    a process killed while it claims leaves that lock to be taken over, as
    the internal locks of the ctypes ways are);
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
    call started, plus some of the concurrent ones. ``add`` raises
    ``OverflowError`` when its own slot would leave the 64-bit range, and,
    once its slot is so large that the sum of all slots could, when the sum
    would; two
    processes adding at once past the limit can both pass that check, and
    then ``get`` raises ``OverflowError`` rather than return a total the
    other ways cannot hold. At most ``slots`` processes can ever write; the
    next one gets ``RuntimeError``.

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
        slots = _slot_count(slots)
        self._timeout = seconds(timeout)
        ctx = context(ctx)
        # Slot 0 holds the initial value and is never written again. Each
        # slot has a cache line of its own: writers on different cores would
        # otherwise keep stealing one line from each other (false sharing).
        self._slots = ctx.RawArray(ctypes.c_int64, (slots + 1) * _STRIDE)
        self._slots[0] = _initial(value)
        # The next free slot, and the lock its claims take: a Holder, so that
        # a process killed while it claims does not keep every later one out.
        self._next_slot = ctx.RawValue(ctypes.c_int64, 1)
        self._claims = Holder(ctx)
        self._slot: int | None = None
        self._low, self._high = _safe_slot(self._slots[0], slots)
        reset_after_fork(self)

    def __getstate__(self) -> dict[str, Any]:
        self._check_open()
        return {
            "slots": self._slots,
            "next": self._next_slot,
            "claims": self._claims,
            "timeout": self._timeout,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._slots = state["slots"]
        self._next_slot = state["next"]
        self._claims = state["claims"]
        self._timeout = state["timeout"]
        self._slot = None
        self._low, self._high = _safe_slot(self._slots[0], len(self._slots) // _STRIDE - 1)
        reset_after_fork(self)

    def _after_fork(self) -> None:
        self._slot = None  # the parent's slot, not this child's

    def _claim(self) -> int:
        if self._closed:
            self._refuse()
        claims = self._claims
        try:
            claims.enter(self._timeout, "slot lock", self)
            slot = self._next_slot.value
            if slot >= len(self._slots) // _STRIDE:
                raise RuntimeError(f"all {len(self._slots) // _STRIDE - 1} slots are claimed")
            # One store: a claimer killed around it took the slot or did not.
            self._next_slot.value = slot + 1
            claims.leave()
        except BaseException:
            claims.abandon()
            raise
        self._slot = slot * _STRIDE  # the slot's index in the array
        return self._slot

    def add(self, n: int = 1) -> None:
        slot = self._slot
        if slot is None:  # the first add in this process, or a closed handle
            slot = self._claim()
        if n.__class__ is not int:
            n = _increment(n)
        slots = self._slots
        total = slots[slot] + n
        if self._low <= total <= self._high:
            slots[slot] = total  # even with every slot this full, the sum fits
            return
        if total > INT64_MAX or total < INT64_MIN:
            raise _overflow(slots[slot], n)
        whole = sum(slots[::_STRIDE])
        if not INT64_MIN <= whole + n <= INT64_MAX:
            raise _overflow(whole, n)
        slots[slot] = total

    def get(self) -> int:
        if self._closed:
            self._refuse()
        total = sum(self._slots[::_STRIDE])
        if not INT64_MIN <= total <= INT64_MAX:
            raise OverflowError(
                f"the slots sum to {total}, outside the signed 64-bit range "
                "(two processes added past the limit at once)"
            )
        return total

    def _release(self) -> None:
        self._slot = None
        self._slots = self._next_slot = None
        self._claims = None  # type: ignore[assignment]


def _slot_count(slots: object) -> int:
    # The RawArray of slots must fit in memory: a million writers is plenty.
    if isinstance(slots, bool) or not isinstance(slots, int) or not 1 <= slots <= 2**20:
        raise ValueError(f"slots must be an int from 1 to {2**20}, not {slots!r}")
    return slots


class _Total:
    """The state a :class:`QueueCounter`'s owner process holds."""

    def __init__(self, value: int) -> None:
        self.total = value
        self.rejected: list[int] = []

    def add(self, n: int) -> None:
        new = self.total + n
        if INT64_MIN <= new <= INT64_MAX:
            self.total = new
        else:  # nobody waits for an add: the next get() reports it
            self.rejected.append(n)

    def get(self) -> int:
        if self.rejected:
            first, more = self.rejected[0], len(self.rejected) - 1
            self.rejected = []
            raise OverflowError(
                f"{_overflow(self.total, first)} (add({first}) and {more} more were rejected)"
            )
        return self.total


class _Pending:
    """Adds buffered in one process by a batching :class:`QueueCounter`."""

    def __init__(self, owner: Owner) -> None:
        self.owner = owner
        self.total = 0
        self.count = 0

    def flush(self) -> None:
        if self.count:
            total, self.total, self.count = self.total, 0, 0
            self.owner.send("add", total)


class QueueCounter(Closable):
    """A total owned by one process, updated by messages to it.

    ``add`` writes a message and returns without waiting for the owner to
    apply it; ``get`` sends a request and waits for the reply. Each process
    has a connection of its own to the owner (:mod:`shmref.owner`), and the
    owner answers a ``get`` only after applying what every process had sent,
    so ``get`` returns a total that includes every ``add`` that returned
    before it, in any process. While the owner is behind, ``add`` waits for
    room in its connection (at most ``timeout``), instead of queueing
    without bound.

    With ``batch=k`` a process sums up to ``k`` adds locally and sends one
    message; ``get``, ``flush``, ``close`` and the process's normal exit send
    the rest. A process killed with SIGKILL loses its unsent adds. The owner
    checks the 64-bit range once per message, on the batch's sum. If the
    owner dies, ``get`` raises :class:`~shmref.lifecycle.OwnerGone`.

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
        if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= 2**31:
            raise ValueError(f"batch must be an int from 1 to {2**31}, not {batch!r}")
        value = _initial(value)
        self._batch = batch
        self._owner = Owner(
            context(ctx), _Total, (value,), what="QueueCounter", timeout=seconds(timeout)
        )
        self._pending: _Pending | None = None
        reset_after_fork(self)

    def __getstate__(self) -> dict[str, Any]:
        self._check_open()
        return {"owner": self._owner, "batch": self._batch}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._owner = state["owner"]
        self._batch = state["batch"]
        self._pending = None
        reset_after_fork(self)

    def _after_fork(self) -> None:
        self._pending = None  # the parent's buffered adds are the parent's to send

    def add(self, n: int = 1) -> None:
        if self._closed:
            self._refuse()
        if n.__class__ is not int:
            n = _increment(n)
        if self._batch == 1:
            self._owner.send("add", n)
            return
        pending = self._pending
        if pending is None:
            pending = self._pending = _Pending(self._owner)
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

    def get(self) -> int:
        self.flush()
        return int(self._owner.call("get"))

    def _release(self) -> None:
        if self._pending is not None and not self._owner.gone():
            self._pending.flush()
        self._pending = None
        self._owner.close()


class _CounterState(Served):
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


register_state(CounterManager, "Counter", _CounterState)


class ManagerCounter(ManagerHandle):
    """A counter living in a Manager server; every call is one round trip.

    ``add`` runs in the server under a lock (the server answers each client
    connection in a thread of its own), so every ``add`` is atomic and
    ``get`` sees every ``add`` that has returned in any process. Pass a
    started :class:`CounterManager` as ``manager`` to share one server
    between counters; otherwise each counter starts its own. A dead server
    makes calls raise :class:`~shmref.lifecycle.OwnerGone` at once rather
    than hang; a server alive but not answering (stopped, hung), a
    ``TimeoutError`` after ``timeout`` seconds. Nothing here waits on a lock.

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
        timeout: float | None = DEFAULT_TIMEOUT,
        address: tuple[str, int] | None = None,
        authkey: bytes | None = None,
    ) -> None:
        value = _initial(value)
        self._server = self._serve(
            CounterManager, "Counter", (value,), manager, ctx, address, authkey, seconds(timeout)
        )
        self._publish()

    def __getstate__(self) -> dict[str, Any]:
        self._check_open()
        return {"server": self._server}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._server = state["server"]

    def add(self, n: int = 1) -> None:
        if self._closed:
            self._refuse()
        if n.__class__ is not int:
            n = _increment(n)
        self._server.call("add", n)

    def get(self) -> int:
        if self._closed:
            self._refuse()
        return int(self._server.answer("get"))

    def _release(self) -> None:
        self._server.close()


# KEYS[2] is the total; ARGV the increments of one add, all of one sign.
# The total leaves the 64-bit range at the first increment that would take
# it out (Redis refuses that INCRBY and changes nothing): then the others
# are undone, so the add happens whole or not at all.
_REDIS_ADD = Script(
    """
local before = redis.call('GET', KEYS[2])
for i = 1, #ARGV do
  local total = redis.pcall('INCRBY', KEYS[2], ARGV[i])
  if type(total) == 'table' then
    redis.call('SET', KEYS[2], before)
    if string.find(total.err, 'overflow') then
      return redis.error_reply('OVERFLOW ' .. before)
    end
    return total
  end
end
return 0
"""
)

_REDIS_GET = Script("return redis.call('GET', KEYS[2])")


class RedisCounter(RedisHandle):
    """A total in a Redis server; every call is one round trip to it.

    ``add`` is an ``INCRBY`` run by a Lua script, so it is atomic on the
    server, refuses a total outside the signed 64-bit range
    (``OverflowError``, the total unchanged), and ``get`` sees every ``add``
    that has returned, in any process on any host. Other processes attach
    with :meth:`connect` (``url`` and ``name``) or get the counter as a
    ``Process`` argument; the creator's ``close()`` deletes its keys. A
    server that is gone raises :class:`~shmref.lifecycle.OwnerGone`; one
    that does not answer within ``timeout`` seconds, ``TimeoutError``.

    Needs a running Redis server (``url``, default a local one) and the
    ``redis`` package (``pip install shmref[redis]``).

    Part of the contract it cannot keep: a creator killed without
    ``close()`` leaves its keys on the server.
    """

    def __init__(
        self,
        value: int = 0,
        *,
        url: str = DEFAULT_URL,
        name: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        self._create(url, name, timeout, initial={"total": _initial(value)})

    def add(self, n: int = 1) -> None:
        keyspace = self._keyspace
        if self._closed:
            self._refuse()
        if n.__class__ is not int:
            n = _increment(n)
        pieces = int64_pieces(n)
        if pieces is None:
            raise _overflow(self.get(), n)
        keyspace.run(
            _REDIS_ADD, ("total",), pieces, {"OVERFLOW": lambda total: _overflow(int(total), n)}
        )

    def get(self) -> int:
        keyspace = self._keyspace
        if self._closed:
            self._refuse()
        return int(keyspace.run(_REDIS_GET, ("total",)))


class NaiveManagerCounter(Closable):
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
        self._timeout = seconds(timeout)
        self._server = Server(
            SyncManager, "Value", ("q", value), what="NaiveManagerCounter", ctx=ctx
        )
        self._value: Any = self._server.proxy
        self._lock: Any = self._server.make("Lock")

    def __getstate__(self) -> dict[str, Any]:
        self._check_open()
        return {"server": self._server, "lock": self._lock, "timeout": self._timeout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._server = state["server"]
        self._value = self._server.proxy
        self._lock = state["lock"]
        self._timeout = state["timeout"]

    def add(self, n: int = 1) -> None:
        self._check_open()
        n = _increment(n)
        acquire(self._lock, self._timeout, "manager lock", self)
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

    def _release(self) -> None:
        self._value = self._lock = None
        self._server.close()


class UnsafeCounter(Closable):
    """The race, kept to show it: ``value.value = value.value + n``.

    ``multiprocessing.Value`` locks each read and each write, but not the
    pair: two processes read the same total, both add, and one write is
    lost. Do not use this; it exists so the documentation can show the race.
    """

    def __init__(self, value: int = 0, *, ctx: BaseContext | None = None) -> None:
        self._value = context(ctx).Value(ctypes.c_int64, _initial(value))

    def __getstate__(self) -> dict[str, Any]:
        self._check_open()
        return {"value": self._value}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._value = state["value"]

    def add(self, n: int = 1) -> None:
        self._check_open()
        n = _increment(n)
        total = self._value.value + n  # another process may write here...
        if total > INT64_MAX or total < INT64_MIN:
            raise _overflow(total - n, n)
        self._value.value = total  # ...and this write erases its update

    def get(self) -> int:
        self._check_open()
        return int(self._value.value)

    def _release(self) -> None:
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
