"""What every way of every primitive shares: closing, timeouts, checks, errors.

A handle is open until ``close()``; a closed handle refuses every call with
``ValueError`` (or the primitive's subclass of it) before looking at the
arguments. ``with`` closes it, and a failure of that ``close()`` never
replaces the exception that ended the block.

Timeouts follow one rule (:func:`seconds`): ``None`` waits as long as it
takes, a number is seconds; ``bool``, NaN and negative numbers are refused;
``inf`` and anything past :data:`LONGEST_WAIT` mean ``None``, and such waits
are done in slices, since the OS calls underneath cannot take them whole.

This module is part of every generated standalone file
(``python -m shmref.standalone NAME``): it imports only the standard library.
"""

from __future__ import annotations

import math
import multiprocessing
import multiprocessing.connection
import numbers
import os
import pickle
import time
import weakref
from collections.abc import Callable
from multiprocessing.context import BaseContext
from typing import Any

#: The signed 64-bit range: what a C int64 (and every way's counter, board
#: and table) holds. ctypes would silently wrap a value outside it.
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

#: Seconds a call waits for a lock or a reply before raising TimeoutError,
#: unless the constructor's ``timeout`` says otherwise. Long enough for a
#: loaded machine, short enough that a dead peer is noticed.
DEFAULT_TIMEOUT = 30.0

#: The longest wait handed to one OS call. ``poll()`` takes milliseconds in
#: a C int (about 24.8 days) and ``sem_timedwait`` a deadline that must not
#: overflow; a day fits both everywhere.
LONGEST_WAIT = 86_400.0

#: How often a wait with no deadline, or a long one, looks up to check that
#: its peer is still there and its handle still open.
SLICE = 0.1


def reply_within(timeout: float | None, wait: float = 0.0) -> float | None:
    """How long a caller waits for a reply before it calls its peer stopped or hung.

    The request's own wait in the owner or server (``wait``), the handle's
    ``timeout``, and as much again, at least a second: a peer that is only
    slow, on a loaded machine or running a long ``update``, must not be
    given up on lightly, since a request given up on may still run. None
    (``timeout=None``): no end.
    """
    if timeout is None:
        return None
    return wait + timeout + max(1.0, timeout)


#: Seconds a creator's close() gives its owner process or Manager server to
#: stop before it kills it: one stopped (SIGSTOP) or hung would never stop.
STOP_WAIT = 2.0

#: Seconds between an idle owner's checks that its creator is still alive.
IDLE_CHECK = 1.0


class OwnerGone(ConnectionError):
    """The process that holds the shared state (an owner or a server) is gone.

    Raised by the Queue and Manager ways when their owner process or Manager
    server has died or been stopped by its creator's ``close()``.
    """


def context(ctx: BaseContext | None) -> Any:
    """``ctx``, or the default context; ``Any`` since typeshed's lacks Process."""
    return ctx if ctx is not None else multiprocessing.get_context()


def seconds(timeout: object, what: str = "timeout") -> float | None:
    """A checked timeout: None (as long as it takes) or seconds from 0 to LONGEST_WAIT.

    >>> seconds(2), seconds(None), seconds(float("inf")), seconds(1e12)
    (2.0, None, None, None)
    >>> seconds(True)
    Traceback (most recent call last):
      ...
    TypeError: timeout must be a number of seconds or None, not bool
    """
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise TypeError(
            f"{what} must be a number of seconds or None, not {type(timeout).__name__}"
        )
    value = float(timeout)
    if math.isnan(value) or value < 0:
        raise ValueError(f"{what} must be a number of seconds >= 0 or None, not {timeout!r}")
    return None if value > LONGEST_WAIT else value


class Deadline:
    """A wait of ``timeout`` seconds (None: no end), taken in slices.

    ``next_slice()`` is how long the next OS wait may last: at most
    :data:`SLICE`, so that the waiter can look at its peer between slices,
    and never past the deadline. ``expired`` is True once the time is up.
    """

    __slots__ = ("end", "timeout")

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        self.end = None if timeout is None else time.monotonic() + timeout

    @property
    def expired(self) -> bool:
        return self.end is not None and time.monotonic() >= self.end

    def next_slice(self) -> float:
        if self.end is None:
            return SLICE
        return max(0.0, min(SLICE, self.end - time.monotonic()))


