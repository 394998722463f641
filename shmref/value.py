"""A typed shared scalar, three ways.

Every class here implements :class:`Value`: ``get()``, ``set(x)``,
``update(fn, *args)``, ``close()`` and the context-manager protocol, for one
scalar of a C type from :data:`TYPES` (``c_int``, ``c_long``, ``c_longlong``,
``c_float``, ``c_double``, ``c_bool``, ``c_char``).

* ctypes shared memory: :class:`CtypesValue` (a ``RawValue`` and a lock);
* message passing: :class:`QueueValue` (an owner process holds the value and
  applies the messages that others put on a ``multiprocessing.Queue``);
* a Manager server: :class:`ManagerValue` (the value lives in the server,
  one round trip per call).

``update(fn, *args)`` is an atomic read-modify-write: it stores
``fn(current, *args)`` with no other change in between and returns it. The
owner process or the manager server runs ``fn`` on its side, so ``fn`` must
be importable there: a module-level function such as ``operator.add``.

Every value is checked against its C type before it is stored, including the
result of ``fn``: a value the type cannot hold raises ``TypeError``,
``OverflowError`` or ``ValueError`` and the stored value stays as it was.
(ctypes itself silently wraps ``2**31`` stored into a ``c_int`` to
``-2147483648``.) A ``c_float`` stores the nearest single-precision float,
so ``get()`` after ``set(0.1)`` returns ``0.10000000149011612``.

Objects pass to child processes as ``Process`` arguments under every start
method. The process that creates a value owns it: its ``close()`` stops the
owner process or server; ``close()`` in another process only detaches that
process's handle. This module imports only the standard library: copy it
alone into a project and it works.
"""

from __future__ import annotations

import ctypes
import math
import multiprocessing
import operator
import os
import pickle
import queue
import struct
import threading
from collections.abc import Callable
from multiprocessing.context import BaseContext
from multiprocessing.managers import BaseManager
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

__all__ = [
    "DEFAULT_TIMEOUT",
    "TYPES",
    "CtypesValue",
    "ManagerValue",
    "QueueValue",
    "Value",
    "ValueManager",
    "check",
    "update_worker",
]

T = TypeVar("T")

#: The C types a value can have, by the name this module uses for them. On
#: LP64 systems (64-bit Linux and macOS) ``c_longlong`` is ``c_long`` itself.
TYPES: dict[str, type[Any]] = {
    "c_int": ctypes.c_int,
    "c_long": ctypes.c_long,
    "c_longlong": ctypes.c_longlong,
    "c_float": ctypes.c_float,
    "c_double": ctypes.c_double,
    "c_bool": ctypes.c_bool,
    "c_char": ctypes.c_char,
}

#: Seconds a call waits for a lock or a reply before raising TimeoutError.
DEFAULT_TIMEOUT = 30.0

_INTEGERS = (ctypes.c_int, ctypes.c_long, ctypes.c_longlong)
_FLOATS = (ctypes.c_float, ctypes.c_double)


def _name(ctype: type[Any]) -> str:
    for name, known in TYPES.items():
        if known is ctype:
            return name
    return getattr(ctype, "__name__", repr(ctype))


def _supported(ctype: object) -> type[Any]:
    if not any(ctype is known for known in TYPES.values()):
        names = ", ".join(f"ctypes.{name}" for name in TYPES)
        raise TypeError(f"unsupported type {ctype!r}; use one of {names}")
    return ctype  # type: ignore[return-value]


def check(ctype: type[ctypes._SimpleCData[T]], value: object) -> T:
    """``value`` as ``ctype`` stores it, or an error if ``ctype`` cannot hold it.

    Integers must be ``int`` (not ``bool``) within the type's signed range
    (``OverflowError`` outside it); floats accept ``int`` and ``float`` and
    are rounded as the type rounds them (``OverflowError`` if a finite value
    would become infinite); ``c_bool`` accepts ``bool``; ``c_char`` accepts
    ``bytes`` of length 1 (``ValueError`` for another length).

    >>> import ctypes
    >>> check(ctypes.c_float, 0.1)
    0.10000000149011612
    >>> check(ctypes.c_int, 2**31)
    Traceback (most recent call last):
      ...
    OverflowError: 2147483648 does not fit in c_int (signed 32-bit: -2147483648 to 2147483647)
    """
    return _checker_for(ctype)(value)  # type: ignore[no-any-return]


