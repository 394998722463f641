"""The internal lock of a ctypes way, and its take-over when the process holding it dies.

A ctypes way guards its shared state with a ``multiprocessing`` Lock, a POSIX
semaphore in shared memory: one C call to take it, one to give it back. A
semaphore does not know who holds it, so a holder that is SIGKILLed inside a
call keeps it for good, and every later call in every process times out.

A :class:`Holder` is that Lock plus a record, in shared memory, of the process
holding it: the critical section stores its pid right after taking the lock
and 0 right before giving it back (two stores, about 25 ns each). Nothing
else is added to the uncontended path. Only a waiter whose wait slice runs
out looks at the record: if the lock stays taken while the record shows a
dead process, or none (a holder killed between taking the lock and storing
its pid), for :data:`STALE` seconds, the waiter takes the lock over. Under a
robust pthread mutex, which serialises take-overs and survives a taker's own
death, it checks again, lets the way repair what the dead holder may have
left half done, and gives the semaphore back, bypassing the Lock object,
whose per-process count belongs to the dead holder.

What it cannot tell apart, and so what a take-over may get wrong:

* a live process frozen (SIGSTOP, or not scheduled at all) for ``STALE``
  seconds in the few instructions between taking the lock and storing its
  pid: its take-over lets two processes into the critical section;
* a dead holder whose pid was reused by a new process: it looks alive, and
  the waiters time out as they would without a Holder.

A critical section is written as one ``try``: an exception, a
``KeyboardInterrupt`` included, anywhere in it, lock-taking included, goes to
:meth:`Holder.abandon`, which gives the lock back if this thread holds it.
(Since 3.11 Python runs signal handlers right after C calls return; 3.10 at
almost any bytecode: a ``try`` that opens after ``acquire`` would miss an
interrupt between the two.)

Where the platform has no robust mutexes (macOS), there is no take-over: a
waiter times out, as with a bare Lock.
"""

from __future__ import annotations

import ctypes
import errno
import math
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from shmref.lifecycle import SLICE, Deadline, reset_after_fork, timed_out

#: Seconds a lock must stay taken by a dead (or unrecorded) holder before a
#: waiter takes it over: many wait slices, so that a live process descheduled
#: right after taking the lock has time to record itself.
STALE = 1.0

# From the POSIX headers of Linux (glibc and musl agree on them).
_PTHREAD_MUTEX_ERRORCHECK = 2
_PTHREAD_PROCESS_SHARED = 1
_PTHREAD_MUTEX_ROBUST = 1
#: Bytes to allocate for a pthread_mutex_t: sizeof is 40 on x86-64, 48 on
#: AArch64: leave room.
MUTEX_BYTES = 64
_ATTR_BYTES = 64

#: The memory of every robust mutex a thread of this process holds. glibc and
#: the kernel link a thread's held robust mutexes in a list that runs through
#: the mutexes themselves: memory freed while its mutex is held (a handle
#: closed or dropped by its holder) would be reused, and the next lock or
#: unlock of any robust mutex by that thread would write into whatever lives
#: there now (seen: a fresh lock's unlock failing with EPERM or EINVAL). So
#: whoever locks one adds its buffer here (by id), and removes it after unlocking; a
#: mutex that is never unlocked keeps its memory (a few bytes) for good. Only
#: a mutex's holder adds or removes it, so threads cannot race on an entry.
HELD: dict[int, Any] = {}  # id -> buffer: ctypes buffers are unhashable
os.register_at_fork(after_in_child=HELD.clear)  # a child holds none of them


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Pthread:
    """The pthread functions robust mutexes need, typed for ctypes."""

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
    sem_post: Any

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
            "sem_post": [p],
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
                    errno.ENOSYS, f"no POSIX robust mutexes here: {name} is missing"
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


def _timespec(when: float) -> _Timespec:
    whole = math.floor(when)
    return _Timespec(whole, min(int((when - whole) * 1e9), 999_999_999))


_pthread: _Pthread | None = None


def pthread_api() -> _Pthread:
    """The pthread functions, loaded once per process; ``OSError`` where there are none."""
    global _pthread
    if _pthread is None:
        _pthread = _Pthread()
    return _pthread


def _robust() -> _Pthread | None:
    try:
        return pthread_api()
    except OSError:
        return None