def integer(value: object, what: str) -> int:
    """``value`` as an int: an int or an integral number such as numpy's, never a bool."""
    if value.__class__ is int:
        return value
    if isinstance(value, bool) or type(value).__name__ in ("bool_", "bool"):
        raise TypeError(f"{what} must be an int, not bool")
    if not isinstance(value, numbers.Integral):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    return int(value)


def real(value: object, what: str) -> float:
    """``value`` as a float: an int, a float or a real number such as numpy's, never a bool."""
    if value.__class__ is float:
        return value
    if isinstance(value, bool) or type(value).__name__ in ("bool_", "bool"):
        raise TypeError(f"{what} must be a number, not bool")
    if not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be a number, not {type(value).__name__}")
    return float(value)


def size(value: object, what: str, limit: int = 2**31 - 1, low: int = 1) -> int:
    """A checked size or count: an int from ``low`` to ``limit``.

    One bound for every way, so that a size one way's ctypes cannot hold is
    refused by all of them with the same error.
    """
    try:
        number = integer(value, what)
    except TypeError:
        raise ValueError(f"{what} must be an int from {low} to {limit}, not {value!r}") from None
    if not low <= number <= limit:
        raise ValueError(f"{what} must be an int from {low} to {limit}, not {value!r}")
    return number


def timed_out(what: str, timeout: float | None) -> TimeoutError:
    return TimeoutError(f"{what} not acquired within {timeout} s (a holder may have died)")


def acquire(lock: Any, timeout: float | None, what: str, handle: Any = None) -> None:
    """Take ``lock`` within ``timeout`` seconds, or raise ``TimeoutError``.

    The wait is done in slices, and ``handle._check_peers()`` runs between
    them (``handle`` is a :class:`Closable`, or anything with that method):
    a handle closed meanwhile by another thread, or whose creator is gone,
    wakes its waiters with its error instead of letting them wait out their
    timeout.
    """
    if lock.acquire(False):
        return
    deadline = Deadline(timeout)
    while not lock.acquire(True, deadline.next_slice()):
        if handle is not None:
            handle._check_peers()
        if deadline.expired:
            raise timed_out(what, timeout)


def portable(error: BaseException) -> BaseException:
    """``error`` if it survives pickling, else a ``RuntimeError`` that names it.

    Every way uses this for an exception raised by a user's function, so the
    same function gives the same exception type in every way: the Queue and
    Manager ways must send it to the caller, and one that does not pickle
    would never arrive.
    """
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        wrapper = RuntimeError(
            f"{type(error).__name__}: {error} (raised by fn; it cannot be pickled)"
        )
        wrapper.__cause__ = error
        return wrapper
    return error


def run(fn: Callable[..., Any], *args: Any) -> tuple[bool, Any]:
    """``(True, fn(*args))``, or ``(False, error)`` for anything ``fn`` raised.

    ``BaseException`` too: a ``SystemExit`` or ``KeyboardInterrupt`` raised
    by a user's function in an owner or server must reach the caller, not end
    the process that serves everyone.
    """
    try:
        return True, fn(*args)
    except BaseException as error:
        return False, portable(error)


def pickled(fn: object, args: tuple[Any, ...] = ()) -> bytes:
    """``(fn, args)`` pickled here, in the caller: a lambda fails now, clearly."""
    if not callable(fn):
        raise TypeError(f"fn must be a function, not {type(fn).__name__}")
    try:
        return pickle.dumps((fn, args))
    except Exception as error:
        raise TypeError(
            f"fn runs in another process, which must be able to import it: use a "
            f"module-level function, not {fn!r} ({type(error).__name__}: {error})"
        ) from None


