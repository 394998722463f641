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
  :class:`QueueSemaphore` are tokens in a ``multiprocessing.Queue``: acquire
  takes a token, release puts it back;
* a Manager server: :class:`ManagerLock`, :class:`ManagerRLock` and
  :class:`ManagerSemaphore` are ``threading`` locks living in the server,
  one round trip per call.

``acquire(timeout=None)`` blocks as long as the standard library's does, but
a ``with`` block waits at most the ``timeout`` given to the constructor
(:data:`DEFAULT_TIMEOUT` by default) and then raises ``TimeoutError``: a
holder that died holding the lock would otherwise hang it forever. Only
:class:`RobustLock` recovers from such a death; with the others the lock
stays taken.

Objects pass to child processes as ``Process`` arguments under every start
method. The process that creates a Manager way without a ``manager=`` owns
the server: its ``close()`` stops it. Every other ``close()`` only releases
this process's handle. This module imports only the standard library: copy
it alone into a project and it works.
"""

from __future__ import annotations

import ctypes
import errno
import math
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing import synchronize
from multiprocessing.context import BaseContext
from multiprocessing.managers import SyncManager
from typing import Any, Protocol, runtime_checkable

# In the order of the docs: autodoc lists members in __all__ order.
__all__ = [  # noqa: RUF022
    "DEFAULT_TIMEOUT",
    "QUEUE_TOKENS_MAX",
    "ReleaseError",
    "SyncPrimitive",
    "CtypesLock",
    "CtypesRLock",
    "CtypesSemaphore",
    "RobustLock",
    "QueueLock",
    "QueueRLock",
    "QueueSemaphore",
    "ManagerLock",
    "ManagerRLock",
    "ManagerSemaphore",
    "Occupancy",
    "occupy",
    "outer_inner",
    "die_holding",
]

#: Seconds a ``with`` block waits for the lock before raising TimeoutError.
#: Long enough for a loaded machine, short enough that a dead holder is noticed.
DEFAULT_TIMEOUT = 30.0

# The largest value of a POSIX semaphore (typeshed does not list it).
_SEM_VALUE_MAX: int = getattr(synchronize, "SEM_VALUE_MAX", 2**31 - 1)

#: The most tokens a :class:`QueueSemaphore` may hold. Its tokens wait in a
#: pipe (8 bytes each); a pipe buffers at least 4 KiB, so all of them always
#: fit and no process can block flushing a release into a full pipe.
QUEUE_TOKENS_MAX = 512


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


def _context(ctx: BaseContext | None) -> Any:
    # Any: typeshed's BaseContext lacks Process and the synchronisation types.
    return ctx if ctx is not None else multiprocessing.get_context()


def _seconds(timeout: object) -> float | None:
    """A checked timeout: None (wait forever) or a number of seconds >= 0."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(
            f"timeout must be a number of seconds or None, not {type(timeout).__name__}"
        )
    seconds = float(timeout)
    if math.isnan(seconds) or seconds < 0:
        raise ValueError(f"timeout must be a number of seconds >= 0, not {timeout!r}")
    return None if math.isinf(seconds) else seconds


def _acquire_args(blocking: object, timeout: object) -> float | None:
    if blocking is not True and blocking is not False:
        hint = ""
        if isinstance(blocking, (int, float)):
            hint = f" (to wait at most {blocking} s, pass timeout={blocking})"
        raise TypeError(f"blocking must be True or False, not {blocking!r}{hint}")
    seconds = _seconds(timeout)
    if not blocking and timeout is not None:
        raise ValueError("can't specify a timeout for a non-blocking call")
    return seconds


