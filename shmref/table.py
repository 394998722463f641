"""A shared hash table (``str``/``bytes`` keys to small values), three ways.

Every class here implements :class:`SharedDict`: ``get``, ``[]``, ``[]=``,
``del``, ``in``, ``len``, ``keys``, ``items``, ``pop``, ``snapshot`` and an
atomic ``update(key, fn, default)``, with the same limits and errors:

* ctypes shared memory: :class:`CtypesDict`, an open-addressing hash table in
  one ``multiprocessing.shared_memory`` segment; writers take a lock, readers
  take none (a table-wide sequence lock tells them to retry);
* message passing: :class:`QueueDict` (an owner process holds a ``dict`` and
  answers requests sent on a ``multiprocessing.Queue``);
* a Manager server: :class:`ManagerDict` (the ``manager.dict()`` proxy of a
  :class:`DictManager`, with one extra server-side method for ``update``).

Keys are ``str`` or ``bytes`` of at most ``key_size`` bytes (UTF-8); values
are 64-bit ``int``, ``float``, or ``str``/``bytes`` of at most ``value_size``
bytes; the table holds at most ``capacity`` keys. The module is named
``table`` so that it does not shadow the builtin ``dict``. It imports only the
standard library: copy it alone into a project and it works.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import platform
import queue
import struct
import sys
import threading
import weakref
import zlib
from collections.abc import Callable, Iterable, Sized
from multiprocessing import resource_tracker
from multiprocessing.context import BaseContext
from multiprocessing.managers import DictProxy, SyncManager
from multiprocessing.shared_memory import SharedMemory
from typing import Any, Protocol, TypeAlias, cast, runtime_checkable

__all__ = [
    "DEFAULT_CAPACITY",
    "DEFAULT_KEY_SIZE",
    "DEFAULT_TIMEOUT",
    "DEFAULT_VALUE_SIZE",
    "CtypesDict",
    "DictManager",
    "Key",
    "ManagerDict",
    "QueueDict",
    "SharedDict",
    "TableFull",
    "Value",
    "increment",
    "put_worker",
    "unsafe_update_worker",
    "update_worker",
]

Key: TypeAlias = str | bytes
Value: TypeAlias = int | float | str | bytes

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

DEFAULT_CAPACITY = 1024
DEFAULT_KEY_SIZE = 64
DEFAULT_VALUE_SIZE = 128

#: Seconds a call waits for a lock or a reply before raising TimeoutError.
DEFAULT_TIMEOUT = 30.0


class _Missing:
    def __repr__(self) -> str:
        return "<no default>"


_MISSING: Any = _Missing()


class TableFull(Exception):
    """A new key was refused: the table already holds ``capacity`` keys."""


@runtime_checkable
class SharedDict(Protocol):
    """What every table in this module guarantees.

    The mapping methods behave as a ``dict`` restricted to ``str``/``bytes``
    keys and ``int``/``float``/``str``/``bytes`` values (``'a'`` and ``b'a'``
    are different keys; a value comes back with the type it was stored with).
    ``keys()`` and ``items()`` return lists in no particular order;
    ``snapshot()`` returns a ``dict``; all three are taken at one moment.

    Writes check before they change anything: a key of another type or a bool,
    ``None``, list... value raises ``TypeError``; a key or value over its size
    raises ``ValueError``; an ``int`` outside the signed 64-bit range raises
    ``OverflowError``; a new key in a full table raises :class:`TableFull`.
    Each leaves the table as it was. A lookup with a key of another type
    raises ``TypeError``; a key over ``key_size`` is simply absent.

    ``update(key, fn, default)`` stores and returns ``fn(current)``, where
    ``current`` is the key's value or ``default``, atomically: no other write
    to the table comes between the read and the write. If ``fn`` raises, or
    returns a value the table refuses, the table is unchanged. ``fn`` must be
    a module-level function (it is pickled by the Queue and Manager ways) and
    must not use the table. After ``close()`` every call raises ``ValueError``.
    """

    def get(self, key: Key, default: Any = None) -> Any: ...

    def __getitem__(self, key: Key) -> Value: ...

    def __setitem__(self, key: Key, value: Value) -> None: ...

    def __delitem__(self, key: Key) -> None: ...

    def __contains__(self, key: object) -> bool: ...

    def __len__(self) -> int: ...

    def keys(self) -> list[Key]: ...

    def items(self) -> list[tuple[Key, Value]]: ...

    def pop(self, key: Key, default: Any = _MISSING) -> Any: ...

    def update(self, key: Key, fn: Callable[[Any], Value], default: Any) -> Value: ...

    def snapshot(self) -> dict[Key, Value]: ...

    def close(self) -> None: ...

    def __enter__(self) -> SharedDict: ...

    def __exit__(self, *exc: object) -> None: ...


# ---------------------------------------------------------------- limits


def _limit(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < 2**31:
        raise ValueError(f"{name} must be a positive int below 2**31, not {value!r}")
    return value


def _key_type(key: object) -> Key:
    if isinstance(key, str):
        if key.__class__ is str:
            return key
        return str.__str__(key)  # a subclass (a StrEnum member) as a plain str
    if isinstance(key, bytes):
        return key if key.__class__ is bytes else bytes(key)
    raise TypeError(f"key must be str or bytes, not {type(key).__name__}")


def _plain_key(key: object, key_size: int) -> Key:
    """``key`` as a plain str or bytes, checked against ``key_size``."""
    key = _key_type(key)
    if len(key) * 4 > key_size:  # UTF-8 takes at most 4 bytes a character
        size = len(key.encode("utf-8", "surrogatepass") if isinstance(key, str) else key)
        if size > key_size:
            raise ValueError(
                f"key is {size} bytes, over key_size={key_size}; the table is unchanged"
            )
    return key


def _plain_value(value: object, value_size: int) -> Value:
    """``value`` as a plain int, float, str or bytes, checked against the limits."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str, bytes)):
        raise TypeError(f"value must be int, float, str or bytes, not {type(value).__name__}")
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise OverflowError(
                f"value {value} is outside the signed 64-bit range; the table is unchanged"
            )
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        value = value if value.__class__ is str else str.__str__(value)
        size = len(value) if len(value) * 4 <= value_size else len(_utf8(value))
    else:
        value = bytes(value)
        size = len(value)
    if size > value_size:
        raise ValueError(
            f"value is {size} bytes, over value_size={value_size}; the table is unchanged"
        )
    return value