def unpickled(payload: bytes) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    """The owner's or server's side of :func:`pickled`."""
    try:
        fn, args = pickle.loads(payload)
    except Exception as error:
        raise TypeError(f"the serving process cannot import fn: {error}") from None
    return fn, args


class Closable:
    """The close/context-manager half of every protocol.

    A subclass sets ``_closed_error`` if it has its own subclass of
    ``ValueError`` and overrides ``_release()`` to free what it holds;
    ``close()`` marks the handle closed first, so a second call, or a call
    from another thread, finds it closed.
    """

    _closed = False
    _closed_error: type[ValueError] = ValueError

    def _refuse(self) -> None:
        raise self._closed_error(f"{type(self).__name__} is closed")

    def _check_open(self) -> None:
        if self._closed:
            self._refuse()

    #: The creator's :class:`Lifeline`, for a handle whose waits in other
    #: processes only the creator can end (None: no such wait).
    _lifeline: Lifeline | None = None

    def _creator_gone(self) -> bool:
        return self._lifeline is not None and self._lifeline.gone()

    def _check_peers(self) -> None:
        """Between two slices of a wait: raise if the wait can no longer end well.

        If another thread closed the handle, or if its creator is gone.
        """
        if self._closed:
            self._refuse()
        if self._creator_gone():
            raise self._closed_error(
                f"{type(self).__name__} is closed: its creator is gone (it exited without close())"
            )

    def _release(self) -> None:
        """Free what this handle holds (called once, by the first ``close()``)."""

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._release()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.close()
        except Exception as error:  # never hide the error that ended the block
            add_note = getattr(exc, "add_note", None)  # Python 3.11+
            if add_note is not None:
                add_note(f"and close() failed: {type(error).__name__}: {error}")


# ---------------------------------------------------------------- the creator's lifeline


class Lifeline:
    """Lets every process see whether the process that created a handle is gone.

    The creator holds the only write end of a pipe; the other processes
    hold read ends, which read as ready (end of file) once the creator has
    exited, SIGKILL included, a zombie too. A wait on something only the
    creator can end (its ``close()``, a token it would give back) looks at
    :meth:`gone` between slices, so that it ends instead of waiting for
    ever. One per creating process (:func:`lifeline`), shared by its handles.
    """

    def __init__(self) -> None:
        reader, writer = multiprocessing.Pipe(duplex=False)
        self._reader: Any = reader
        self._writer: Any = writer
        self.creator = os.getpid()
        reset_after_fork(self)

    def __getstate__(self) -> dict[str, Any]:
        return {"reader": self._reader, "creator": self.creator}  # never the write end

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._reader, self.creator, self._writer = state["reader"], state["creator"], None

    def _after_fork(self) -> None:
        # A forked child inherits the write end: holding it, the child would
        # keep the creator "alive" for everyone after the creator's death.
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def wait(self) -> None:
        """Return once the creator has exited (never, in the creator)."""
        if self._writer is not None:
            raise RuntimeError("the creator cannot wait for its own end")
        multiprocessing.connection.wait([self._reader])

    def gone(self) -> bool:
        """True once the creator has exited; always False in the creator."""
        if self._writer is not None:
            return False
        try:
            return bool(self._reader.poll())
        except (OSError, ValueError):  # our read end is closed
            return True


_lifeline: Lifeline | None = None


def lifeline() -> Lifeline:
    """This process's :class:`Lifeline`, made on first use."""
    global _lifeline
    if _lifeline is None or _lifeline.creator != os.getpid():
        _lifeline = Lifeline()
    return _lifeline


# ---------------------------------------------------------------- after fork

# Objects whose process-local state (a claimed slot, buffered adds, a
# received batch) belongs to the parent, not to a forked child: one registry,
# reset in the child by one hook.
_forked: weakref.WeakSet[Any] = weakref.WeakSet()


def reset_after_fork(handle: Any) -> None:
    """Call ``handle._after_fork()`` in every child forked from now on."""
    _forked.add(handle)


def _reset_forked() -> None:
    for handle in list(_forked):
        handle._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_forked)
