"""Lock, RLock and Semaphore between processes, three ways.

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
  one round trip per call.

``acquire(timeout=None)`` blocks as long as the standard library's does, but
a ``with`` block waits at most the ``timeout`` given to the constructor
(:data:`DEFAULT_TIMEOUT` by default) and then raises ``TimeoutError``: a
holder that died holding the lock would otherwise hang it forever.
:class:`RobustLock` and the Queue ways recover from such a death (the next
acquire sets ``holder_died``); with the others the lock stays taken.

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
the standard library, to copy into a project.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
import time
from multiprocessing import synchronize
from multiprocessing.context import BaseContext
from multiprocessing.managers import BaseManager
from typing import Any, Protocol, runtime_checkable

from shmref.holder import HELD, MUTEX_BYTES, pthread_api
from shmref.lifecycle import (
    DEFAULT_TIMEOUT,
    Closable,
    Deadline,
    context,
    integer,
    lifeline,
    seconds,
    timed_out,
)
from shmref.owner import Later, Owner
from shmref.server import ManagerHandle, Served, register_state

__all__ = [
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
        self._server = self._serve(LockManager, "Lock", state, manager, ctx, address, authkey)
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
    every wait under way, raise :class:`~shmref.lifecycle.OwnerGone`. The
    constructor's ``timeout`` bounds a ``with`` block, as for every way
    here. With ``address=(host, port)`` the server serves over TCP, and
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
