"""A typed shared scalar, four ways.

Every class here implements :class:`Value`: ``get()``, ``set(x)``,
``update(fn, *args)``, ``close()`` and the context-manager protocol, for one
scalar of a C type from :data:`TYPES` (``c_int``, ``c_long``, ``c_longlong``,
``c_float``, ``c_double``, ``c_bool``, ``c_char``).

* ctypes shared memory: :class:`CtypesValue` (a ``RawValue`` and a lock);
* message passing: :class:`QueueValue` (an owner process holds the value and
  applies the messages that others put on a ``multiprocessing.Queue``);
* a Manager server: :class:`ManagerValue` (the value lives in the server,
  one round trip per call);
* a Redis server: :class:`RedisValue` (reachable from any host that can
  reach the server; ``update`` runs ``fn`` in the caller and stores its
  result only if nothing changed the value meanwhile).

``update(fn, *args)`` is an atomic read-modify-write: it stores
``fn(current, *args)`` with no other change in between and returns it. The
owner process or the manager server runs ``fn`` on its side, so ``fn`` must
be importable there: a module-level function such as ``operator.add``. The
Queue and Manager ways pickle ``fn`` in the caller, so a lambda raises
``TypeError`` at once; :class:`CtypesValue` runs ``fn`` in the caller and
takes any callable.

Every value is checked against its C type before it is stored, including the
result of ``fn``: a value the type cannot hold raises ``TypeError``,
``OverflowError`` or ``ValueError`` and the stored value stays as it was.
(ctypes itself silently wraps ``2**31`` stored into a ``c_int`` to
``-2147483648``.) numpy's integer, float and bool scalars count as ints,
floats and bools. A ``c_float`` stores the nearest single-precision float,
so ``get()`` after ``set(0.1)`` returns ``0.10000000149011612``.

The four ways raise the same exception types for the same input. An
exception raised by ``fn`` (``SystemExit`` included) is raised in the
caller, the value unchanged, and the owner or server goes on serving; one
that cannot be pickled becomes a ``RuntimeError`` naming it, in every way.

Objects pass to child processes as ``Process`` arguments under every start
method. The process that creates a value owns it: its ``close()`` stops the
owner process or server; ``close()`` in another process only detaches that
process's handle. ``python -m shmref.standalone value`` writes this module
and the shared machinery it uses as one file that imports only the standard
library, to copy into a project (:class:`RedisValue` imports the ``redis``
package when one is made).
"""

from __future__ import annotations

import ctypes
import math
import operator
import struct
import threading
from collections.abc import Callable
from multiprocessing.context import BaseContext
from multiprocessing.managers import BaseManager
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from shmref.holder import Holder
from shmref.keyspace import DEFAULT_URL, RedisHandle, Script
from shmref.lifecycle import (
    DEFAULT_TIMEOUT,
    Closable,
    Deadline,
    acquire,
    context,
    integer,
    pickled,
    portable,
    real,
    seconds,
    unpickled,
)
from shmref.owner import Owner
from shmref.server import ManagerHandle, Served, register_state

__all__ = [
    "DEFAULT_TIMEOUT",
    "TYPES",
    "CtypesValue",
    "ManagerValue",
    "QueueValue",
    "RedisValue",
    "Value",
    "ValueManager",
    "check",
    "update_worker",
]

T = TypeVar("T")

# The docs hide the value, a dict of classes whose sharing differs between systems.
#: The C types a value can have, by the name this module uses for them. On
#: LP64 systems (64-bit Linux and macOS) ``c_longlong`` is ``c_long`` itself.
#: The docs list them with their sizes on the machine that built them.
#:
#: :meta hide-value:
TYPES: dict[str, type[Any]] = {
    "c_int": ctypes.c_int,
    "c_long": ctypes.c_long,
    "c_longlong": ctypes.c_longlong,
    "c_float": ctypes.c_float,
    "c_double": ctypes.c_double,
    "c_bool": ctypes.c_bool,
    "c_char": ctypes.c_char,
}