def _value(value: object, limit: int) -> int:
    """A checked semaphore value: an int from 1 to ``limit``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"semaphore value must be an int, not {type(value).__name__}")
    if value < 1:
        raise ValueError(
            f"semaphore value must be at least 1, not {value} "
            "(a bounded semaphore of 0 could never be acquired)"
        )
    if value > limit:
        raise ValueError(f"semaphore value must be at most {limit}, not {value}")
    return value


class _Primitive:
    """Argument checks, ``with`` and ``close()``, shared by every way.

    A subclass provides ``_take(blocking, timeout) -> bool`` (arguments
    already checked; ``timeout=None`` waits forever) and ``release()``.
    """

    _closed = False
    _timeout: float | None = DEFAULT_TIMEOUT

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"{type(self).__name__} is closed")

    def _take(self, blocking: bool, timeout: float | None) -> bool:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Acquire; True on success, False if not acquired in time (or at once)."""
        if blocking is not True or timeout is not None:
            timeout = _acquire_args(blocking, timeout)
        if self._closed:
            self._check_open()
        return self._take(blocking, timeout)

    def __enter__(self) -> bool:
        if self._closed:
            self._check_open()
        if not self._take(True, self._timeout):
            raise TimeoutError(
                f"{type(self).__name__} not acquired within {self._timeout} s "
                "(its holder may have died holding it)"
            )
        return True

    def __exit__(self, *exc: object) -> None:
        self.release()

    def close(self) -> None:
        self._closed = True


# ---------------------------------------------------------------- ctypes shared memory