def _checker(ctype: type[Any]) -> Callable[[object], Any]:
    """A function doing ``check(ctype, value)``, fast for the common values."""
    _supported(ctype)

    def slowly(value: object) -> Any:
        return _check_slowly(ctype, value)

    if ctype in _INTEGERS:
        bits = 8 * ctypes.sizeof(ctype)
        low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1

        def integer(value: object) -> Any:
            if value.__class__ is int and low <= value <= high:
                return value
            return slowly(value)

        return integer
    if ctype is ctypes.c_double:

        def double(value: object) -> Any:
            return value if value.__class__ is float else slowly(value)

        return double
    if ctype is ctypes.c_bool:

        def boolean(value: object) -> Any:
            return value if value is True or value is False else slowly(value)

        return boolean
    if ctype is ctypes.c_char:

        def char(value: object) -> Any:
            if value.__class__ is bytes and len(value) == 1:
                return value
            return slowly(value)

        return char
    # c_float: the nearest single-precision float, unless that is infinite.
    pack, unpack = struct.Struct("f").pack, struct.Struct("f").unpack
    isfinite = math.isfinite

    def single(value: object) -> Any:
        if value.__class__ is float:
            try:
                (rounded,) = unpack(pack(value))
            except OverflowError:  # raised by some Pythons, the others give inf
                return slowly(value)
            if isfinite(rounded) or not isfinite(value):
                return rounded
        return slowly(value)

    return single


def _checker_for(ctype: object) -> Callable[[object], Any]:
    checker = _CHECKERS.get(ctype)
    if checker is None:
        _supported(ctype)  # raises TypeError
        raise AssertionError(ctype)
    return checker


def _check_slowly(ctype: type[Any], value: object) -> Any:
    name = _name(_supported(ctype))
    kind = type(value).__name__
    if ctype in _INTEGERS:
        # bool is an int subclass; storing True as 1 is almost always a bug.
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} holds an int, not {kind}")
        bits = 8 * ctypes.sizeof(ctype)
        low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        if not low <= value <= high:
            raise OverflowError(
                f"{value} does not fit in {name} (signed {bits}-bit: {low} to {high})"
            )
        return int(value)
    if ctype in _FLOATS:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} holds a float or an int, not {kind}")
        try:
            number = float(value)
            if ctypes.sizeof(ctype) == 4:
                # The rounding the C float store does (some Pythons' struct
                # raises OverflowError, others round to infinity).
                finite = math.isfinite(number)
                (number,) = struct.unpack("f", struct.pack("f", number))
                if finite and not math.isfinite(number):
                    raise OverflowError
        except OverflowError:
            raise OverflowError(f"{value!r} is too large for {name}") from None
        return number
    if ctype is ctypes.c_bool:
        if not isinstance(value, bool):
            raise TypeError(f"c_bool holds a bool, not {kind}")
        return value
    if not isinstance(value, bytes):
        raise TypeError(f"c_char holds one byte (bytes of length 1), not {kind}")
    if len(value) != 1:
        raise ValueError(f"c_char holds one byte, not {len(value)}: {value!r}")
    return bytes(value)


_CHECKERS: dict[object, Callable[[object], Any]] = {
    ctype: _checker(ctype) for ctype in TYPES.values()
}


def _zero(ctype: type[Any]) -> Any:
    return ctype().value


def _context(ctx: BaseContext | None) -> Any:
    # Any: typeshed's BaseContext lacks Process, and the shared objects it
    # makes are replaced by None on close().
    return ctx if ctx is not None else multiprocessing.get_context()


def _timed_out(what: str, timeout: float | None) -> TimeoutError:
    return TimeoutError(f"{what} not acquired within {timeout} s (a holder may have died)")


def _acquire(lock: Any, timeout: float | None, what: str) -> None:
    if not lock.acquire(timeout=timeout):
        raise _timed_out(what, timeout)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. EPERM: it exists, as another user
        return True
    return True


