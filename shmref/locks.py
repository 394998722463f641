"""Lock, RLock and Semaphore between processes, four ways.

Every class here implements :class:`SyncPrimitive`: ``acquire(blocking=True,
timeout=None) -> bool``, ``release()``, the context-manager protocol (which
acquires and releases) and ``close()``, with the names and semantics of the
standard library's locks.

* ctypes shared memory: :class:`CtypesLock`, :class:`CtypesRLock` and
  :class:`CtypesSemaphore` wrap ``multiprocessing``'s semaphores, which live
  in shared memory; :class:`RobustLock` is a POSIX robust mutex, which the
  next acquirer takes over when its holder dies;
* message passing: :class:`QueueLock`, :class:`QueueRLock` and
  :class:`QueueSemaphore` live in an owner process, which grants and takes
  back tokens; acquire and release are requests to it;
* a Manager server: :class:`ManagerLock`, :class:`ManagerRLock` and
  :class:`ManagerSemaphore` are ``threading`` locks living in the server,
  one round trip per call;
* a Redis server: :class:`RedisLock`, :class:`RedisRLock` and
  :class:`RedisSemaphore` are tokens with leases, which their holders
  renew while they hold them: a dead holder's lock is free once its lease
  ends, from any host that can reach the server.

``acquire(timeout=None)`` blocks as long as the standard library's does, but
a ``with`` block waits at most the ``timeout`` given to the constructor
(:data:`DEFAULT_TIMEOUT` by default) and then raises ``TimeoutError``: a
holder that died holding the lock would otherwise hang it forever.
:class:`RobustLock`, the Queue ways and the Redis ways recover from such a
death (the next acquire sets ``holder_died``); with the others the lock
stays taken.

A wait is taken in slices (:data:`~shmref.lifecycle.SLICE`), or waits on a
connection that ``close()`` ends, so that a thread waiting in ``acquire``
or ``with`` wakes with ``ValueError`` ("is closed") when another thread
closes the handle, and a Queue or Manager way's waiter with
:class:`~shmref.lifecycle.OwnerGone` when its owner or server stops.

Objects pass to child processes as ``Process`` arguments under every start
method. The process that creates a Queue way, or a Manager way without a
``manager=``, owns its owner or server: its ``close()`` stops it. Every
other ``close()`` only releases this process's handle. ``python -m
shmref.standalone locks`` writes this module as one file that imports only
the standard library, to copy into a project (the Redis ways import the
``redis`` package when one is made).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
import threading
import time
import weakref
from multiprocessing import synchronize
from multiprocessing.context import BaseContext
from multiprocessing.managers import BaseManager
from typing import Any, Protocol, TypeVar, runtime_checkable

from shmref.holder import HELD, MUTEX_BYTES, pthread_api
from shmref.keyspace import DEFAULT_URL, Keyspace, RedisHandle, Script
from shmref.lifecycle import (
    DEFAULT_TIMEOUT,
    Closable,
    Deadline,
    context,
    integer,
    lifeline,
    reset_after_fork,
    seconds,
    timed_out,
)
from shmref.owner import Later, Owner
from shmref.server import ManagerHandle, Served, register_state

__all__ = [
    "DEFAULT_LEASE",
    "DEFAULT_TIMEOUT",
    "CtypesLock",
    "CtypesRLock",
    "CtypesSemaphore",
    "LockManager",
    "ManagerLock",
    "ManagerRLock",
    "ManagerSemaphore",
    "QueueLock",
    "QueueRLock",
    "QueueSemaphore",
    "RedisLock",
    "RedisRLock",
    "RedisSemaphore",
    "ReleaseError",
    "RobustLock",
    "SyncPrimitive",
]

# The largest value of a POSIX semaphore (typeshed does not list it).
_SEM_VALUE_MAX: int = getattr(synchronize, "SEM_VALUE_MAX", 2**31 - 1)


class ReleaseError(ValueError, RuntimeError):
    """``release()`` of a lock or semaphore the caller does not hold.

    Both a ``ValueError`` (what ``multiprocessing``'s locks raise) and a
    ``RuntimeError`` (what ``threading``'s raise), so either ``except`` works.
    """


@runtime_checkable
class SyncPrimitive(Protocol):
    """What every lock, re-entrant lock and semaphore in this module guarantees.

    ``acquire(blocking=True, timeout=None)`` returns True once acquired, or
    False if ``blocking`` is False and it is taken, or if ``timeout`` seconds
    passed first. ``release()`` of something the caller does not hold raises
    :class:`ReleaseError` and changes nothing. ``with`` acquires, waiting at
    most the constructor's ``timeout`` (then ``TimeoutError``), and releases
    on exit. Bad arguments raise ``TypeError`` or ``ValueError`` and change
    nothing. After ``close()`` every call raises ``ValueError``; ``close()``
    may be called again.
    """

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool: ...

    def release(self) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> bool: ...

    def __exit__(self, *exc: object) -> None: ...


def _acquire_args(blocking: object, timeout: object) -> float | None:
    if blocking is not True and blocking is not False:
        hint = ""
        if isinstance(blocking, (int, float)):
            hint = f" (to wait at most {blocking} s, pass timeout={blocking})"
        raise TypeError(f"blocking must be True or False, not {blocking!r}{hint}")
    checked = seconds(timeout)
    if not blocking and timeout is not None:
        raise ValueError("can't specify a timeout for a non-blocking call")
    return checked


def _value(value: object, limit: int) -> int:
    """A checked semaphore value: an int (numpy's too) from 1 to ``limit``."""
    value = integer(value, "semaphore value")
    if value < 1:
        raise ValueError(
            f"semaphore value must be at least 1, not {value} "
            "(a bounded semaphore of 0 could never be acquired)"
        )
    if value > limit:
        raise ValueError(f"semaphore value must be at most {limit}, not {value}")
    return value


class _Primitive(Closable):
    """Argument checks, the sliced wait and ``with``, shared by every way.

    A subclass provides ``_take(blocking, timeout) -> bool``, one wait of at
    most ``timeout`` seconds (never None when ``blocking``: the slices of
    :meth:`_wait` are), and ``release()``. Unlike other handles, ``with``
    acquires and releases; only ``close()`` closes.

    Between slices a waiter looks whether its handle was closed by another
    thread, the lock by its creator, or whether the creator is gone: it then
    raises the closed error (``ValueError``), ``timeout=None`` included,
    since nobody else could give the lock back.
    """

    _timeout: float | None = DEFAULT_TIMEOUT
    #: Whether a blocking acquire first tries once without waiting. Worth it
    #: where a try is one C call (a SemLock); where it is a poll of a pipe or
    #: a round trip to a server, the wait's first slice, which returns as
    #: soon as the lock is free, costs the same and the try would double it.
    _try_first = True
    #: Set by the creator's close(); with the creator's lifeline, what a
    #: waiter in another process looks at between slices (see _watch).
    _shut: Any = None

    def _watch(self, ctx: BaseContext | None) -> None:
        """Let waiters in every process see the creator's ``close()`` and its death.

        Nobody else can give back a lock the creator closed or took with it:
        a waiter with ``timeout=None`` would wait for ever.
        """
        self._shut = context(ctx).RawValue("b", 0)
        self._lifeline = lifeline()

    def _watched(self) -> dict[str, Any]:
        return {"shut": self._shut, "lifeline": self._lifeline}

    def _rewatch(self, state: dict[str, Any]) -> None:
        self._shut, self._lifeline = state["shut"], state["lifeline"]

    def _check_peers(self) -> None:
        super()._check_peers()
        if self._shut is not None and self._shut.value:
            raise self._closed_error(f"{type(self).__name__} is closed (by its creator)")

    def _shut_down(self) -> None:
        """In the creator's close(): wake every process's waiters with the closed error."""
        if self._lifeline is not None and self._lifeline.creator == os.getpid():
            self._shut.value = 1

    def _take(self, blocking: bool, timeout: float | None) -> bool:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    def _wait(self, timeout: float | None) -> bool:
        """Wait ``timeout`` seconds (None: as long as it takes), slice by slice.

        Between slices it looks whether another thread closed the handle:
        the waiter then gets the closed error, whatever the resources that
        ``close()`` dropped under it raised meanwhile.
        """
        deadline = Deadline(timeout)
        while True:
            try:
                if self._take(True, deadline.next_slice()):
                    return True
            except Exception:
                if not self._closed:
                    raise
            self._check_peers()
            if deadline.expired:
                return False

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Acquire; True on success, False if not acquired in time (or at once)."""
        if self._closed:
            self._refuse()
        if blocking is not True or timeout is not None:
            timeout = _acquire_args(blocking, timeout)
        if not blocking:
            return self._take(False, None)
        # Uncontended, one try; the sliced wait only when it is taken.
        if self._try_first and self._take(False, None):
            return True
        return self._wait(timeout)

    def __enter__(self) -> bool:
        if self._closed:
            self._refuse()
        if (self._try_first and self._take(False, None)) or self._wait(self._timeout):
            return True
        raise timed_out(type(self).__name__, self._timeout)

    def __exit__(self, *exc: object) -> None:
        self.release()


# ---------------------------------------------------------------- ctypes shared memory


class _SemLockPrimitive(_Primitive):
    """A ``multiprocessing`` SemLock: a POSIX semaphore in shared memory."""

    def __init__(self, semlock: Any, timeout: float | None, ctx: BaseContext | None) -> None:
        self._timeout = timeout
        self._semlock = semlock
        self._watch(ctx)
        self._attach()

    def _attach(self) -> None:
        # The SemLock's own C method, whose (block, timeout) are _take's
        # arguments: no Python frame between acquire and sem_wait.
        self._take = self._semlock.acquire  # type: ignore[method-assign]
        self._sem_release = self._semlock.release

    def __getstate__(self) -> dict[str, Any]:
        self._check_open()
        return {"semlock": self._semlock, "timeout": self._timeout, **self._watched()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._semlock = state["semlock"]
        self._timeout = state["timeout"]
        self._rewatch(state)
        self._attach()

    def release(self) -> None:
        if self._closed:
            self._refuse()
        try:
            self._sem_release()
        # Lock and BoundedSemaphore raise ValueError, RLock AssertionError.
        except (ValueError, AssertionError) as error:
            raise ReleaseError(f"{type(self).__name__}: {error}") from None

    def _release(self) -> None:
        self._shut_down()
        # Drop the semaphore: it goes with the last handle, in whichever
        # process that is (under spawn it is a /dev/shm/sem.mp-* entry).
        self._semlock = self._sem_release = None
        self.__dict__.pop("_take", None)


class CtypesLock(_SemLockPrimitive):
    """A ``multiprocessing.Lock``: a POSIX semaphore in shared memory.

    Not owned: any process may release it, as with the standard library's
    ``Lock``; releasing it when it is free raises :class:`ReleaseError`. A
    second ``acquire`` by its holder waits like any other (self-deadlock),
    so give it a timeout. If the holder dies holding it, it stays taken:
    every later ``acquire`` returns False at its timeout.

    >>> from shmref.locks import CtypesLock
    >>> lock = CtypesLock()
    >>> with lock:
    ...     lock.acquire(timeout=0.01)
    False
    >>> lock.close()
    """

    def __init__(
        self, *, ctx: BaseContext | None = None, timeout: float | None = DEFAULT_TIMEOUT
    ) -> None:
        timeout = seconds(timeout)
        super().__init__(context(ctx).Lock(), timeout, ctx)


class CtypesRLock(_SemLockPrimitive):
    """A ``multiprocessing.RLock``: re-entrant, owned by a process and thread.

    Its holder may acquire it again; it is free once released as many times
    as acquired. Only the holder may release it; anyone else gets
    :class:`ReleaseError`. The depth is counted per handle, as in the
    standard library: two handles to one RLock in a process do not share it.
    If the holder dies holding it, it stays taken.
    """

    def __init__(
        self, *, ctx: BaseContext | None = None, timeout: float | None = DEFAULT_TIMEOUT
    ) -> None:
        timeout = seconds(timeout)
        super().__init__(context(ctx).RLock(), timeout, ctx)


class CtypesSemaphore(_SemLockPrimitive):
    """A ``multiprocessing.BoundedSemaphore``: at most ``value`` holders.

    Bounded: a ``release`` that would raise the count above ``value`` raises
    :class:`ReleaseError`, where an unbounded semaphore would silently admit
    one holder more from then on. Any process may release. A holder that
    dies takes its permit with it, for good.
    """

    def __init__(
        self,
        value: int = 1,
        *,
        ctx: BaseContext | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        value = _value(value, _SEM_VALUE_MAX)
        timeout = seconds(timeout)
        super().__init__(context(ctx).BoundedSemaphore(value), timeout, ctx)


# ---------------------------------------------------------------- robust mutex


class RobustLock(_Primitive):
    """A lock that survives its holder's death: a POSIX robust mutex.

    The mutex lives in shared memory. When a thread or process dies holding
    it, the kernel marks it (it walks the dead thread's list of robust
    mutexes at exit, SIGKILL included), and the next ``acquire`` anywhere
    succeeds, makes the mutex consistent again and sets :attr:`holder_died`.
    The take-over is one atomic step in the mutex word, so two waiters
    cannot both take over, and it needs no process id, so a recycled pid
    cannot fool it. What the dead holder was protecting may be half-updated:
    check :attr:`holder_died` after acquiring.

    Owned by the acquiring thread: release by any other thread or process
    raises :class:`ReleaseError`, and a second ``acquire`` by the holder
    raises ``RuntimeError`` at once instead of deadlocking. Needs Linux
    (glibc or musl); elsewhere the constructor raises ``OSError``. A handle
    closed (or dropped) while a thread of this process holds the lock keeps
    its mutex's few bytes of memory until the process ends: the thread's list
    of held robust mutexes runs through them (see ``shmref.holder.HELD``).
    """

    #: True if the last acquire through this handle took the lock over from
    #: a holder that had died holding it.
    holder_died = False

    def __init__(
        self, *, ctx: BaseContext | None = None, timeout: float | None = DEFAULT_TIMEOUT
    ) -> None:
        self._timeout = seconds(timeout)
        self._mutex = context(ctx).RawArray(ctypes.c_ubyte, MUTEX_BYTES)
        self._watch(ctx)
        self._attach()
        self._api.init_robust(self._pointer)

    def _attach(self) -> None:
        self._api = pthread_api()
        self._pointer: Any = ctypes.c_void_p(ctypes.addressof(self._mutex))
        self._trylock = self._api.mutex_trylock
        self._unlock = self._api.mutex_unlock

    def __getstate__(self) -> dict[str, Any]:
        self._check_open()
        return {"mutex": self._mutex, "timeout": self._timeout, **self._watched()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._timeout = state["timeout"]
        self._mutex = state["mutex"]
        self._rewatch(state)
        self._attach()

    def _take(self, blocking: bool, timeout: float | None) -> bool:
        # The mutex first: this reference keeps its memory alive while this
        # thread waits on it, even if another thread closes the handle (which
        # drops the pointer first, so a None pointer is seen as closed).
        _alive, pointer = self._mutex, self._pointer
        if pointer is None:
            self._refuse()
        if blocking:
            # One slice of the base class's wait: pthread_mutex_clocklock is
            # not interrupted by signals, so Python runs its handlers (Ctrl-C)
            # between slices.
            rc = self._api.lock_until(pointer, time.monotonic() + (timeout or 0.0))
        else:
            rc = self._trylock(pointer)
        if rc == errno.EOWNERDEAD:
            # We hold it now; without this call the next unlock would make
            # the mutex unusable for good (ENOTRECOVERABLE).
            self._api.mutex_consistent(pointer)
        if rc in (0, errno.EOWNERDEAD):
            if self._pointer is None:  # closed by another thread while we waited
                self._unlock(pointer)
                self._refuse()
            HELD[id(_alive)] = _alive  # until release: see shmref.holder.HELD
            self.holder_died = rc == errno.EOWNERDEAD
            return True
        if rc in (errno.ETIMEDOUT, errno.EBUSY):
            return False
        if rc == errno.EDEADLK:
            raise RuntimeError("RobustLock is already held by this thread (it is not re-entrant)")
        raise OSError(rc, f"pthread_mutex_lock: {os.strerror(rc)}")

    def release(self) -> None:
        pointer = self._pointer
        if pointer is None:
            self._refuse()
        rc = self._unlock(pointer)
        if rc:
            if rc == errno.EPERM:
                raise ReleaseError("RobustLock is not held by this thread")
            raise OSError(rc, f"pthread_mutex_unlock: {os.strerror(rc)}")
        HELD.pop(id(self._mutex), None)

    def _release(self) -> None:
        self._shut_down()
        self._pointer = None  # before the mutex: see _take
        self._mutex = None


# ---------------------------------------------------------------- Queue: an owner process

#: What the owner answers to an acquire (see _Tokens.acquire).
_NOT_TAKEN, _TAKEN, _TAKEN_OVER = 0, 1, 2


class _Tokens:
    """A lock, an RLock or a bounded semaphore, living in an owner process.

    The owner (:mod:`shmref.owner`) runs one request at a time, so each
    method is atomic; an acquire that cannot be granted yet raises
    :class:`~shmref.owner.Later` and is asked again, oldest first, after
    every change. Tokens are counted per client process, and the owner
    calls :meth:`_forget` once a process whose connection ended has exited:
    the tokens it held come back, and the next acquire says it took over.
    """

    def __init__(self, kind: str, what: str, value: int) -> None:
        self._kind, self._what, self._value = kind, what, value
        self._free = value
        self._held: dict[int, int] = {}  # pid: tokens it holds, in order of acquiring
        self._owner: tuple[int, int] | None = None  # an RLock's (pid, thread)
        self._depth = 0
        self._orphaned = 0  # tokens given back by exited holders, not taken since

    def acquire(self, pid: int, thread: int, wait: float | None) -> int:
        if self._owner == (pid, thread):  # an RLock's holder, again
            self._depth += 1
            return _TAKEN
        if not self._free:
            if wait == 0:
                return _NOT_TAKEN
            raise Later
        self._free -= 1
        self._held[pid] = self._held.get(pid, 0) + 1
        if self._kind == "rlock":
            self._owner, self._depth = (pid, thread), 1
        if self._orphaned:
            self._orphaned -= 1
            return _TAKEN_OVER
        return _TAKEN

    def release(self, pid: int, thread: int) -> None:
        if self._kind == "rlock":
            if self._owner != (pid, thread):
                raise ReleaseError(f"{self._what} is not held by this thread")
            self._depth -= 1
            if self._depth:
                return
            self._owner = None
        elif self._free == self._value:
            raise ReleaseError(f"{self._what} released more times than acquired")
        self._free += 1
        # Not owned: a process may release what another acquired. Its own
        # token first, else the oldest holder's.
        holder = pid if pid in self._held else next(iter(self._held))
        self._held[holder] -= 1
        if not self._held[holder]:
            del self._held[holder]

    def _forget(self, pid: int) -> None:
        """Process ``pid`` has exited: what it held is free."""
        tokens = self._held.pop(pid, 0)
        if self._owner is not None and self._owner[0] == pid:
            self._owner, self._depth = None, 0
        self._free += tokens
        self._orphaned = min(self._orphaned + tokens, self._value)


class _OwnerPrimitive(_Primitive):
    """A lock in an owner process, one round trip per call (see :class:`_Tokens`)."""

    _kind = "lock"  # or rlock, semaphore
    # A try is a round trip, and so is a wait that finds the lock free.
    _try_first = False

    #: True if the last acquire through this handle took a token that a
    #: holder had when its process exited.
    holder_died = False

    def __init__(
        self, *, ctx: BaseContext | None = None, timeout: float | None = DEFAULT_TIMEOUT
    ) -> None:
        self._start(1, ctx, timeout)

    def _start(self, value: int, ctx: BaseContext | None, timeout: object) -> None:
        self._timeout = seconds(timeout)
        what = type(self).__name__
        self._owner = Owner(
            context(ctx), _Tokens, (self._kind, what, value), what=what, timeout=self._timeout
        )

    def __getstate__(self) -> dict[str, Any]:
        self._check_open()
        return {"owner": self._owner, "timeout": self._timeout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._owner = state["owner"]
        self._timeout = state["timeout"]

    def _take(self, blocking: bool, timeout: float | None) -> bool:
        # The owner parks a blocking acquire until the lock is free or the
        # timeout is over, and always answers: one round trip, no polling.
        got: int = self._owner.call_waiting(
            "acquire", os.getpid(), threading.get_ident(), timeout if blocking else 0.0
        )
        self.holder_died = got == _TAKEN_OVER
        return got != _NOT_TAKEN

    def _wait(self, timeout: float | None) -> bool:
        # The owner waits, not the caller: the caller's connection wakes it
        # with the closed error if another thread closes the handle, and
        # with OwnerGone if the owner stops or dies.
        return self._take(True, timeout)

    def release(self) -> None:
        if self._closed:
            self._refuse()
        self._owner.call("release", os.getpid(), threading.get_ident())

    def _release(self) -> None:
        self._owner.close()


class QueueLock(_OwnerPrimitive):
    """A lock held by an owner process: acquire and release are requests to it.

    Each client process has a connection of its own to the owner (see
    :mod:`shmref.owner`), so a process killed at any moment, waiting or
    holding, breaks nobody else's calls. A blocking ``acquire`` is one
    request that the owner answers when the lock is free, oldest waiter
    first, or when the timeout is over. Not owned: any process may release
    it; releasing it when it is free raises :class:`ReleaseError`. If a
    holder's process exits (SIGKILL included) without releasing, the owner
    frees the lock once it sees the process gone, and the next acquire sets
    :attr:`holder_died`. If the owner dies, calls raise
    :class:`~shmref.lifecycle.OwnerGone`; the creator's ``close()`` stops it,
    which other processes see the same way. An ``acquire`` cut by an
    exception while it waits (Ctrl-C) may have been granted as it was cut:
    the lock is then held by this process until it releases it or exits.
    """


class QueueSemaphore(_OwnerPrimitive):
    """``value`` tokens held by an owner process: at most ``value`` holders.

    Bounded like :class:`CtypesSemaphore`. Tokens are counted per process:
    those of a process that exits come back. Otherwise as :class:`QueueLock`.
    """

    _kind = "semaphore"

    def __init__(
        self,
        value: int = 1,
        *,
        ctx: BaseContext | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        self._start(_value(value, _SEM_VALUE_MAX), ctx, timeout)


class QueueRLock(_OwnerPrimitive):
    """A :class:`QueueLock` whose holder (process and thread) may acquire it again.

    The owner keeps the holder and the depth: the lock is free once the
    holder has released it as many times as it acquired it; release by
    anyone else raises :class:`ReleaseError`. Otherwise as :class:`QueueLock`.
    """

    _kind = "rlock"


# ---------------------------------------------------------------- Manager


class _ServedLock(Served):
    """A ``threading`` Lock, RLock or BoundedSemaphore living in a LockManager's server.

    Each call runs in the server thread that serves the caller's connection,
    one per thread of each client process: that thread is an RLock's owner.
    """

    def __init__(self, kind: str, what: str, value: int) -> None:
        self._what = what
        self._lock: Any
        if kind == "rlock":
            self._lock = threading.RLock()
        elif kind == "semaphore":
            self._lock = threading.BoundedSemaphore(value)
        else:
            self._lock = threading.Lock()

    def acquire(self, blocking: bool, timeout: float | None) -> bool:
        if not blocking:
            return bool(self._lock.acquire(False))
        return bool(self._lock.acquire(True, timeout))  # one slice: never None

    def release(self) -> None:
        try:
            self._lock.release()
        # threading.Lock and RLock raise RuntimeError, BoundedSemaphore ValueError.
        except (RuntimeError, ValueError) as error:
            raise ReleaseError(f"{self._what}: {error}") from None


class LockManager(BaseManager):
    """A manager whose ``Lock(kind, what, value)`` is a lock living in its server.

    Start one and pass it as ``manager=`` to share one server between the
    Manager ways.
    """


register_state(LockManager, "Lock", _ServedLock)


class _ManagerPrimitive(_Primitive, ManagerHandle):
    """A ``threading`` lock in a manager's server, reached through :class:`Server`."""

    _kind = "lock"  # or rlock, semaphore: which threading lock the server holds
    _try_first = False  # a try is a round trip

    def __init__(
        self,
        *,
        manager: LockManager | None = None,
        ctx: BaseContext | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        address: tuple[str, int] | None = None,
        authkey: bytes | None = None,
    ) -> None:
        self._start(1, manager, ctx, timeout, address, authkey)

    def _start(
        self,
        value: int,
        manager: LockManager | None,
        ctx: BaseContext | None,
        timeout: object,
        address: tuple[str, int] | None,
        authkey: bytes | None,
    ) -> None:
        self._timeout = seconds(timeout)
        state = (self._kind, type(self).__name__, value)
        self._server = self._serve(
            LockManager, "Lock", state, manager, ctx, address, authkey, self._timeout
        )
        self._publish()

    def __getstate__(self) -> dict[str, Any]:
        self._check_open()
        return {"server": self._server, "timeout": self._timeout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._server = state["server"]
        self._timeout = state["timeout"]

    def _take(self, blocking: bool, timeout: float | None) -> bool:
        # The server thread that serves this thread waits, at most one slice
        # of _wait at a time, so that a stopped server or a close() is seen.
        return bool(self._server.answer("acquire", blocking, timeout))

    def release(self) -> None:
        if self._closed:
            self._refuse()
        self._server.call("release")

    def _release(self) -> None:
        self._server.close()


class ManagerLock(_ManagerPrimitive):
    """A ``threading.Lock`` in a Manager server; every call is one round trip.

    Pass a started :class:`LockManager` as ``manager`` to share one server
    between primitives; otherwise each starts its own, and its creator's
    ``close()`` stops it. Not owned: any process may release it. If the
    holder dies, the server does not notice: the lock stays held. A wait runs
    in the server, in slices of 0.1 s, one round trip each: a waiter that
    dies may still take the lock in the server during its last slice, and
    then holds it for good. A stopped or dead server makes every call, and
    every wait under way, raise :class:`~shmref.lifecycle.OwnerGone`; one
    alive but not answering (SIGSTOP, a hang), ``TimeoutError`` once a round
    trip has waited the constructor's ``timeout`` past its slice, a wait
    with ``timeout=None`` too. That ``timeout`` also bounds a ``with`` block,
    as for every way here. With ``address=(host, port)`` the server serves over TCP, and
    ``connect()`` reaches it from other hosts.
    """


class ManagerRLock(_ManagerPrimitive):
    """A ``threading.RLock`` in a Manager server.

    The server serves each thread of each process on its own connection and
    server thread, so the owner is the calling process and thread: only it
    may re-enter and release (anyone else gets :class:`ReleaseError`).
    Otherwise as :class:`ManagerLock`.
    """

    _kind = "rlock"


class ManagerSemaphore(_ManagerPrimitive):
    """A ``threading.BoundedSemaphore(value)`` in a Manager server.

    Otherwise as :class:`ManagerLock`.
    """

    _kind = "semaphore"

    def __init__(
        self,
        value: int = 1,
        *,
        manager: LockManager | None = None,
        ctx: BaseContext | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        address: tuple[str, int] | None = None,
        authkey: bytes | None = None,
    ) -> None:
        self._start(_value(value, _SEM_VALUE_MAX), manager, ctx, timeout, address, authkey)


# ---------------------------------------------------------------- Redis: tokens with leases

#: The lease a Redis way's holder gets unless told otherwise, in seconds.
#: Shorter than DEFAULT_TIMEOUT, so that a ``with`` waiting its default
#: timeout outlasts a dead holder's lease and takes the lock; long enough
#: that a holder renewing every third of it (:data:`_RENEW_EVERY`) keeps it
#: through a pause of several seconds (a GC, a loaded machine).
DEFAULT_LEASE = 10.0

#: The shortest lease: renewals every third of it must have time to travel.
SHORTEST_LEASE = 0.1

#: A holder renews its lease this often, as a fraction of the lease: two
#: renewals may fail or come late before it runs out.
_RENEW_EVERY = 1 / 3

#: The shortest wait for a server's reply. A lock's ``timeout`` is how long
#: a ``with`` waits for the lock, and may be far shorter than a round trip
#: to a loaded server takes now and then: a reply gets at least this long.
_REPLY_FLOOR = 1.0

#: The longest wait of a waiter between two tries. A release wakes a waiter
#: at once (its BLPOP returns); this bounds how late it sees what no release
#: announces: the creator's close() (its keys deleted), or a wake taken by a
#: waiter killed before it could use it.
_WAKE_SLICE = 0.5

#: The keys of a Redis lock, after the meta key: its holders' tokens (a
#: sorted set of token -> the end of its lease, in the server's ms), the
#: list a release pushes a wake on, and how many expired leases nobody
#: has taken over yet (so that exactly one acquire says ``holder_died``).
_PARTS = ("holders", "wake", "orphans")

# Every script starts by reaping the leases that have run out, by the
# server's clock: a holder's death needs no one to notice it.
_REAP = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local reaped = redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if reaped > 0 then redis.call('INCRBY', KEYS[4], reaped) end
"""

#: What an acquire answers: taken, taken from a lease that ran out, or
#: (any positive number) the milliseconds until the first lease runs out.
_LEASED, _LEASED_OVER = 0, -1

# ARGV: the new holder's token, the lease in ms, the number of holders allowed.
_REDIS_ACQUIRE = Script(
    _REAP
    + """
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then
  local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  return math.max(1, tonumber(first[2]) - now)
end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
if tonumber(redis.call('GET', KEYS[4])) > 0 then
  redis.call('DECR', KEYS[4])
  return -1
end
return 0
"""
)

# ARGV: the holder's token, the number of holders allowed. A wake is pushed
# for a waiter; at most that many are kept, so that releases nobody waits
# for do not pile them up.
_REDIS_RELEASE = Script(
    _REAP
    + """
if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then return redis.error_reply('NOTHELD') end
redis.call('RPUSH', KEYS[3], 1)
redis.call('LTRIM', KEYS[3], -tonumber(ARGV[2]), -1)
return 1
"""
)

# ARGV: the holder's token, the lease in ms. 0 if the lease is not the
# token's any more (it ran out, and may have been taken over).
_REDIS_RENEW = Script(
    """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local ends = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not ends or tonumber(ends) <= now then return 0 end
redis.call('ZADD', KEYS[2], 'XX', now + tonumber(ARGV[2]), ARGV[1])
return 1
"""
)


def _replies(timeout: float | None) -> float | None:
    """How long a Redis way waits for a reply: its timeout, but at least :data:`_REPLY_FLOOR`."""
    return None if timeout is None else max(timeout, _REPLY_FLOOR)


def _lease(lease: object) -> float:
    """A checked lease: seconds, from :data:`SHORTEST_LEASE` to ``LONGEST_WAIT``."""
    checked = seconds(lease, "lease")
    if checked is None:
        raise ValueError(
            f"lease must be a finite number of seconds, not {lease!r}: "
            "a lease that never ends would keep a dead holder's lock for ever"
        )
    if checked < SHORTEST_LEASE:
        raise ValueError(f"lease must be at least {SHORTEST_LEASE} s, not {lease!r}")
    return checked


class _Lease:
    """One token a handle holds on the server, and what this process knows of its lease.

    ``valid_until`` is when the lease ends at the earliest: the lease counted
    from the moment the request that set it was sent (the server set it
    later). ``lost`` says why it is not held any more, once known.
    """

    __slots__ = (
        "__weakref__",
        "depth",
        "due",
        "keyspace",
        "lease",
        "lost",
        "token",
        "valid_until",
    )

    def __init__(self, keyspace: Keyspace, token: str, lease: float, sent: float) -> None:
        self.keyspace, self.token, self.lease = keyspace, token, lease
        self.depth = 1  # an RLock's
        self.lost: str | None = None
        self.renewed(sent)

    def renewed(self, sent: float) -> None:
        self.valid_until = sent + self.lease
        self.due = sent + self.lease * _RENEW_EVERY

    @property
    def held(self) -> bool:
        return self.lost is None and time.monotonic() < self.valid_until

    def renew(self) -> None:
        """One renewal (in the renewing thread); on failure, retried until the lease ends."""
        sent = time.monotonic()
        try:
            if self.keyspace.run(_REDIS_RENEW, _PARTS, [self.token, round(self.lease * 1000)]):
                self.renewed(sent)
                return
            self.lost = "its lease ran out before it was renewed (another may hold it now)"
        except Exception as error:  # the server gone or slow, the handle closed
            if time.monotonic() >= self.valid_until:
                self.lost = f"its lease ran out: it could not be renewed ({error})"
            else:
                self.due = time.monotonic() + self.lease / 10


class _Renewals:
    """This process's renewing thread, and the leases it renews.

    One thread per process, started by the first acquire and ending when no
    lease is left to renew; a daemon, so that it never keeps the
    interpreter alive. It holds the leases weakly: a handle dropped while
    it holds the lock stops renewing it, and the lease runs out. A forked
    child starts with none (it holds none of its parent's locks).
    """

    def __init__(self) -> None:
        self._after_fork()
        reset_after_fork(self)

    def _after_fork(self) -> None:
        self._changed = threading.Condition(threading.Lock())
        self._leases: weakref.WeakSet[_Lease] = weakref.WeakSet()
        self._thread: threading.Thread | None = None

    def add(self, lease: _Lease) -> None:
        with self._changed:
            self._leases.add(lease)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="shmref-lease-renewals", daemon=True
                )
                self._thread.start()
            self._changed.notify()

    def discard(self, lease: _Lease) -> None:
        with self._changed:
            self._leases.discard(lease)
            self._changed.notify()  # the last one gone, the thread ends now

    def _due(self) -> list[_Lease]:
        """The leases due now, once some are; [] when none is left (the thread then ends)."""
        with self._changed:
            while True:
                for lease in list(self._leases):
                    if lease.lost is not None:
                        self._leases.discard(lease)
                if not self._leases:
                    self._thread = None
                    return []
                now = time.monotonic()
                first = min(lease.due for lease in self._leases)
                if first <= now:
                    return [lease for lease in self._leases if lease.due <= now]
                self._changed.wait(first - now)

    def _run(self) -> None:
        while due := self._due():
            for lease in due:
                lease.renew()


_renewals = _Renewals()


_Attached = TypeVar("_Attached", bound="_RedisPrimitive")


class _RedisPrimitive(_Primitive, RedisHandle):
    """Tokens with leases in a Redis server: ``value`` holders at most.

    Each acquire adds a random token with the end of its lease to a sorted
    set, if fewer than ``value`` leases are live; a release removes it and
    pushes a wake for one waiter, which waits in a ``BLPOP`` between tries.
    This process's renewing thread (:class:`_Renewals`) extends every lease
    it holds each third of the lease. Tokens are this handle's in this
    process (an RLock's, this thread's): release by anyone else raises
    :class:`ReleaseError`, and a forked child holds none.
    """

    _try_first = False  # a try is a round trip, as is the wait's first
    _reentrant = False

    #: True if the last acquire through this handle took a token whose
    #: holder's lease had run out (the holder died, or stopped renewing).
    holder_died = False

    def __init__(
        self,
        *,
        lease: float = DEFAULT_LEASE,
        url: str = DEFAULT_URL,
        name: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        self._start(1, lease, url, name, timeout)

    def _start(
        self, value: int, lease: object, url: object, name: object, timeout: object
    ) -> None:
        checked = seconds(timeout)  # every argument checked before the server is asked
        lease = _lease(lease)
        description = {"value": value, "lease": lease}
        self._create(url, name, _replies(checked), description, initial={"orphans": 0})
        self._timeout = checked

    def _adopt(self, description: dict[str, Any]) -> None:
        super()._adopt(description)
        keyspace = self._keyspace
        self._value: int = description["value"]
        self._lease_s: float = description["lease"]
        self._timeout = keyspace.timeout  # a with block's wait, until told otherwise
        self._holding: dict[int | None, list[_Lease]] = {}
        # Renewals wait a third of the lease for a reply, not the handle's
        # timeout: a silent server must not hold up this process's renewals
        # of other leases, on other servers, until those run out too.
        self._renewing = Keyspace(
            keyspace.url,
            keyspace.name,
            self._lease_s * _RENEW_EVERY,
            keyspace.what,
            keyspace.closed_error,
            creator=False,
        )
        reset_after_fork(self)

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "timeout": self._timeout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if "timeout" in state:  # not from connect(), which sets it itself
            self._timeout = state["timeout"]

    @classmethod
    def connect(
        cls: type[_Attached], url: str, name: str, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> _Attached:
        """A handle to the lock named ``name`` at ``url``, from any process.

        As :meth:`RedisHandle.connect <shmref.keyspace.RedisHandle.connect>`;
        ``timeout`` bounds its ``with`` blocks' waits.
        """
        checked = seconds(timeout)
        handle = super().connect(url, name, timeout=_replies(checked))
        handle._timeout = checked
        return handle

    def _after_fork(self) -> None:
        self._holding = {}  # the parent's tokens are the parent's

    @property
    def lease(self) -> float:
        """Seconds a holder keeps the lock without renewing it: then it is free."""
        return self._lease_s

    @property
    def held(self) -> bool:
        """True while this handle (an RLock: this thread) holds it with a live lease.

        Asks no server: False once a renewal has found the lease gone, or
        none has succeeded in time. A holder whose lease may have run out
        holds nothing: another process may hold the lock.
        """
        return any(lease.held for lease in self._holding.get(self._holder(), ()))

    def _holder(self) -> int | None:
        return threading.get_ident() if self._reentrant else None

    def _take(self, blocking: bool, timeout: float | None) -> bool:
        return self._try() == _LEASED

    def _try(self) -> int:
        """One try: :data:`_LEASED`, or the milliseconds until the first lease runs out."""
        holder = self._holder()
        if self._reentrant:
            held = self._holding.get(holder)
            if held:
                held[-1].depth += 1
                return _LEASED
        keyspace = self._keyspace
        token = secrets.token_hex(16)
        lease_ms = round(self._lease_s * 1000)
        sent = time.monotonic()
        # An exception (Ctrl-C) after the server took it loses the token
        # here: the lock is then taken until its lease, never renewed, ends.
        got = int(keyspace.run(_REDIS_ACQUIRE, _PARTS, [token, lease_ms, self._value]))
        if got > 0:
            return got
        lease = _Lease(self._renewing, token, self._lease_s, sent)
        self._holding.setdefault(holder, []).append(lease)
        _renewals.add(lease)
        self.holder_died = got == _LEASED_OVER
        return _LEASED

    def _wait(self, timeout: float | None) -> bool:
        # A try, then a BLPOP on the wake list until a release pushes a wake,
        # the first lease runs out, or the slice ends; then a try again.
        deadline = Deadline(timeout)
        while True:
            try:
                wait_ms = self._try()
                if wait_ms == _LEASED:
                    return True
                if deadline.expired:
                    return False
                pause = min(wait_ms / 1000, _WAKE_SLICE)
                if deadline.end is not None:
                    pause = min(pause, deadline.end - time.monotonic())
                if pause > 0:
                    wait = f"{max(pause, 0.001):.3f}"  # BLPOP's 0 would wait for ever
                    self._keyspace.blocking(pause, "BLPOP", self._keyspace.key("wake"), wait)
            except Exception:
                if not self._closed:
                    raise
            self._check_peers()

    def release(self) -> None:
        if self._closed:
            self._refuse()
        what = type(self).__name__
        held = self._holding.get(self._holder())
        if not held:
            whom = "this thread" if self._reentrant else "this handle"
            raise ReleaseError(f"{what} is not held by {whom}")
        lease = held[-1]
        if lease.depth > 1:
            lease.depth -= 1
            return
        held.pop()
        if not held:
            self._holding.pop(self._holder(), None)
        _renewals.discard(lease)
        why = lease.lost or f"its lease of {self._lease_s} s ran out"
        self._keyspace.run(
            _REDIS_RELEASE,
            _PARTS,
            [lease.token, self._value],
            {"NOTHELD": lambda _: ReleaseError(f"{what} was not held any more: {why}")},
        )

    def _release(self) -> None:
        # What this handle holds is given back (it could never be released
        # after close()), unless the creator's close() deletes it all.
        holding, self._holding = self._holding, {}
        for leases in holding.values():
            for lease in leases:
                _renewals.discard(lease)
                lease.lost = "its handle was closed"
                if not self._keyspace.creator:
                    with contextlib.suppress(Exception):
                        self._keyspace.run(_REDIS_RELEASE, _PARTS, [lease.token, self._value])
        self._renewing.disconnect()
        super()._release()


class RedisLock(_RedisPrimitive):
    """A lock in a Redis server, held with a lease that its holder renews.

    Owned by the handle that acquired it in its process: release by any
    other process raises :class:`ReleaseError` (unlike :class:`CtypesLock`);
    a second ``acquire`` by the holder waits like any other. A holder that
    dies (SIGKILL included) holds it until its lease ends, ``lease``
    seconds after its last renewal at most; the next acquire then takes it
    and sets :attr:`holder_died`. While held, this process renews the lease
    every third of it, in a daemon thread.

    A holder that cannot renew in time (paused longer than its lease: a GC,
    SIGSTOP, a network partition; or the server gone) loses the lock while
    its code runs on as if it held it: :attr:`held` turns False, and its
    ``release()`` (the end of its ``with``) raises :class:`ReleaseError`
    saying why. A lease guarantees exclusion only to holders that renew in
    time. An ``acquire`` cut by an exception (Ctrl-C) may have been granted
    as it was cut: the lock is then taken until that lease ends.

    A blocking acquire waits on the server (``BLPOP``) for a release's
    wake, with no round trips meanwhile; it wakes when the first lease
    runs out too, and every half second to see whether the creator has
    closed (then :class:`~shmref.lifecycle.OwnerGone`, ``timeout=None``
    too). A server gone raises ``OwnerGone``, one that does not answer
    within ``timeout``, ``TimeoutError``. Other processes attach with
    :meth:`connect` or get it as a ``Process`` argument; the creator's
    ``close()`` deletes its keys, and any other ``close()`` gives back what
    its handle holds. Needs a Redis server and the ``redis`` package
    (``pip install shmref[redis]``).

    Part of the contract it cannot keep: a creator killed without
    ``close()`` leaves its keys on the server.
    """


class RedisRLock(_RedisPrimitive):
    """A :class:`RedisLock` whose holder (this handle, in this thread) may acquire it again.

    The depth is counted per handle and thread, in this process, as the
    standard library's RLock counts it: the lock is free once its holder
    has released it as many times as it acquired it. Re-entry asks no
    server (check :attr:`held` for the lease); release by anyone else
    raises :class:`ReleaseError`. Otherwise as :class:`RedisLock`.
    """

    _reentrant = True


class RedisSemaphore(_RedisPrimitive):
    """``value`` leases in a Redis server: at most ``value`` holders.

    Bounded: each permit is a token of the handle that acquired it, so a
    ``release`` by a handle that holds none raises :class:`ReleaseError`
    (unlike :class:`CtypesSemaphore`, which any process may release). A
    holder that dies gives its permits back when their leases end.
    Otherwise as :class:`RedisLock`.
    """

    def __init__(
        self,
        value: int = 1,
        *,
        lease: float = DEFAULT_LEASE,
        url: str = DEFAULT_URL,
        name: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        self._start(_value(value, _SEM_VALUE_MAX), lease, url, name, timeout)