def _utf8(text: str) -> bytes:
    # surrogatepass: every str round-trips, as it would in a dict.
    return text.encode("utf-8", "surrogatepass")


def _full(key: Key, capacity: int) -> TableFull:
    return TableFull(f"the table holds capacity={capacity} keys; {key!r} is new: not stored")


def _context(ctx: BaseContext | None) -> Any:
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


# ---------------------------------------------------------------- ctypes way

# Segment layout. Header (64 bytes): generation (u64), count (u64), then the
# limits for a reader of a memory dump. Then `slots` slots of `slot_size`
# bytes: a 16-byte slot header (crc32 of the key, key tag, value tag, key
# length, value length), key_size bytes of key, max(value_size, 8) of value.
_GENERATION = struct.Struct("<Q")
_COUNT_AT = 8
_LIMITS = struct.Struct("<QII")  # slots, key_size, value_size, at offset 16
_HEADER_SIZE = 64
_SLOT = struct.Struct("<IBBxxII")
_SLOT_HEADER = _SLOT.size
_EMPTY_SLOT = bytes(_SLOT_HEADER)
_INT = struct.Struct("<q")
_FLOAT = struct.Struct("<d")

# Key tags (0 marks an empty slot) double as the crc32 seed, so that "a" and
# b"a" hash apart. Value tags say how to decode the value bytes.
_STR_KEY, _BYTES_KEY = 1, 2
_INT_VALUE, _FLOAT_VALUE, _STR_VALUE, _BYTES_VALUE = 1, 2, 3, 4

# Readers retry this many times when a writer overlapped their read, then
# take the lock (which also bounds their wait if a writer died mid-write).
_OPTIMISTIC_READS = 4

# The lock-free read relies on loads not being reordered with other loads,
# which x86 guarantees (TSO) and Python cannot enforce with a fence. On other
# CPUs (AArch64, POWER) readers take the lock.
_ORDERED_LOADS = platform.machine().lower() in {"x86_64", "amd64", "i386", "i686"}


class _Inconsistent(Exception):
    """A lock-free read saw a slot in the middle of a write."""


def _encode_key(key: object, key_size: int) -> tuple[int, bytes]:
    tag, data = _lookup_key(key)
    if len(data) > key_size:
        raise ValueError(
            f"key is {len(data)} bytes, over key_size={key_size}; the table is unchanged"
        )
    return tag, data


def _lookup_key(key: object) -> tuple[int, bytes]:
    """A key to look up: any size (an oversized key is simply absent)."""
    plain = _key_type(key)
    return (_STR_KEY, _utf8(plain)) if isinstance(plain, str) else (_BYTES_KEY, plain)


def _encode_value(value: object, value_size: int) -> tuple[int, bytes]:
    if value.__class__ is int and INT64_MIN <= value <= INT64_MAX:
        return _INT_VALUE, _INT.pack(value)
    plain = _plain_value(value, value_size)  # raises if the table refuses it
    if isinstance(plain, int):
        return _INT_VALUE, _INT.pack(plain)
    if isinstance(plain, float):
        return _FLOAT_VALUE, _FLOAT.pack(plain)
    if isinstance(plain, str):
        return _STR_VALUE, _utf8(plain)
    return _BYTES_VALUE, plain