def _pack(fn: Callable[..., Any], args: tuple[Any, ...]) -> bytes:
    """``(fn, args)`` as bytes the owner can load, or a clear error here."""
    if not callable(fn):
        raise TypeError(f"update needs a function, not {type(fn).__name__}")
    try:
        return pickle.dumps((fn, args))
    except Exception as error:
        raise TypeError(
            f"update runs fn in another process, which must be able to import it: "
            f"use a module-level function, not {fn!r} ({error})"
        ) from None


def _apply(ctype: type[Any], value: Any, payload: bytes) -> Any:
    """The owner's or server's side of ``update``: the new value, checked."""
    try:
        fn, args = pickle.loads(payload)
    except Exception as error:
        raise TypeError(f"the owner process cannot import the update function: {error}") from None
    return check(ctype, fn(value, *args))


def _portable(error: BaseException) -> BaseException:
    # An exception that does not pickle would never reach the caller.
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error


@runtime_checkable
class Value(Protocol[T]):
    """What every value in this module guarantees.

    ``get()`` returns the value; ``set(x)`` stores ``x``; ``update(fn,
    *args)`` atomically stores ``fn(current, *args)`` and returns it. A value
    the type cannot hold (see :func:`check`), from ``set`` or from ``fn``,
    raises and leaves the value as it was; so does an exception raised by
    ``fn``. After ``close()`` every call raises ``ValueError``; ``close()``
    may be called again.
    """

    def get(self) -> T: ...

    def set(self, value: T) -> None: ...

    def update(self, fn: Callable[..., T], *args: Any) -> T: ...

    def close(self) -> None: ...

    def __enter__(self) -> Value[T]: ...

    def __exit__(self, *exc: object) -> None: ...


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