def process_gone(pid: int) -> bool:
    """True if no live process has this pid; a zombie (dead, not yet reaped) is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # pid (comm) state ...: comm may hold spaces and parentheses.
            state = stat.read().rpartition(b")")[2].split()[0]
        return state in (b"Z", b"X")
    except FileNotFoundError:
        return True
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


# The record: [pid of the holder (0: none, or not recorded yet), take-overs].
_PID, _EPOCH = 0, 1
_RECORD_BYTES = 16


class Holder:
    """A ``multiprocessing`` Lock that a waiter can take over from a dead holder.

    ``lock`` is the Lock; ``record`` a memoryview of two int64 in shared
    memory, whose item 0 a critical section sets to ``pid`` right after
    taking the lock and to 0 right before giving it back. Pickles to
    children with the handle that owns it.
    """

    #: The thread of this process holding the lock through a
    #: :class:`RecordedLock`, if any. A critical section that this thread
    #: enters meanwhile can only time out (a Lock is not re-entrant), and its
    #: :meth:`abandon` must not give back a lock it did not take.
    outer: int | None = None

    def __init__(self, ctx: Any) -> None:
        self.lock = ctx.Lock()
        self._shared = ctx.RawArray(ctypes.c_ubyte, _RECORD_BYTES + MUTEX_BYTES)
        self._attach()
        api = _robust()
        if api is not None:
            api.init_robust(self._mutex)

    def _attach(self) -> None:
        view = memoryview(self._shared).cast("B")
        self.record = view[:_RECORD_BYTES].cast("q")
        self._mutex = ctypes.c_void_p(ctypes.addressof(self._shared) + _RECORD_BYTES)
        self.pid = os.getpid()
        reset_after_fork(self)

    def _after_fork(self) -> None:
        self.pid = os.getpid()
        self.outer = None

    def __getstate__(self) -> dict[str, Any]:
        return {"lock": self.lock, "shared": self._shared}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.lock = state["lock"]
        self._shared = state["shared"]
        self._attach()

    def wait(
        self,
        timeout: float | None,
        what: str,
        handle: Any = None,
        repair: Callable[[], None] | None = None,
    ) -> None:
        """Take the lock within ``timeout`` seconds, taking it over from a dead holder.

        For a caller whose first try failed. Between slices, like
        :func:`~shmref.lifecycle.acquire`, it runs ``handle._check_peers()``;
        ``repair()`` runs, under the lock, after a take-over.
        """
        lock, record = self.lock, self.record
        deadline = Deadline(timeout)
        seen: tuple[int, int] | None = None
        since = 0.0
        while not lock.acquire(True, deadline.next_slice()):
            if handle is not None:
                handle._check_peers()
            now = time.monotonic()
            holder = (record[_PID], record[_EPOCH])
            if holder != seen:
                seen, since = holder, now
            elif now - since >= STALE and (holder[0] == 0 or process_gone(holder[0])):
                self._take_over(holder, repair)
                seen = None
                continue
            if deadline.expired:
                raise timed_out(what, timeout)

    def _take_over(self, holder: tuple[int, int], repair: Callable[[], None] | None) -> None:
        api = _robust()
        if api is None:
            return  # no robust mutex to serialise take-overs: time out instead
        rc = api.lock_until(self._mutex, time.monotonic() + SLICE)
        if rc == errno.EOWNERDEAD:  # a taker died during its take-over: redo it
            api.mutex_consistent(self._mutex)
        elif rc:
            return  # another waiter is taking it over
        HELD[id(self._shared)] = self._shared
        try:
            record = self.record
            if (record[_PID], record[_EPOCH]) != holder:
                return  # taken over, or taken by a live process, meanwhile
            if self.lock.acquire(False):  # given back meanwhile
                self.lock.release()
                return
            if repair is not None:
                repair()  # exclusive: the dead holder's lock keeps everyone out
            record[_PID] = 0
            record[_EPOCH] = holder[1] + 1
            # The Lock object's release() would also change this process's
            # count of the lock (which the dead holder's take made, in its own
            # process): post the semaphore itself.
            rc = api.sem_post(self.lock._semlock.handle)
            if rc:
                raise OSError(ctypes.get_errno(), "sem_post failed during a take-over")
        finally:
            api.mutex_unlock(self._mutex)
            HELD.pop(id(self._shared), None)

    def enter(
        self,
        timeout: float | None,
        what: str,
        handle: Any = None,
        repair: Callable[[], None] | None = None,
    ) -> None:
        """Take the lock (see :meth:`wait`) and record this process as its holder.

        Call it inside the critical section's ``try``, whose ``except
        BaseException`` calls :meth:`abandon`.
        """
        if not self.lock.acquire(False):
            self.wait(timeout, what, handle, repair)
        self.record[_PID] = self.pid

    def leave(self) -> None:
        """End the critical section: clear the record, give the lock back."""
        self.record[_PID] = 0
        self.lock.release()

    def abandon(self, repair: Callable[[], None] | None = None) -> None:
        """In a critical section's ``except``: give the lock back if this thread holds it.

        ``repair()`` runs first, under the lock, for a section that may be
        half done.
        """
        semlock = self.lock._semlock
        if semlock._is_mine() and self.outer != threading.get_ident():
            try:
                if repair is not None:
                    repair()
            finally:
                self.record[_PID] = 0
                self.lock.release()


class RecordedLock:
    """A :class:`Holder`'s lock as a lock object, for code outside the way's calls.

    ``acquire``, ``release`` and ``with`` as on a ``multiprocessing`` Lock,
    but they record the holder: a process killed while it holds this lock is
    taken over like one killed inside a call (a bare Lock would look, to a
    waiter, like a holder killed before recording itself, and a live holder
    keeping it over :data:`STALE` seconds would be taken over). ``with``
    waits at most ``timeout`` seconds, then raises ``TimeoutError``.
    """

    def __init__(self, holder: Holder, timeout: float | None, what: str) -> None:
        self._holder, self._timeout, self._what = holder, timeout, what

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        holder = self._holder
        me = threading.get_ident()
        if holder.outer == me:
            # Held by this thread already: only another process's release()
            # can let it through, as with a Lock.
            if not holder.lock.acquire(block, timeout):
                return False
            holder.record[_PID] = holder.pid
            return True
        try:
            if not holder.lock.acquire(False):
                if not block:
                    return False
                try:
                    holder.wait(timeout, self._what)
                except TimeoutError:
                    return False
            holder.record[_PID] = holder.pid
            holder.outer = me
        except BaseException:
            holder.abandon()
            raise
        return True

    def release(self) -> None:
        holder = self._holder
        holder.outer = None
        holder.leave()

    def __enter__(self) -> bool:
        if not self.acquire(True, self._timeout):
            raise timed_out(self._what, self._timeout)
        return True

    def __exit__(self, *exc: object) -> None:
        self.release()


__all__ = ["MUTEX_BYTES", "STALE", "Holder", "RecordedLock", "process_gone", "pthread_api"]