def _slots_for(capacity: int) -> int:
    # A power of two (the probe wraps with a mask) kept at most 3/4 full, so
    # that probe sequences stay short and always reach an empty slot.
    slots = 8
    while slots * 3 < capacity * 4:
        slots *= 2
    return slots


def _slot_size(key_size: int, value_size: int) -> int:
    # Rounded up to 8 bytes, so that every slot's numbers are aligned.
    return -(-(_SLOT_HEADER + key_size + max(value_size, 8)) // 8) * 8


_attach_lock = threading.Lock()


def _attach(name: str) -> SharedMemory:
    """Open the creator's segment without registering it with a resource_tracker."""
    if sys.version_info >= (3, 13):
        return SharedMemory(name, track=False)
    # Before 3.13 every open registers the segment, and the tracker unlinks
    # what is still registered when its processes are gone. The processes of
    # one program share one tracker, whose registry is a set: unregistering
    # after attaching (the usual workaround) would drop the creator's own
    # registration, and the creator's unlink would then make the tracker
    # raise KeyError. So this one registration is skipped while it happens.
    with _attach_lock:
        register, attaching = resource_tracker.register, name

        def register_others(name: Sized, rtype: str) -> None:
            if rtype != "shared_memory" or str(name).lstrip("/") != attaching:
                register(name, rtype)

        resource_tracker.register = register_others
        try:
            return SharedMemory(name)
        finally:
            resource_tracker.register = register


def _release(segment: SharedMemory, creator: int | None) -> None:
    segment.close()
    if creator == os.getpid():
        segment.unlink()


class CtypesDict(_Closable):
    """An open-addressing hash table in one shared memory segment.

    Each key hashes with ``zlib.crc32`` of its UTF-8 bytes, not ``hash()``,
    which differs between interpreters: a key lands in the same slot from
    every process, under every start method. Collisions probe the next slots
    (linear probing); the table has a power of two of slots, at least 4/3 of
    ``capacity``, so a probe always ends at an empty slot. ``del`` and
    ``pop`` shift the following entries back into the hole instead of
    leaving a tombstone, so deletions never fill the table.

    Writers (``[]=``, ``del``, ``pop``, ``update``) hold one lock, shared by
    all processes; ``update`` runs ``fn`` under it. Readers take no lock: a
    table-wide generation counter is odd while a write is in progress, and a
    reader that sees it odd or changed across its read retries, then takes
    the lock. So a reader sees a value either before or after a write, never
    a mix of both, and readers never slow writers. (A per-slot counter
    would not do: a deletion moves entries between slots.) This relies on
    x86's ordering of loads; on other CPUs readers take the lock too.

    The creating process owns the segment: its ``close()`` unlinks it (and
    so does dropping its last reference); ``close()`` elsewhere only
    detaches. If a process dies holding the lock, the other processes' calls
    raise ``TimeoutError`` after ``timeout`` seconds.

    >>> from shmref.table import CtypesDict
    >>> with CtypesDict(capacity=8) as table:
    ...     table["hits"] = 1
    ...     table.update("hits", lambda n: n + 1, 0)
    ...     table.snapshot()
    2
    {'hits': 2}
    """

    def __init__(
        self,
        *,
        capacity: int = DEFAULT_CAPACITY,
        key_size: int = DEFAULT_KEY_SIZE,
        value_size: int = DEFAULT_VALUE_SIZE,
        ctx: BaseContext | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        self._capacity = _limit("capacity", capacity)
        self._key_size = _limit("key_size", key_size)
        self._value_size = _limit("value_size", value_size)
        slots = _slots_for(capacity)
        self._lock = _context(ctx).Lock()
        self._timeout = timeout
        size = _HEADER_SIZE + slots * _slot_size(key_size, value_size)
        segment = SharedMemory(create=True, size=size)
        # A fresh segment is zero-filled: generation 0, count 0, slots empty.
        buf: Any = segment.buf
        _LIMITS.pack_into(buf, 16, slots, key_size, value_size)
        del buf
        self._setup(segment, os.getpid())

    def _setup(self, segment: SharedMemory, creator: int | None) -> None:
        self._segment = segment
        self._buf: Any = cast(Any, segment.buf)
        slots, key_size, value_size = _LIMITS.unpack_from(self._buf, 16)
        self._mask = slots - 1
        self._slot_size = _slot_size(key_size, value_size)
        self._value_at = _SLOT_HEADER + key_size
        self._lock_free = _ORDERED_LOADS
        self._finalizer = weakref.finalize(self, _release, segment, creator)

    def __getstate__(self) -> dict[str, Any]:
        self._check_open()
        return {
            "name": self._segment.name,
            "lock": self._lock,
            "limits": (self._capacity, self._key_size, self._value_size),
            "timeout": self._timeout,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._capacity, self._key_size, self._value_size = state["limits"]
        self._lock = state["lock"]
        self._timeout = state["timeout"]
        self._setup(_attach(state["name"]), None)

    # -- reading

    def _find(self, tag: int, data: bytes, crc: int) -> tuple[int, int, int, int]:
        """(offset, value tag, value length, slot) of the key, or (-1, 0, 0, free slot)."""
        buf, mask, size = self._buf, self._mask, self._slot_size
        slot = crc & mask
        length = len(data)
        for _ in range(mask + 1):
            at = _HEADER_SIZE + slot * size
            hashed, key_tag, value_tag, key_length, value_length = _SLOT.unpack_from(buf, at)
            if key_tag == 0:
                return -1, 0, 0, slot
            if (
                hashed == crc
                and key_tag == tag
                and key_length == length
                and buf[at + _SLOT_HEADER : at + _SLOT_HEADER + length] == data
            ):
                return at, value_tag, value_length, slot
            slot = (slot + 1) & mask
        # No empty slot: only a lock-free read can see that, mid-write.
        raise _Inconsistent

    def _decode(self, at: int, tag: int, length: int) -> Value:
        at += self._value_at
        if tag == _INT_VALUE:
            return int(_INT.unpack_from(self._buf, at)[0])
        if tag == _FLOAT_VALUE:
            return float(_FLOAT.unpack_from(self._buf, at)[0])
        if tag == _STR_VALUE:
            return str(self._buf[at : at + length], "utf-8", "surrogatepass")
        if tag == _BYTES_VALUE:
            return bytes(self._buf[at : at + length])
        raise _Inconsistent

    def _read(self, tag: int, data: bytes) -> tuple[bool, Value | None]:
        """(found, value) of a key, at one moment, without a lock if possible."""
        crc = zlib.crc32(data, tag)
        if self._lock_free:
            buf = self._buf
            for _ in range(_OPTIMISTIC_READS):
                generation = _GENERATION.unpack_from(buf)[0]
                if generation & 1:
                    break  # a writer is at work: wait for it on the lock
                try:
                    at, value_tag, length, _ = self._find(tag, data, crc)
                    value = self._decode(at, value_tag, length) if at >= 0 else None
                except (_Inconsistent, UnicodeDecodeError):
                    continue  # a torn read; the generation has moved
                if _GENERATION.unpack_from(buf)[0] == generation:
                    return at >= 0, value
        _acquire(self._lock, self._timeout, "table lock")
        try:
            at, value_tag, length, _ = self._find(tag, data, crc)
            return at >= 0, (self._decode(at, value_tag, length) if at >= 0 else None)
        finally:
            self._lock.release()

    def _scan(self) -> list[tuple[Key, Value]]:
        if self._lock_free:
            generation = _GENERATION.unpack_from(self._buf)[0]
            if not generation & 1:
                try:
                    entries = self._entries()
                except (_Inconsistent, UnicodeDecodeError):
                    pass
                else:
                    if _GENERATION.unpack_from(self._buf)[0] == generation:
                        return entries
        # A whole-table read is long: under writes, take the lock at once.
        _acquire(self._lock, self._timeout, "table lock")
        try:
            return self._entries()
        finally:
            self._lock.release()

    def _entries(self) -> list[tuple[Key, Value]]:
        buf, size = self._buf, self._slot_size
        entries: list[tuple[Key, Value]] = []
        for at in range(_HEADER_SIZE, _HEADER_SIZE + (self._mask + 1) * size, size):
            _, key_tag, value_tag, key_length, value_length = _SLOT.unpack_from(buf, at)
            if key_tag == 0:
                continue
            data = bytes(buf[at + _SLOT_HEADER : at + _SLOT_HEADER + key_length])
            if key_tag == _STR_KEY:
                key: Key = str(data, "utf-8", "surrogatepass")
            elif key_tag == _BYTES_KEY:
                key = data
            else:
                raise _Inconsistent
            entries.append((key, self._decode(at, value_tag, value_length)))
        return entries

    def get(self, key: Key, default: Any = None) -> Any:
        if self._closed:
            self._check_open()
        if key.__class__ is str:
            tag, data = _STR_KEY, key.encode("utf-8", "surrogatepass")
        else:
            tag, data = _lookup_key(key)
        # The common case inline (calls are most of the cost of a get): the
        # key or an empty slot at the key's home slot, and no writer about.
        if self._lock_free:
            buf = self._buf
            crc = zlib.crc32(data, tag)
            generation = _GENERATION.unpack_from(buf)[0]
            at = _HEADER_SIZE + (crc & self._mask) * self._slot_size
            hashed, key_tag, value_tag, length, value_length = _SLOT.unpack_from(buf, at)
            if key_tag == 0:
                value = default
            elif (
                hashed == crc
                and key_tag == tag
                and length == len(data)
                and buf[at + _SLOT_HEADER : at + _SLOT_HEADER + length] == data
            ):
                at += self._value_at
                if value_tag == _INT_VALUE:
                    value = _INT.unpack_from(buf, at)[0]
                elif value_tag == _FLOAT_VALUE:
                    value = _FLOAT.unpack_from(buf, at)[0]
                elif value_tag == _STR_VALUE:
                    try:
                        value = str(buf[at : at + value_length], "utf-8", "surrogatepass")
                    except UnicodeDecodeError:  # torn: the generation has moved
                        generation = 1
                else:
                    value = bytes(buf[at : at + value_length])
            else:
                generation = 1  # probe further, below
            if not generation & 1 and _GENERATION.unpack_from(buf)[0] == generation:
                return value
        found, value = self._read(tag, data)
        return value if found else default

    def __getitem__(self, key: Key) -> Value:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value  # type: ignore[no-any-return]

    def __contains__(self, key: object) -> bool:
        return self.get(key, _MISSING) is not _MISSING  # type: ignore[arg-type]

    def __len__(self) -> int:
        self._check_open()
        # One aligned 8-byte field: read whole, no generation check needed.
        return int(_GENERATION.unpack_from(self._buf, _COUNT_AT)[0])

    def keys(self) -> list[Key]:
        self._check_open()
        return [key for key, _ in self._scan()]

    def items(self) -> list[tuple[Key, Value]]:
        self._check_open()
        return self._scan()

    def snapshot(self) -> dict[Key, Value]:
        self._check_open()
        return dict(self._scan())

    # -- writing (under the lock; the generation is odd while memory changes)

    def _begin(self) -> int:
        generation = int(_GENERATION.unpack_from(self._buf)[0]) + 1
        _GENERATION.pack_into(self._buf, 0, generation)
        return generation

    def _end(self, generation: int) -> None:
        _GENERATION.pack_into(self._buf, 0, generation + 1)

    def _count(self, delta: int) -> None:
        count = _GENERATION.unpack_from(self._buf, _COUNT_AT)[0]
        _GENERATION.pack_into(self._buf, _COUNT_AT, count + delta)

    def _store(
        self, key_tag: int, key: bytes, crc: int, at: int, slot: int, tag: int, data: bytes
    ) -> None:
        """Write a value at ``at``, or a new entry in the free ``slot`` if ``at < 0``."""
        buf = self._buf
        new = at < 0
        if new:
            if _GENERATION.unpack_from(buf, _COUNT_AT)[0] >= self._capacity:
                decoded = str(key, "utf-8", "surrogatepass") if key_tag == _STR_KEY else key
                raise _full(decoded, self._capacity)
            at = _HEADER_SIZE + slot * self._slot_size
        generation = self._begin()
        try:
            if new:
                start = at + _SLOT_HEADER
                buf[start : start + len(key)] = key
                self._count(1)
            value_at = at + self._value_at
            buf[value_at : value_at + len(data)] = data
            _SLOT.pack_into(buf, at, crc, key_tag, tag, len(key), len(data))
        finally:
            self._end(generation)

    def _remove(self, slot: int) -> None:
        """Empty ``slot``, shifting back the entries whose probe passed over it."""
        buf, mask, size = self._buf, self._mask, self._slot_size
        hole = slot
        while True:
            slot = (slot + 1) & mask
            at = _HEADER_SIZE + slot * size
            hashed, key_tag = _SLOT.unpack_from(buf, at)[:2]
            if key_tag == 0:
                break
            home = hashed & mask
            # The entry stays if its home lies cyclically in (hole, slot].
            if (hole < home <= slot) if hole <= slot else (home > hole or home <= slot):
                continue
            start = _HEADER_SIZE + hole * size
            buf[start : start + size] = buf[at : at + size]
            hole = slot
        start = _HEADER_SIZE + hole * size
        buf[start : start + _SLOT_HEADER] = _EMPTY_SLOT
        self._count(-1)

    def __setitem__(self, key: Key, value: Value) -> None:
        if self._closed:
            self._check_open()
        key_tag, key_data = _encode_key(key, self._key_size)
        tag, data = _encode_value(value, self._value_size)
        crc = zlib.crc32(key_data, key_tag)
        _acquire(self._lock, self._timeout, "table lock")
        try:
            at, _, _, slot = self._find(key_tag, key_data, crc)
            self._store(key_tag, key_data, crc, at, slot, tag, data)
        finally:
            self._lock.release()

    def update(self, key: Key, fn: Callable[[Any], Value], default: Any) -> Value:
        self._check_open()
        key_tag, key_data = _encode_key(key, self._key_size)
        crc = zlib.crc32(key_data, key_tag)
        _acquire(self._lock, self._timeout, "table lock")
        try:
            at, value_tag, length, slot = self._find(key_tag, key_data, crc)
            new = fn(self._decode(at, value_tag, length) if at >= 0 else default)
            tag, data = _encode_value(new, self._value_size)
            self._store(key_tag, key_data, crc, at, slot, tag, data)
        finally:
            self._lock.release()
        return _plain_value(new, self._value_size)

    def pop(self, key: Key, default: Any = _MISSING) -> Any:
        self._check_open()
        key_tag, key_data = _lookup_key(key)
        crc = zlib.crc32(key_data, key_tag)
        _acquire(self._lock, self._timeout, "table lock")
        try:
            at, value_tag, length, slot = self._find(key_tag, key_data, crc)
            if at < 0:
                if default is _MISSING:
                    raise KeyError(key)
                return default
            value = self._decode(at, value_tag, length)
            generation = self._begin()
            try:
                self._remove(slot)
            finally:
                self._end(generation)
            return value
        finally:
            self._lock.release()

    def __delitem__(self, key: Key) -> None:
        self.pop(key)

    def _occupied(self) -> int:
        """Slots in use (for tests: deletions leave no tombstones)."""
        size = self._slot_size
        return sum(
            1
            for at in range(_HEADER_SIZE, _HEADER_SIZE + (self._mask + 1) * size, size)
            if self._buf[at + 4]
        )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._buf = None  # the segment cannot close while a view of it lives
        self._finalizer()
        self._lock = None


# ---------------------------------------------------------------- the dict the Queue owner and
# the Manager server hold


class _ServerDict(dict):  # type: ignore[type-arg]
    """A ``dict`` with the table's capacity and an atomic ``apply``.

    Clients check keys and values before sending them; this class checks what
    only the holder can: the capacity, and the result of ``fn``. A Manager
    server serves each client in a thread of its own, so writes take a lock:
    ``apply`` runs Python code (``fn``) between its read and its write.
    """

    def __init__(self, capacity: int, value_size: int, timeout: float | None) -> None:
        super().__init__()
        self.capacity = capacity
        self.value_size = value_size
        self.timeout = timeout
        self.lock = threading.Lock()

    def _acquire(self) -> None:
        _acquire(self.lock, self.timeout, "table lock")

    def __setitem__(self, key: Key, value: Value) -> None:
        self._acquire()
        try:
            if len(self) >= self.capacity and key not in self:
                raise _full(key, self.capacity)
            super().__setitem__(key, value)
        finally:
            self.lock.release()

    def __delitem__(self, key: Key) -> None:
        self._acquire()
        try:
            super().__delitem__(key)
        finally:
            self.lock.release()

    def pop(self, key: Key, *default: Any) -> Any:
        self._acquire()
        try:
            return super().pop(key, *default)
        finally:
            self.lock.release()

    def apply(self, key: Key, fn: Callable[[Any], Value], default: Any) -> Value:
        self._acquire()
        try:
            new = _plain_value(fn(super().get(key, default)), self.value_size)
            if len(self) >= self.capacity and key not in self:
                raise _full(key, self.capacity)
            super().__setitem__(key, new)
            return new
        finally:
            self.lock.release()


# ---------------------------------------------------------------- Queue way

# The calls a QueueDict's owner answers: method names of _ServerDict.
_CALLS = frozenset(
    {"get", "__getitem__", "__setitem__", "__delitem__", "__contains__", "__len__"}
    | {"keys", "items", "pop", "apply", "copy"}
)
_STOP = "stop"


def _sendable(error: BaseException) -> BaseException:
    try:
        pickle.dumps(error)
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error


def _table_owner(requests: Any, replies: Any, limits: tuple[int, int, float | None]) -> None:
    """Owner process of a :class:`QueueDict`: answers requests one at a time."""
    table = _ServerDict(*limits)
    # Not os.getppid(): a forkserver child's parent is the forkserver.
    creator = multiprocessing.parent_process()
    while True:
        try:
            token, method, args = requests.get(timeout=1.0)
        except queue.Empty:
            if creator is not None and not creator.is_alive():  # died without close()
                return
            continue
        if method == _STOP:
            replies.put((token, True, None))
            return
        try:
            if method not in _CALLS:
                raise ValueError(f"unknown request {method!r}")
            if method == "apply":
                args = (args[0], pickle.loads(args[1]), args[2])
            result = getattr(table, method)(*args)
            if method in ("keys", "items"):
                result = list(result)
        except Exception as error:
            replies.put((token, False, _sendable(error)))
        else:
            replies.put((token, True, result))


class QueueDict(_Closable):
    """A ``dict`` held by an owner process, reached by requests on a Queue.

    Every call is one request and one reply: the caller puts ``(method,
    arguments)`` on the request queue and waits for the answer on the reply
    queue. The owner answers one request at a time, so each call is atomic
    and sees every call that returned before it in any process; ``update``
    runs ``fn`` in the owner. ``fn`` is pickled by the caller (a lambda
    fails there, and nothing is sent). One reply queue serves every caller:
    a caller holds a lock from its request to its reply, so calls from many
    processes queue one behind another. If the owner dies, calls raise
    ``TimeoutError`` after ``timeout`` seconds; the owner exits by itself if
    its creator dies.

    >>> from shmref.table import QueueDict, increment
    >>> with QueueDict(capacity=8) as table:
    ...     table.update("hits", increment, 0)
    ...     table["hits"]
    1
    1
    """

    def __init__(
        self,
        *,
        capacity: int = DEFAULT_CAPACITY,
        key_size: int = DEFAULT_KEY_SIZE,
        value_size: int = DEFAULT_VALUE_SIZE,
        ctx: BaseContext | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        limits = (_limit("capacity", capacity), _limit("value_size", value_size), timeout)
        self._key_size = _limit("key_size", key_size)
        self._value_size = value_size
        context = _context(ctx)
        self._requests = context.Queue()
        self._replies = context.Queue()
        self._reply_lock = context.Lock()
        self._timeout = timeout
        self._creator = os.getpid()
        self._sequence = 0
        self._owner: Any = context.Process(
            target=_table_owner,
            args=(self._requests, self._replies, limits),
            name="shmref-table-owner",
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

    def _call(self, method: str, *args: Any) -> Any:
        if self._closed:
            self._check_open()
        _acquire(self._reply_lock, self._timeout, "reply lock")
        try:
            self._sequence += 1
            token = (os.getpid(), id(self), self._sequence)
            self._requests.put((token, method, args))
            while True:
                try:
                    answer, ok, result = self._replies.get(timeout=self._timeout)
                except queue.Empty:
                    raise TimeoutError(
                        f"no reply from the table's owner within {self._timeout} s"
                    ) from None
                # A reply to a caller that timed out earlier: nobody waits for it.
                if answer == token:
                    break
        finally:
            self._reply_lock.release()
        if not ok:
            raise result
        return result

    def get(self, key: Key, default: Any = None) -> Any:
        return self._call("get", _key_type(key), default)

    def __getitem__(self, key: Key) -> Value:
        return self._call("__getitem__", _key_type(key))  # type: ignore[no-any-return]

    def __setitem__(self, key: Key, value: Value) -> None:
        key = _plain_key(key, self._key_size)
        self._call("__setitem__", key, _plain_value(value, self._value_size))

    def __delitem__(self, key: Key) -> None:
        self._call("__delitem__", _key_type(key))

    def __contains__(self, key: object) -> bool:
        return bool(self._call("__contains__", _key_type(key)))

    def __len__(self) -> int:
        return int(self._call("__len__"))

    def keys(self) -> list[Key]:
        return list(self._call("keys"))

    def items(self) -> list[tuple[Key, Value]]:
        return list(self._call("items"))

    def pop(self, key: Key, default: Any = _MISSING) -> Any:
        key = _key_type(key)
        if default is _MISSING:
            return self._call("pop", key)
        return self._call("pop", key, default)

    def update(self, key: Key, fn: Callable[[Any], Value], default: Any) -> Value:
        key = _plain_key(key, self._key_size)
        # Pickled here, not by the Queue's feeder thread, where a failure
        # would only be printed and the caller would wait for a reply in vain.
        self._check_open()
        return self._call("apply", key, pickle.dumps(fn), default)  # type: ignore[no-any-return]

    def snapshot(self) -> dict[Key, Value]:
        return dict(self._call("copy"))

    def close(self) -> None:
        if self._closed:
            return
        try:
            if os.getpid() == self._creator and self._owner is not None:
                self._call(_STOP)
        finally:
            self._closed = True
            if self._owner is not None and os.getpid() == self._creator:
                self._owner.join(self._timeout)
                if self._owner.is_alive():
                    self._owner.kill()
                    self._owner.join()
                self._owner.close()
                self._owner = None
                for q in (self._requests, self._replies):
                    q.close()
                    q.join_thread()


# ---------------------------------------------------------------- Manager way


class _TableProxy(DictProxy):  # type: ignore[type-arg]
    """``manager.dict()``'s proxy, plus ``apply`` (one round trip for ``update``)."""

    _exposed_ = (*DictProxy._exposed_, "apply")  # type: ignore[attr-defined]

    def apply(self, key: Key, fn: Callable[[Any], Value], default: Any) -> Value:
        call: Any = self._callmethod  # typeshed says it returns None
        return call("apply", (key, fn, default))  # type: ignore[no-any-return]


class DictManager(SyncManager):
    """A ``SyncManager`` (``dict()``, ``list()``, ``Lock()``...) that also makes tables.

    ``manager.Table(capacity, value_size, timeout)`` is a ``dict`` in the
    server whose proxy is ``manager.dict()``'s plus one method, ``apply``.
    """


DictManager.register("Table", _ServerDict, _TableProxy)


class ManagerDict(_Closable):
    """A ``dict`` in a Manager server, reached through its proxy.

    This is ``manager.dict()``: every call is one round trip to the server,
    which runs it. ``update`` is one round trip too: the server's ``apply``
    runs ``fn`` there, under a lock that every write to the table takes (the
    server serves each client in a thread of its own). Pass a started
    :class:`DictManager` as ``manager`` to share one server between tables
    and other managed objects; otherwise each table starts its own. A dead
    server makes calls fail at once (``EOFError`` or ``ConnectionError``);
    the client side has no timeout, the server's lock waits ``timeout``.

    >>> from shmref.table import ManagerDict, increment
    >>> with ManagerDict(capacity=8) as table:
    ...     table[b"k"] = "v"
    ...     table.update("hits", increment, 0)
    ...     sorted(table.items(), key=repr)
    1
    [('hits', 1), (b'k', 'v')]
    """

    def __init__(
        self,
        *,
        capacity: int = DEFAULT_CAPACITY,
        key_size: int = DEFAULT_KEY_SIZE,
        value_size: int = DEFAULT_VALUE_SIZE,
        manager: DictManager | None = None,
        ctx: BaseContext | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        capacity = _limit("capacity", capacity)
        self._key_size = _limit("key_size", key_size)
        self._value_size = _limit("value_size", value_size)
        self._manager: DictManager | None = None
        self._creator = os.getpid()
        if manager is None:
            manager = self._manager = DictManager(ctx=_context(ctx))
            manager.start()
        self._proxy: Any = manager.Table(capacity, value_size, timeout)  # type: ignore[attr-defined]

    def __getstate__(self) -> dict[str, Any]:
        self._check_open()
        return {"proxy": self._proxy, "limits": (self._key_size, self._value_size)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._proxy = state["proxy"]
        self._key_size, self._value_size = state["limits"]
        self._manager = None

    def get(self, key: Key, default: Any = None) -> Any:
        if self._closed:
            self._check_open()
        return self._proxy.get(_key_type(key), default)

    def __getitem__(self, key: Key) -> Value:
        self._check_open()
        return self._proxy[_key_type(key)]  # type: ignore[no-any-return]

    def __setitem__(self, key: Key, value: Value) -> None:
        self._check_open()
        key = _plain_key(key, self._key_size)  # the key first, as every way checks
        self._proxy[key] = _plain_value(value, self._value_size)

    def __delitem__(self, key: Key) -> None:
        self._check_open()
        del self._proxy[_key_type(key)]

    def __contains__(self, key: object) -> bool:
        self._check_open()
        return _key_type(key) in self._proxy

    def __len__(self) -> int:
        self._check_open()
        return len(self._proxy)

    def keys(self) -> list[Key]:
        self._check_open()
        return list(self._proxy.keys())

    def items(self) -> list[tuple[Key, Value]]:
        self._check_open()
        return list(self._proxy.items())

    def pop(self, key: Key, default: Any = _MISSING) -> Any:
        self._check_open()
        key = _key_type(key)
        return self._proxy.pop(key) if default is _MISSING else self._proxy.pop(key, default)

    def update(self, key: Key, fn: Callable[[Any], Value], default: Any) -> Value:
        self._check_open()
        return self._proxy.apply(_plain_key(key, self._key_size), fn, default)  # type: ignore[no-any-return]

    def snapshot(self) -> dict[Key, Value]:
        self._check_open()
        return dict(self._proxy.copy())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._proxy = None  # the server drops its object before it stops
        # A forked child holds a copy of the creator's manager: not its to stop.
        if self._manager is not None and os.getpid() == self._creator:
            self._manager.shutdown()
            self._manager = None


# ---------------------------------------------------------------- for update and processes


def increment(value: int | float) -> int | float:
    """``value + 1``: a module-level ``fn`` for ``update`` (the Queue and Manager
    ways pickle it)."""
    return value + 1


def put_worker(table: SharedDict, key: Key, value: Value) -> None:
    """Process target: ``table[key] = value``, then close this process's handle."""
    table[key] = value
    table.close()


def unsafe_update_worker(
    table: SharedDict, key: Key, n: int, barrier: Any = None, timeout: float = 60.0
) -> None:
    """The race, kept to show it: ``table[key] = table.get(key, 0) + 1``, ``n`` times.

    Each read and each write is atomic, but not the pair: two processes read
    the same value, both add one, and one write is lost. Use ``update``.
    """
    if barrier is not None:
        barrier.wait(timeout)
    for _ in range(n):
        table[key] = table.get(key, 0) + 1
    table.close()


def update_worker(
    table: SharedDict,
    keys: Iterable[Key],
    n: int,
    barrier: Any = None,
    timeout: float = 60.0,
) -> None:
    """Process target: ``n`` times, ``table.update(key, increment, 0)`` for each key.

    With a ``barrier``, wait on it before the first update (so that all
    workers start together) and after the last one: a caller waiting on the
    same barrier times the work alone, without process start-up.
    """
    keys = list(keys)
    if barrier is not None:
        barrier.wait(timeout)
    update = table.update
    for _ in range(n):
        for key in keys:
            update(key, increment, 0)
    if barrier is not None:
        barrier.wait(timeout)
    table.close()