class _SemLockPrimitive(_Primitive):
    """A ``multiprocessing`` SemLock: a POSIX semaphore in shared memory."""

    def __init__(self, semlock: Any, timeout: object) -> None:
        self._timeout = _seconds(timeout)
        self._semlock = semlock
        self._attach()

    def _attach(self) -> None:
        # The SemLock's own C method, whose (block, timeout) are _take's
        # arguments: no Python frame between acquire and sem_wait.
        self._take = self._semlock.acquire  # type: ignore[method-assign]
        self._sem_release = self._semlock.release

    def __getstate__(self) -> dict[str, Any]:
        self._check_open()
        return {"semlock": self._semlock, "timeout": self._timeout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._semlock = state["semlock"]
        self._timeout = state["timeout"]
        self._attach()

    def release(self) -> None:
        if self._closed:
            self._check_open()
        try:
            self._sem_release()
        # Lock and BoundedSemaphore raise ValueError, RLock AssertionError.
        except (ValueError, AssertionError) as error:
            raise ReleaseError(f"{type(self).__name__}: {error}") from None

    def close(self) -> None:
        # Drop the semaphore: it goes with the last handle, in whichever
        # process that is (under spawn it is a /dev/shm/sem.mp-* entry).
        self._closed = True
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
        _seconds(timeout)
        super().__init__(_context(ctx).Lock(), timeout)


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
        _seconds(timeout)
        super().__init__(_context(ctx).RLock(), timeout)


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
        _seconds(timeout)
        super().__init__(_context(ctx).BoundedSemaphore(value), timeout)


# ---------------------------------------------------------------- robust mutex

# From the POSIX headers of Linux (glibc and musl agree on them).
_PTHREAD_MUTEX_ERRORCHECK = 2
_PTHREAD_PROCESS_SHARED = 1
_PTHREAD_MUTEX_ROBUST = 1
# sizeof(pthread_mutex_t) is 40 on x86-64, 48 on AArch64: leave room.
_MUTEX_BYTES = 64
_ATTR_BYTES = 64
# A wait wakes this often so that Python can run signal handlers (Ctrl-C):
# pthread_mutex_clocklock is not interrupted by signals.
_SLICE = 0.1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Pthread:
    """The pthread functions :class:`RobustLock` calls, typed for ctypes."""

    # Each returns 0 or an error number; set from libc by __init__.
    mutexattr_init: Any
    mutexattr_destroy: Any
    mutexattr_settype: Any
    mutexattr_setpshared: Any
    mutexattr_setrobust: Any
    mutex_init: Any
    mutex_trylock: Any
    mutex_unlock: Any
    mutex_consistent: Any
    mutex_clocklock: Any
    mutex_timedlock: Any

    def __init__(self) -> None:
        lib = ctypes.CDLL(None, use_errno=True)
        p, i, ts = ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(_Timespec)
        signatures: dict[str, list[Any]] = {
            "pthread_mutexattr_init": [p],
            "pthread_mutexattr_destroy": [p],
            "pthread_mutexattr_settype": [p, i],
            "pthread_mutexattr_setpshared": [p, i],
            "pthread_mutexattr_setrobust": [p, i],
            "pthread_mutex_init": [p, p],
            "pthread_mutex_trylock": [p],
            "pthread_mutex_unlock": [p],
            "pthread_mutex_consistent": [p],
        }
        # clocklock (glibc 2.30+) waits on CLOCK_MONOTONIC; timedlock's
        # CLOCK_REALTIME deadline moves when someone sets the clock.
        if hasattr(lib, "pthread_mutex_clocklock"):
            signatures["pthread_mutex_clocklock"] = [p, i, ts]
            self.monotonic = True
        else:
            signatures["pthread_mutex_timedlock"] = [p, ts]
            self.monotonic = False
        for name, argtypes in signatures.items():
            try:
                function = getattr(lib, name)
            except AttributeError:
                raise OSError(
                    errno.ENOSYS, f"RobustLock needs POSIX robust mutexes; {name} is missing"
                ) from None
            function.argtypes = argtypes
            function.restype = ctypes.c_int
            setattr(self, name.removeprefix("pthread_"), function)

    def lock_until(self, mutex: Any, deadline: float) -> int:
        """pthread_mutex_clocklock until ``deadline`` (time.monotonic())."""
        if self.monotonic:
            when = _timespec(deadline)
            return int(self.mutex_clocklock(mutex, time.CLOCK_MONOTONIC, ctypes.byref(when)))
        when = _timespec(time.time() + deadline - time.monotonic())
        return int(self.mutex_timedlock(mutex, ctypes.byref(when)))

    def init_robust(self, mutex: Any) -> None:
        attr = ctypes.create_string_buffer(_ATTR_BYTES)
        checks = [
            self.mutexattr_init(attr),
            self.mutexattr_settype(attr, _PTHREAD_MUTEX_ERRORCHECK),
            self.mutexattr_setpshared(attr, _PTHREAD_PROCESS_SHARED),
            self.mutexattr_setrobust(attr, _PTHREAD_MUTEX_ROBUST),
            self.mutex_init(mutex, attr),
            self.mutexattr_destroy(attr),
        ]
        for rc in checks:
            if rc:
                raise OSError(rc, f"cannot make a robust mutex: {os.strerror(rc)}")


def _timespec(seconds: float) -> _Timespec:
    whole = math.floor(seconds)
    return _Timespec(whole, min(int((seconds - whole) * 1e9), 999_999_999))


_pthread: _Pthread | None = None


def _pthread_api() -> _Pthread:
    global _pthread
    if _pthread is None:
        _pthread = _Pthread()
    return _pthread


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
    (glibc or musl); elsewhere the constructor raises ``OSError``. Do not
    ``close()`` a handle while a thread of this process holds the lock.
    """

    #: True if the last acquire through this handle took the lock over from
    #: a holder that had died holding it.
    holder_died = False

    def __init__(
        self, *, ctx: BaseContext | None = None, timeout: float | None = DEFAULT_TIMEOUT
    ) -> None:
        self._timeout = _seconds(timeout)
        self._mutex = _context(ctx).RawArray(ctypes.c_ubyte, _MUTEX_BYTES)
        self._attach()
        self._api.init_robust(self._pointer)

    def _attach(self) -> None:
        self._api = _pthread_api()
        self._pointer: Any = ctypes.c_void_p(ctypes.addressof(self._mutex))
        self._trylock = self._api.mutex_trylock
        self._unlock = self._api.mutex_unlock

    def __getstate__(self) -> dict[str, Any]:
        self._check_open()
        return {"mutex": self._mutex, "timeout": self._timeout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._timeout = state["timeout"]
        self._mutex = state["mutex"]
        self._attach()

    def _take(self, blocking: bool, timeout: float | None) -> bool:
        # Uncontended, one call; the timed wait only when the mutex is taken.
        rc = self._trylock(self._pointer)
        if rc == errno.EBUSY and blocking:
            rc = self._wait(timeout)
        if rc == 0:
            self.holder_died = False
            return True
        if rc == errno.EOWNERDEAD:
            # We hold it now; without this call the next unlock would make
            # the mutex unusable for good (ENOTRECOVERABLE).
            self._api.mutex_consistent(self._pointer)
            self.holder_died = True
            return True
        if rc in (errno.ETIMEDOUT, errno.EBUSY):
            return False
        if rc == errno.EDEADLK:
            raise RuntimeError("RobustLock is already held by this thread (it is not re-entrant)")
        raise OSError(rc, f"pthread_mutex_lock: {os.strerror(rc)}")

    def _wait(self, timeout: float | None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wake = time.monotonic() + _SLICE
            if deadline is not None and deadline <= wake:
                return self._api.lock_until(self._pointer, deadline)
            rc = self._api.lock_until(self._pointer, wake)
            if rc != errno.ETIMEDOUT:
                return rc

    def release(self) -> None:
        if self._closed:
            self._check_open()
        rc = self._unlock(self._pointer)
        if rc:
            if rc == errno.EPERM:
                raise ReleaseError("RobustLock is not held by this thread")
            raise OSError(rc, f"pthread_mutex_unlock: {os.strerror(rc)}")

    def close(self) -> None:
        self._closed = True
        self._mutex = self._pointer = None


# ---------------------------------------------------------------- Queue: tokens

_TOKEN = None  # the smallest pickle: 4 bytes


class _TokenQueue(_Primitive):
    """``tokens`` tokens in a Queue of that size: take one to acquire."""

    def __init__(self, tokens: int, ctx: BaseContext | None, timeout: object) -> None:
        self._timeout = _seconds(timeout)
        # maxsize=tokens: a put beyond it, a release too many, raises Full.
        self._tokens = _context(ctx).Queue(maxsize=tokens)
        for _ in range(tokens):
            self._tokens.put_nowait(_TOKEN)

    def __getstate__(self) -> dict[str, Any]:
        self._check_open()
        return {"tokens": self._tokens, "timeout": self._timeout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._tokens = state["tokens"]
        self._timeout = state["timeout"]

    def _take(self, blocking: bool, timeout: float | None) -> bool:
        try:
            self._tokens.get(blocking, timeout)
        except queue.Empty:
            return False
        return True

    def release(self) -> None:
        if self._closed:
            self._check_open()
        try:
            self._tokens.put_nowait(_TOKEN)
        except queue.Full:
            raise ReleaseError(
                f"{type(self).__name__} released more times than acquired"
            ) from None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # join_thread: a token this process released is in the pipe before
        # close() returns (the Queue's feeder thread writes it).
        self._tokens.close()
        self._tokens.join_thread()
        self._tokens = None


class QueueLock(_TokenQueue):
    """One token in a ``multiprocessing.Queue``: take it to hold the lock.

    ``acquire`` is ``Queue.get`` and ``release`` is ``Queue.put``. Not owned:
    any process may put the token back; putting it back when it is there
    raises :class:`ReleaseError`. If the holder dies, the token dies with it
    and every later ``acquire`` returns False at its timeout. ``Queue.get``
    holds the queue's read lock while it waits, so a *waiter* killed while
    waiting breaks the lock too.
    """

    def __init__(
        self, *, ctx: BaseContext | None = None, timeout: float | None = DEFAULT_TIMEOUT
    ) -> None:
        super().__init__(1, ctx, timeout)


class QueueSemaphore(_TokenQueue):
    """``value`` tokens in a ``multiprocessing.Queue``: at most ``value`` holders.

    Bounded like :class:`CtypesSemaphore`; ``value`` may be at most
    :data:`QUEUE_TOKENS_MAX`. A holder that dies takes its token with it.
    """

    def __init__(
        self,
        value: int = 1,
        *,
        ctx: BaseContext | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        value = _value(value, QUEUE_TOKENS_MAX)
        super().__init__(value, ctx, timeout)


class QueueRLock(_TokenQueue):
    """A :class:`QueueLock` whose holder may acquire it again.

    The handle that holds the token keeps its owner (process and thread) and
    depth: a second ``acquire`` by the owner only counts, the token goes back
    when the depth falls to zero. Release by anyone else raises
    :class:`ReleaseError`. Like the standard library's RLock, the depth
    belongs to the handle: two handles in one process do not share it.
    """

    def __init__(
        self, *, ctx: BaseContext | None = None, timeout: float | None = DEFAULT_TIMEOUT
    ) -> None:
        super().__init__(1, ctx, timeout)
        self._owner: tuple[int, int] | None = None
        self._depth = 0

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._owner, self._depth = None, 0

    def _take(self, blocking: bool, timeout: float | None) -> bool:
        me = (os.getpid(), threading.get_ident())
        # Only the owner writes _owner and _depth, and it is not waiting here.
        if self._owner == me:
            self._depth += 1
            return True
        if not super()._take(blocking, timeout):
            return False
        self._owner, self._depth = me, 1
        return True

    def release(self) -> None:
        if self._closed:
            self._check_open()
        if self._owner != (os.getpid(), threading.get_ident()):
            raise ReleaseError("QueueRLock is not held by this thread")
        if self._depth > 1:
            self._depth -= 1
            return
        self._owner, self._depth = None, 0
        super().release()


# ---------------------------------------------------------------- Manager


class _ManagerPrimitive(_Primitive):
    """A ``threading`` lock in a manager's server, used through its proxy."""

    def __init__(
        self,
        make: Callable[[SyncManager], Any],
        manager: SyncManager | None,
        ctx: BaseContext | None,
        timeout: object,
    ) -> None:
        self._timeout = _seconds(timeout)
        self._manager: SyncManager | None = None
        self._creator = os.getpid()
        if manager is None:
            manager = self._manager = SyncManager(ctx=_context(ctx))
            manager.start()
        self._proxy: Any = make(manager)

    def __getstate__(self) -> dict[str, Any]:
        self._check_open()
        return {"proxy": self._proxy, "timeout": self._timeout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._proxy = state["proxy"]
        self._timeout = state["timeout"]
        self._manager = None

    def _take(self, blocking: bool, timeout: float | None) -> bool:
        # The server thread that serves this process waits, not this process.
        return bool(self._proxy.acquire(blocking, timeout))

    def release(self) -> None:
        if self._closed:
            self._check_open()
        try:
            self._proxy.release()
        # Raised in the server and re-raised here: threading.Lock and RLock
        # raise RuntimeError, BoundedSemaphore ValueError.
        except (RuntimeError, ValueError) as error:
            raise ReleaseError(f"{type(self).__name__}: {error}") from None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._proxy = None  # the server drops its object before it stops
        # A forked child holds a copy of the creator's manager: not its to stop.
        if self._manager is not None and os.getpid() == self._creator:
            self._manager.shutdown()
            self._manager = None


class ManagerLock(_ManagerPrimitive):
    """A ``threading.Lock`` in a Manager server; every call is one round trip.

    Pass a started ``SyncManager`` as ``manager`` to share one server between
    primitives; otherwise each starts its own, and its creator's ``close()``
    stops it. Not owned: any process may release it. If the holder dies, the
    server does not notice: the lock stays held. A waiter's wait runs in the
    server, which goes on waiting after the waiter died and may then take the
    lock for it. The server could run on another host; this class starts it
    locally.
    """

    def __init__(
        self,
        *,
        manager: SyncManager | None = None,
        ctx: BaseContext | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__(lambda m: m.Lock(), manager, ctx, timeout)


class ManagerRLock(_ManagerPrimitive):
    """A ``threading.RLock`` in a Manager server.

    The server serves each thread of each process on its own connection and
    server thread, so the owner is the calling process and thread: only it
    may re-enter and release (anyone else gets :class:`ReleaseError`).
    """

    def __init__(
        self,
        *,
        manager: SyncManager | None = None,
        ctx: BaseContext | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__(lambda m: m.RLock(), manager, ctx, timeout)


class ManagerSemaphore(_ManagerPrimitive):
    """A ``threading.BoundedSemaphore(value)`` in a Manager server."""

    def __init__(
        self,
        value: int = 1,
        *,
        manager: SyncManager | None = None,
        ctx: BaseContext | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        value = _value(value, _SEM_VALUE_MAX)
        super().__init__(lambda m: m.BoundedSemaphore(value), manager, ctx, timeout)


# ---------------------------------------------------------------- showing exclusion


class Occupancy:
    """Counts the holders inside a critical section, and the most at once.

    Made to prove a lock or semaphore: every holder calls :meth:`visit`
    while it holds it, and :attr:`peak` is the most holders ever inside at
    once. A section meant for ``capacity`` holders must show a peak of
    exactly ``capacity``: to make "``capacity`` at once" observed rather than
    hoped for, a visitor waits (at most ``timeout``) until ``capacity``
    visitors are inside or all ``entries`` expected visits have begun. Then
    it stays ``window`` seconds more, time in which a broken lock would let
    one visitor too many in.
    """

    def __init__(
        self,
        capacity: int = 1,
        entries: int = 1,
        *,
        ctx: BaseContext | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        context = _context(ctx)
        self.capacity, self.entries, self.timeout = capacity, entries, timeout
        self._changed = context.Condition(context.Lock())
        self._counts = context.RawArray(ctypes.c_int64, 3)  # inside, peak, entered

    @property
    def inside(self) -> int:
        return int(self._counts[0])

    @property
    def peak(self) -> int:
        return int(self._counts[1])

    @property
    def entered(self) -> int:
        return int(self._counts[2])

    def visit(self, window: float = 0.02) -> None:
        counts, changed = self._counts, self._changed
        if not changed.acquire(timeout=self.timeout):
            raise TimeoutError("Occupancy: its own lock was not acquired in time")
        try:
            counts[0] += 1
            counts[1] = max(counts[1], counts[0])
            counts[2] += 1
            changed.notify_all()
            company = changed.wait_for(
                lambda: counts[0] >= self.capacity or counts[2] >= self.entries, self.timeout
            )
            if not company:
                raise TimeoutError(f"fewer than {self.capacity} holders were ever inside at once")
            changed.wait_for(lambda: counts[0] > self.capacity, window)
            counts[0] -= 1
            changed.notify_all()
        finally:
            changed.release()

    def close(self) -> None:
        self._changed = self._counts = None


def occupy(
    lock: SyncPrimitive,
    occupancy: Occupancy,
    rounds: int = 1,
    depth: int = 1,
    start: Any = None,
) -> None:
    """Process target: ``rounds`` times, hold ``lock`` and visit ``occupancy``.

    With ``depth > 1`` the holder acquires ``lock`` that many times (an
    RLock's re-entry) before its visit. With a ``start`` barrier, all wait
    there first, so that they contend from the first round instead of
    arriving one by one as they start up. Closes both handles at the end.
    """
    if start is not None:
        start.wait(occupancy.timeout)
    for _ in range(rounds):
        for _ in range(depth):
            if not lock.acquire(timeout=occupancy.timeout):
                raise TimeoutError(f"{type(lock).__name__} not acquired in time")
        try:
            occupancy.visit()
        finally:
            for _ in range(depth):
                lock.release()
    lock.close()
    occupancy.close()


def outer_inner(lock: SyncPrimitive) -> str:
    """The article's re-entry example: ``outer`` holds the lock and calls ``inner``.

    With an RLock ``inner`` takes the lock again and runs; with a plain Lock
    it waits for itself: its ``with`` raises ``TimeoutError`` after the
    lock's timeout instead of hanging.
    """
    with lock:
        return _inner(lock)


def _inner(lock: SyncPrimitive) -> str:
    with lock:
        return "inner ran inside outer"


def die_holding(lock: SyncPrimitive) -> None:
    """Process target: acquire ``lock``, then die at once by SIGKILL, holding it.

    What a crash, the kernel's OOM killer or ``kill -9`` does to a holder:
    no ``finally``, no ``with`` exit, no release.
    """
    if not lock.acquire(timeout=DEFAULT_TIMEOUT):
        raise TimeoutError(f"{type(lock).__name__} not acquired in time")
    os.kill(os.getpid(), signal.SIGKILL)