_INTEGERS = (ctypes.c_int, ctypes.c_long, ctypes.c_longlong)
_FLOATS = (ctypes.c_float, ctypes.c_double)


def _type_name(ctype: type[Any]) -> str:
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

    Integers must be ints (``int`` or an integral number such as numpy's,
    not ``bool``) within the type's signed range (``OverflowError`` outside
    it); floats accept ints and real numbers and are rounded as the type
    rounds them (``OverflowError`` if a finite value would become infinite);
    ``c_bool`` accepts ``bool`` (and numpy's); ``c_char`` accepts ``bytes``
    of length 1 (``ValueError`` for another length).

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
        low, high = _bounds(ctype)

        def whole(value: object) -> Any:
            if value.__class__ is int and low <= value <= high:
                return value
            return slowly(value)

        return whole
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


def _bounds(ctype: type[Any]) -> tuple[int, int]:
    """The signed range of an integer ``ctype``."""
    bits = 8 * ctypes.sizeof(ctype)
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def _passing(ctype: type[Any]) -> tuple[type[Any] | None, tuple[int, int] | None]:
    """The class whose values ``ctype`` stores as they are, and their bounds if any.

    What :func:`_checker`'s fast path lets through unchanged, for a caller
    that inlines it: ints within the bounds for the integer types, floats for
    ``c_double``, bools for ``c_bool``. ``c_float`` (rounded) and ``c_char``
    (a length to check) have no such class: every value goes to the checker.
    """
    if ctype in _INTEGERS:
        return int, _bounds(ctype)
    if ctype is ctypes.c_double:
        return float, None
    if ctype is ctypes.c_bool:
        return bool, None
    return None, None


def _checker_for(ctype: object) -> Callable[[object], Any]:
    checker = _CHECKERS.get(ctype)
    if checker is None:
        _supported(ctype)  # raises TypeError
        raise AssertionError(ctype)
    return checker


def _check_slowly(ctype: type[Any], value: object) -> Any:
    name = _type_name(_supported(ctype))
    kind = type(value).__name__
    if ctype in _INTEGERS:
        # integer() refuses bool: storing True as 1 is almost always a bug.
        number = integer(value, name)
        bits = 8 * ctypes.sizeof(ctype)
        low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        if not low <= number <= high:
            raise OverflowError(
                f"{value} does not fit in {name} (signed {bits}-bit: {low} to {high})"
            )
        return number
    if ctype in _FLOATS:
        try:
            stored = real(value, name)  # float(10**400) raises OverflowError
            if ctypes.sizeof(ctype) == 4:
                # The rounding the C float store does (some Pythons' struct
                # raises OverflowError, others round to infinity).
                finite = math.isfinite(stored)
                (stored,) = struct.unpack("f", struct.pack("f", stored))
                if finite and not math.isfinite(stored):
                    raise OverflowError
        except OverflowError:
            raise OverflowError(f"{value!r} is too large for {name}") from None
        return stored
    if ctype is ctypes.c_bool:
        if isinstance(value, bool):
            return value
        if kind in ("bool_", "bool"):  # numpy's bool, which is not a bool subclass
            return bool(value)
        raise TypeError(f"c_bool must be a bool, not {kind}")
    if not isinstance(value, bytes):
        raise TypeError(f"c_char must be one byte (bytes of length 1), not {kind}")
    if len(value) != 1:
        raise ValueError(f"c_char must be one byte, not {len(value)}: {value!r}")
    return bytes(value)


_CHECKERS: dict[object, Callable[[object], Any]] = {
    ctype: _checker(ctype) for ctype in TYPES.values()
}


def _initial(ctype: type[Any], value: object) -> Any:
    """The checked initial value: ``value``, or the type's zero for None."""
    check_value = _checker_for(ctype)  # first: an unsupported type raises TypeError here
    return ctype().value if value is None else check_value(value)


@runtime_checkable
class Value(Protocol[T]):
    """What every value in this module guarantees.

    ``get()`` returns the value; ``set(x)`` stores ``x``; ``update(fn,
    *args)`` atomically stores ``fn(current, *args)`` and returns it. A value
    the type cannot hold (see :func:`check`), from ``set`` or from ``fn``,
    raises and leaves the value as it was; so does an exception raised by
    ``fn``, which is raised in the caller (a ``RuntimeError`` naming it if it
    cannot be pickled). After ``close()`` every call raises ``ValueError``;
    ``close()`` may be called again.
    """

    def get(self) -> T: ...

    def set(self, value: T) -> None: ...

    def update(self, fn: Callable[..., T], *args: Any) -> T: ...

    def close(self) -> None: ...

    def __enter__(self) -> Value[T]: ...

    def __exit__(self, *exc: object) -> None: ...


class CtypesValue(Closable, Generic[T]):
    """A ``RawValue`` in shared memory, guarded by a lock.

    Guarantees: ``set`` and ``update`` are atomic; ``get`` returns the value
    after the last ``set`` or ``update`` to complete in any process. ``fn``
    runs in the calling process while it holds the lock, so any callable
    works, and a slow ``fn`` makes the others wait. ``timeout`` bounds every
    wait for the lock: if a process dies while holding it, other callers
    raise ``TimeoutError`` after ``timeout`` seconds.

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
        initial = _initial(ctype, value)
        self._timeout = seconds(timeout)
        ctx = context(ctx)
        self._typed(ctype)
        self._raw = ctx.RawValue(ctype, initial)
        # A plain Lock, not Value's default RLock (no call re-enters), that a
        # waiter takes over if its holder dies inside a call.
        self._holder: Any = Holder(ctx)
        self._attach()

    def _typed(self, ctype: type[Any]) -> None:
        self.ctype = ctype
        self._check = _checker_for(ctype)
        # The checker's fast path, which set() inlines (see there).
        exact, bounds = _passing(ctype)
        self._exact: Any = exact
        self._bounded = bounds is not None
        low, high = bounds or (0, 0)
        self._low: Any = low  # Any: compared with set()'s T
        self._high: Any = high

    def _attach(self) -> None:
        self._lock = self._holder.lock
        self._record: Any = self._holder.record

    def __getstate__(self) -> dict[str, Any]:
        self._check_open()
        return {
            "ctype": self.ctype,
            "raw": self._raw,
            "holder": self._holder,
            "timeout": self._timeout,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._typed(state["ctype"])
        self._raw = state["raw"]
        self._holder = state["holder"]
        self._timeout = state["timeout"]
        self._attach()

    # set and update are a few hundred nanoseconds: the uncontended lock is
    # a C call, and only a lock already held takes the sliced wait. Each call
    # reads the lock and the RawValue before it checks _closed: close() sets
    # _closed before it drops them, so an open handle's copies are never None.
    # Each critical section is one try, taking the lock included (see
    # shmref.holder): a KeyboardInterrupt anywhere in it gives the lock back.
    # The value is one store, so it is old or new whatever happens.

    def get(self) -> T:
        # No lock: every supported type is at most 8 bytes, naturally aligned
        # in the RawValue, and such a load is never torn on the platforms
        # multiprocessing runs on (x86-64, AArch64). It sees every set and
        # update completed before it, as with the lock, and a reader killed
        # here holds nothing.
        raw = self._raw
        if self._closed:
            self._refuse()
        value: T = raw.value
        return value

    def set(self, value: T) -> None:
        # One load per line: a 4-tuple assignment builds and unpacks a tuple.
        lock = self._lock
        raw = self._raw
        holder = self._holder
        record = self._record
        if self._closed:
            self._refuse()
        # The checker's fast path inlined, as CtypesCounter.add inlines its
        # int test: a call to it cost set() as much as the holder's record.
        # The others (numpy scalars, c_float's rounding, bad input) go to the
        # checker, which raises before the lock is taken.
        if value.__class__ is not self._exact or (
            self._bounded and not self._low <= value <= self._high
        ):
            value = self._check(value)
        try:
            if not lock.acquire(False):
                holder.wait(self._timeout, "value lock", self)
            record[0] = holder.pid
            raw.value = value
            record[0] = 0
            lock.release()
        except BaseException:
            holder.abandon()
            raise

    def update(self, fn: Callable[..., T], *args: Any) -> T:
        # One load per line: a 4-tuple assignment builds and unpacks a tuple.
        lock = self._lock
        raw = self._raw
        holder = self._holder
        record = self._record
        if self._closed:
            self._refuse()
        try:
            if not lock.acquire(False):
                holder.wait(self._timeout, "value lock", self)
            record[0] = holder.pid
            try:
                new = fn(raw.value, *args)
            except BaseException as error:
                # As the other ways raise it: one that cannot be pickled is wrapped.
                raise portable(error)  # noqa: B904 (portable() sets the cause)
            new = self._check(new)
            raw.value = new
            record[0] = 0
            lock.release()
        except BaseException:
            holder.abandon()
            raise
        return new

    def _release(self) -> None:
        # Drop the shared objects: their memory and semaphore go with the
        # last handle, in whichever process that is.
        self._raw = self._lock = self._holder = self._record = None


class _Scalar:
    """The value as its owner holds it: the state of a :class:`QueueValue`'s owner process."""

    def __init__(self, ctype: type[Any], value: Any) -> None:
        self.ctype = ctype
        self.value = value

    def get(self) -> Any:
        return self.value

    def set(self, value: Any) -> None:
        self.value = value  # checked by the sender

    def update(self, payload: bytes) -> Any:
        fn, args = unpickled(payload)
        new = check(self.ctype, fn(self.value, *args))
        self.value = new
        return new


class QueueValue(Closable, Generic[T]):
    """A value held by an owner process, read and written by messages.

    ``set`` checks the value, writes a message and returns without waiting
    for it to be applied; ``get`` and ``update`` send a request and wait for
    the reply. The owner answers a request only after applying what every
    process had sent (:mod:`shmref.owner`), so ``get`` sees every ``set``
    that returned before it, in any process. ``update`` runs ``fn`` in the
    owner, which applies one message at a time, so it is atomic; ``fn`` must
    be importable by the owner (a module-level function).

    ``timeout`` bounds every wait: for room in the connection while the
    owner is behind, and for the owner's reply. If the owner dies, calls
    raise :class:`~shmref.lifecycle.OwnerGone`.

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
        initial = _initial(ctype, value)
        timeout = seconds(timeout)
        self.ctype = ctype
        self._check = _checker_for(ctype)
        self._owner = Owner(
            context(ctx), _Scalar, (ctype, initial), what="QueueValue", timeout=timeout
        )

    def __getstate__(self) -> dict[str, Any]:
        self._check_open()
        return {"ctype": self.ctype, "owner": self._owner}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.ctype = state["ctype"]
        self._check = _checker_for(self.ctype)
        self._owner = state["owner"]

    def get(self) -> T:
        if self._closed:
            self._refuse()
        return self._owner.call("get")  # type: ignore[no-any-return]

    def set(self, value: T) -> None:
        if self._closed:
            self._refuse()
        self._owner.send("set", self._check(value))

    def update(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            self._refuse()
        return self._owner.call("update", pickled(fn, args))  # type: ignore[no-any-return]

    def _release(self) -> None:
        self._owner.close()


class _ValueState(_Scalar, Served):
    """The value, living in a manager's server process.

    The server serves each client connection in a thread of its own, so two
    processes' calls can run at once. ``set`` and ``update`` take the lock:
    without it on ``set``, a ``set`` that returned while an ``update`` ran
    ``fn`` would be overwritten by that update's stale result (issue 9).
    """

    def __init__(self, ctype: type[Any], value: Any, timeout: float | None) -> None:
        super().__init__(ctype, value)
        self._timeout = timeout
        self._lock = threading.Lock()

    def set(self, value: Any) -> None:
        acquire(self._lock, self._timeout, "the value's lock (an update holds it)")
        try:
            self.value = value  # checked by the caller
        finally:
            self._lock.release()

    def update(self, payload: bytes) -> Any:
        acquire(self._lock, self._timeout, "the value's lock (an update holds it)")
        try:
            return super().update(payload)
        finally:
            self._lock.release()


class ValueManager(BaseManager):
    """A manager whose server holds values: pass a started one as ``ManagerValue(manager=...)``."""


register_state(ValueManager, "Value", _ValueState)


class ManagerValue(ManagerHandle, Generic[T]):
    """A value living in a Manager server; every call is one round trip.

    ``set`` and ``update`` run in the server under a lock held only by calls
    to this value, so ``update`` is atomic, and ``fn`` must be importable by
    the server (a module-level function). Every call returns once the server
    has applied it, so ``get`` sees every ``set`` and ``update`` that has
    returned in any process. ``timeout`` bounds the server's wait for that
    lock, which an ``update`` holds while its ``fn`` runs: past it, ``set``
    or ``update`` raises ``TimeoutError``, and nothing has changed. So does a
    call whose reply the server, stopped or hung or still running a long
    ``fn``, has not sent within it and as much again: that one may still be
    applied (see :func:`~shmref.lifecycle.reply_within`). Pass a started
    :class:`ValueManager` as ``manager`` to share one server between values;
    otherwise each value starts its own. A dead server makes calls raise
    :class:`~shmref.lifecycle.OwnerGone` at once rather than hang.

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
        timeout: float | None = DEFAULT_TIMEOUT,
        address: tuple[str, int] | None = None,
        authkey: bytes | None = None,
    ) -> None:
        initial = _initial(ctype, value)
        timeout = seconds(timeout)
        self.ctype = ctype
        self._check = _checker_for(ctype)
        self._server = self._serve(
            ValueManager,
            "Value",
            (ctype, initial, timeout),
            manager,
            ctx,
            address,
            authkey,
            timeout,
        )
        self._publish()

    def __getstate__(self) -> dict[str, Any]:
        self._check_open()
        return {"ctype": self.ctype, "server": self._server}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.ctype = state["ctype"]
        self._check = _checker_for(self.ctype)
        self._server = state["server"]

    def get(self) -> T:
        if self._closed:
            self._refuse()
        return self._server.answer("get")  # type: ignore[no-any-return]

    def set(self, value: T) -> None:
        if self._closed:
            self._refuse()
        self._server.call("set", self._check(value))

    def update(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            self._refuse()
        return self._server.call_guarded("update", pickled(fn, args))  # type: ignore[no-any-return]

    def _release(self) -> None:
        self._server.close()


# The Redis way's keys: KEYS[2] the value as text (:func:`_encoded`),
# KEYS[3] a version that every store increments, for update's check.
_REDIS_GET = Script("return redis.call('GET', KEYS[2])")
_REDIS_READ = Script("return {redis.call('GET', KEYS[2]), redis.call('GET', KEYS[3])}")
_REDIS_SET = Script(
    """
redis.call('SET', KEYS[2], ARGV[1])
return redis.call('INCR', KEYS[3])
"""
)
# Stores ARGV[2] only if the version is still ARGV[1], the one update read.
_REDIS_SWAP = Script(
    """
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('INCR', KEYS[3])
return 1
"""
)


def _encoded(ctype: type[Any], value: Any) -> bytes:
    """A checked value as the Redis way stores it: text that gives it back exactly.

    ``repr`` of a float round-trips every double (``inf`` and ``nan``
    included); a ``c_float`` is already the double nearest its single.
    """
    if ctype is ctypes.c_char:
        return value  # type: ignore[no-any-return]
    if ctype is ctypes.c_bool:
        return b"1" if value else b"0"
    return repr(value).encode()


def _decoder(ctype: type[Any]) -> Callable[[bytes], Any]:
    """What turns the stored text back into the value ``get()`` returns, as ctypes gives it."""
    if ctype is ctypes.c_char:
        return bytes
    if ctype is ctypes.c_bool:
        return lambda stored: stored == b"1"
    if ctype in _FLOATS:
        return float
    return int


class RedisValue(RedisHandle, Generic[T]):
    """A value in a Redis server; ``get`` and ``set`` are one round trip each.

    ``set`` checks the value in the caller and stores it with a Lua script,
    atomically; ``get`` sees every ``set`` and ``update`` that has returned,
    in any process on any host. Values come back as :class:`CtypesValue`
    gives them: the server holds ints and floats as text that converts back
    exactly (``repr``), a ``c_bool`` as ``1``/``0``, a ``c_char`` as its
    byte.

    ``update(fn, *args)`` is optimistic: it reads the value and its version
    (one script), runs ``fn`` in the caller (any callable, as in
    :class:`CtypesValue`), and stores the result with a script that first
    checks the version is unchanged. If another call stored in between, it
    reads again and runs ``fn`` again, so ``fn`` may run more than once and
    must not have side effects that matter; it never waits on a lock, so a
    slow ``fn`` delays nobody else, and a process killed inside ``fn``
    holds nothing. Retries end after ``timeout`` seconds with
    ``TimeoutError``, the value unchanged by that call.

    Attaching, ``close()``, what it needs and its errors when the server is
    gone or slow: see :class:`~shmref.keyspace.RedisHandle`. A creator
    killed without ``close()`` leaves its keys on the server: that part of
    the contract it cannot keep.
    """

    def __init__(
        self,
        ctype: type[ctypes._SimpleCData[T]],
        value: T | None = None,
        *,
        url: str = DEFAULT_URL,
        name: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        initial = _initial(ctype, value)
        self._create(
            url,
            name,
            timeout,
            description={"ctype": _type_name(ctype)},
            initial={"value": _encoded(ctype, initial), "version": 0},
        )

    def _adopt(self, description: dict[str, Any]) -> None:
        super()._adopt(description)
        self.ctype = TYPES[description["ctype"]]
        self._check = _checker_for(self.ctype)
        self._decode = _decoder(self.ctype)

    def get(self) -> T:
        keyspace = self._keyspace
        if self._closed:
            self._refuse()
        return self._decode(keyspace.run(_REDIS_GET, ("value",)))  # type: ignore[no-any-return]

    def set(self, value: T) -> None:
        keyspace = self._keyspace
        if self._closed:
            self._refuse()
        stored = _encoded(self.ctype, self._check(value))
        keyspace.run(_REDIS_SET, ("value", "version"), (stored,))

    def update(self, fn: Callable[..., T], *args: Any) -> T:
        keyspace = self._keyspace
        if self._closed:
            self._refuse()
        deadline = Deadline(keyspace.timeout)
        while True:
            current, version = keyspace.run(_REDIS_READ, ("value", "version"))
            try:
                new = fn(self._decode(current), *args)
            except BaseException as error:
                # As the other ways raise it: one that cannot be pickled is wrapped.
                raise portable(error)  # noqa: B904 (portable() sets the cause)
            new = self._check(new)
            stored = _encoded(self.ctype, new)
            if keyspace.run(_REDIS_SWAP, ("value", "version"), (version, stored)):
                return new
            if deadline.expired:
                raise TimeoutError(
                    f"RedisValue.update: the value changed under fn at every try for "
                    f"{keyspace.timeout} s; it is unchanged by this call"
                )


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