class CtypesValue(_Closable, Generic[T]):
    """A ``RawValue`` in shared memory, guarded by a lock.

    Guarantees: ``set`` and ``update`` are atomic; ``get`` returns the value
    after the last ``set`` or ``update`` to complete in any process. ``fn``
    runs in the calling process while it holds the lock, so any callable
    works, and a slow ``fn`` makes the others wait. If a process dies while
    holding the lock, other callers raise ``TimeoutError`` after
    ``timeout`` seconds.

    >>> import ctypes
    >>> from shmref.value import CtypesValue
    >>> with CtypesValue(ctypes.c_int, 40) as v:
    ...     v.update(operator.add, 2)
    ...     v.get()
    42
    42
    """

    def __init__(
        self,
        ctype: type[ctypes._SimpleCData[T]],
        value: T | None = None,
        *,
        ctx: BaseContext | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        self._check = _checker_for(ctype)
        initial = _zero(ctype) if value is None else self._check(value)
        context = _context(ctx)
        self.ctype = ctype
        self._raw = context.RawValue(ctype, initial)
        # A plain Lock, not Value's default RLock: no call re-enters.
        self._lock = context.Lock()
        self._timeout = timeout

    def __getstate__(self) -> dict[str, Any]:
        self._check_open()
        return {
            "ctype": self.ctype,
            "raw": self._raw,
            "lock": self._lock,
            "timeout": self._timeout,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.ctype = state["ctype"]
        self._check = _checker_for(self.ctype)
        self._raw = state["raw"]
        self._lock = state["lock"]
        self._timeout = state["timeout"]

    # get and set are a few hundred nanoseconds: they inline what the
    # helpers do, and need no try/finally (nothing between acquire and
    # release can raise).

    def get(self) -> T:
        if self._closed:
            self._check_open()
        lock = self._lock
        if not lock.acquire(True, self._timeout):
            raise _timed_out("value lock", self._timeout)
        value = self._raw.value
        lock.release()
        return value  # type: ignore[no-any-return]

    def set(self, value: T) -> None:
        value = self._check(value)
        if self._closed:
            self._check_open()
        lock = self._lock
        if not lock.acquire(True, self._timeout):
            raise _timed_out("value lock", self._timeout)
        self._raw.value = value
        lock.release()

    def update(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            self._check_open()
        lock = self._lock
        if not lock.acquire(True, self._timeout):
            raise _timed_out("value lock", self._timeout)
        try:
            new: T = self._check(fn(self._raw.value, *args))
            self._raw.value = new
            return new
        finally:
            lock.release()

    def close(self) -> None:
        # Drop the shared objects: their memory and semaphore go with the
        # last handle, in whichever process that is.
        self._closed = True
        self._raw = self._lock = None


# Queue way: messages from any process to the owner, replies on one queue.
_SET = "set"
_GET = "get"
_UPDATE = "update"
_STOP = "stop"

#: Seconds between the owner's checks that its creator is still alive.
_IDLE_CHECK = 1.0


def _queue_owner(requests: Any, replies: Any, ctype: type[Any], value: Any, creator: int) -> None:
    """Owner process of a :class:`QueueValue`: applies messages in order."""
    while True:
        try:
            message = requests.get(timeout=_IDLE_CHECK)
        except queue.Empty:
            # Not os.getppid(): under forkserver the parent is the fork server.
            if not _alive(creator):  # the creator died without close()
                return
            continue
        kind = message[0]
        if kind == _SET:
            value = message[1]  # checked by the sender
        elif kind == _GET:
            replies.put((message[1], value, None))
        elif kind == _UPDATE:
            try:
                new = _apply(ctype, value, message[2])
            except Exception as error:
                replies.put((message[1], None, _portable(error)))
            else:
                value = new
                replies.put((message[1], new, None))
        elif kind == _STOP:
            replies.put((message[1], value, None))
            return


class QueueValue(_Closable, Generic[T]):
    """A value held by an owner process, read and written by messages.

    ``set`` checks the value, puts a message and returns without waiting;
    ``get`` and ``update`` send a request and wait for the reply. One queue
    carries everything and a process's messages arrive in the order it sent
    them, so ``get`` sees every ``set`` made before it *by the same
    process*; another process's ``set`` is seen once that process has itself
    called ``get`` or ``update`` after it. ``update`` runs ``fn`` in the
    owner, which applies one message at a time, so it is atomic; ``fn`` must
    be importable by the owner (a module-level function).

    If the owner dies, ``get`` and ``update`` raise ``TimeoutError`` after
    ``timeout`` seconds; a ``set`` sent meanwhile is lost.

    >>> import ctypes
    >>> from shmref.value import QueueValue
    >>> with QueueValue(ctypes.c_double, 1.5) as v:
    ...     v.set(2.5)
    ...     v.update(operator.mul, 2)
    5.0
    """

    def __init__(
        self,
        ctype: type[ctypes._SimpleCData[T]],
        value: T | None = None,
        *,
        ctx: BaseContext | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        self._check = _checker_for(ctype)
        initial = _zero(ctype) if value is None else self._check(value)
        context = _context(ctx)
        self.ctype = ctype
        self._requests = context.Queue()
        self._replies = context.Queue()
        # One reply queue for all callers: a caller holds this lock from its
        # request to its reply, so it cannot take another caller's reply.
        self._reply_lock = context.Lock()
        self._timeout = timeout
        self._creator = os.getpid()
        self._sequence = 0
        self._owner: Any = context.Process(
            target=_queue_owner,
            args=(self._requests, self._replies, ctype, initial, os.getpid()),
            name="shmref-value-owner",
            daemon=True,
        )
        self._owner.start()

    def __getstate__(self) -> dict[str, Any]:
        self._check_open()
        state = self.__dict__.copy()
        state["_owner"] = None
        del state["_check"]  # a closure: made again on arrival
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._check = _checker_for(self.ctype)

    def _request(self, *message: Any) -> Any:
        _acquire(self._reply_lock, self._timeout, "reply lock")
        try:
            self._sequence += 1
            token = (os.getpid(), id(self), self._sequence)
            self._requests.put((message[0], token, *message[1:]))
            while True:
                try:
                    answer, value, error = self._replies.get(timeout=self._timeout)
                except queue.Empty:
                    raise TimeoutError(
                        f"no reply from the value's owner within {self._timeout} s"
                    ) from None
                # A reply for a caller that timed out earlier: nobody waits for it.
                if answer == token:
                    break
        finally:
            self._reply_lock.release()
        if error is not None:
            raise error
        return value

    def get(self) -> T:
        self._check_open()
        return self._request(_GET)  # type: ignore[no-any-return]

    def set(self, value: T) -> None:
        value = self._check(value)
        if self._closed:
            self._check_open()
        self._requests.put((_SET, value))

    def update(self, fn: Callable[..., T], *args: Any) -> T:
        self._check_open()
        return self._request(_UPDATE, _pack(fn, args))  # type: ignore[no-any-return]

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


class _ValueState:
    """The value, living in a manager's server process.

    The server serves each client connection in a thread of its own, so two
    processes' calls can run at once: the lock makes each one atomic.
    """

    def __init__(self, ctype: type[Any], value: Any) -> None:
        self._ctype = ctype
        self._value = value
        self._lock = threading.Lock()

    def get(self) -> Any:
        return self._value

    def set(self, value: Any) -> None:
        self._value = value  # checked by the caller

    def update(self, payload: bytes) -> Any:
        with self._lock:
            self._value = _apply(self._ctype, self._value, payload)
            return self._value


class ValueManager(BaseManager):
    """A manager whose ``Value(ctype, value)`` is a value living in its server."""


ValueManager.register("Value", _ValueState, exposed=("get", "set", "update"))


class ManagerValue(_Closable, Generic[T]):
    """A value living in a Manager server; every call is one round trip.

    ``update`` runs ``fn`` in the server, under a lock held only by calls
    to this value, so it is atomic and ``fn`` must be importable by the
    server (a module-level function). Every call returns once the server has
    applied it, so ``get`` sees every ``set`` and ``update`` that has
    returned in any process. Pass a started :class:`ValueManager` as
    ``manager`` to share one server between values; otherwise each value
    starts its own. A dead server makes calls fail at once (``EOFError`` or
    ``ConnectionError``) rather than hang.

    >>> import ctypes
    >>> from shmref.value import ManagerValue
    >>> with ManagerValue(ctypes.c_char, b"a") as v:
    ...     v.set(b"z")
    ...     v.get()
    b'z'
    """

    def __init__(
        self,
        ctype: type[ctypes._SimpleCData[T]],
        value: T | None = None,
        *,
        manager: ValueManager | None = None,
        ctx: BaseContext | None = None,
    ) -> None:
        self._check = _checker_for(ctype)
        initial = _zero(ctype) if value is None else self._check(value)
        self.ctype = ctype
        self._manager: ValueManager | None = None
        self._creator = os.getpid()
        if manager is None:
            manager = self._manager = ValueManager(ctx=_context(ctx))
            manager.start()
        self._proxy: Any = manager.Value(ctype, initial)  # type: ignore[attr-defined]

    def __getstate__(self) -> dict[str, Any]:
        self._check_open()
        return {"ctype": self.ctype, "proxy": self._proxy}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.ctype = state["ctype"]
        self._check = _checker_for(self.ctype)
        self._proxy = state["proxy"]
        self._manager = None

    def get(self) -> T:
        self._check_open()
        return self._proxy.get()  # type: ignore[no-any-return]

    def set(self, value: T) -> None:
        value = self._check(value)
        if self._closed:
            self._check_open()
        self._proxy.set(value)

    def update(self, fn: Callable[..., T], *args: Any) -> T:
        self._check_open()
        return self._proxy.update(_pack(fn, args))  # type: ignore[no-any-return]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._proxy = None  # the server drops its object before it stops
        # A forked child holds a copy of the creator's manager: not its to stop.
        if self._manager is not None and os.getpid() == self._creator:
            self._manager.shutdown()
            self._manager = None


def update_worker(value: Value[Any], n: int, barrier: Any = None, timeout: float = 60.0) -> None:
    """Process target: ``value.update(operator.add, 1)`` ``n`` times.

    With a ``barrier``, wait on it before the first update (so that all
    workers start together) and after the last one: a caller waiting on the
    same barrier times the work alone, without process start-up. Closes the
    process's handle at the end.
    """
    if barrier is not None:
        barrier.wait(timeout)
    update, add = value.update, operator.add
    for _ in range(n):
        update(add, 1)
    if barrier is not None:
        barrier.wait(timeout)
    value.close()
