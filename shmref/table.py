"""A shared hash table (``str``/``bytes`` keys to small values), three ways.

Every class here implements :class:`SharedDict`: ``get``, ``[]``, ``[]=``,
``del``, ``in``, ``len``, ``keys``, ``items``, ``pop``, ``snapshot`` and an
atomic ``update(key, fn, default)``, with the same limits and errors:

* ctypes shared memory: :class:`CtypesDict`, an open-addressing hash table in
  one ``multiprocessing.shared_memory`` segment; writers take a lock, readers
  take none (a table-wide sequence lock tells them to retry);
* message passing: :class:`QueueDict` (an owner process holds a ``dict`` and
  answers requests sent on a ``multiprocessing.Queue``);
* a Manager server: :class:`ManagerDict` (a ``dict`` in the server of a
  :class:`DictManager`, one round trip per call, ``update`` included);
* a Redis server: :class:`RedisDict` (a Redis hash, reachable from any host
  that can reach the server; ``update`` is a compare-and-set retried).

Keys are ``str`` or ``bytes`` of at most ``key_size`` bytes (UTF-8); values
are 64-bit ``int``, ``float``, or ``str``/``bytes`` of at most ``value_size``
bytes; the table holds at most ``capacity`` keys. The module is named
``table`` so that it does not shadow the builtin ``dict``. The file that
``python -m shmref.standalone table`` writes imports only the standard
library: copy that one file into a project and it works (:class:`RedisDict`
imports the ``redis`` package when one is made).
"""

from __future__ import annotations

import numbers
import os
import platform
import random
import struct
import sys
import threading
import time
import weakref
import zlib
from collections.abc import Callable, Iterable
from multiprocessing.context import BaseContext
from multiprocessing.managers import SyncManager
from multiprocessing.shared_memory import SharedMemory
from typing import Any, Protocol, TypeAlias, cast, runtime_checkable

from shmref.holder import Holder
from shmref.keyspace import DEFAULT_URL, RedisHandle, Script
from shmref.lifecycle import (
    DEFAULT_TIMEOUT,
    INT64_MAX,
    INT64_MIN,
    Closable,
    acquire,
    context,
    integer,
    pickled,
    portable,
    real,
    seconds,
    size,
    unpickled,
)
from shmref.owner import Owner
from shmref.segment import attach, create, release
from shmref.server import ManagerHandle, Served, Server, register_state

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
    "RedisDict",
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


DEFAULT_CAPACITY = 1024
DEFAULT_KEY_SIZE = 64
DEFAULT_VALUE_SIZE = 128


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
    are different keys; a value comes back with the type it was stored with;
    numpy integer and float scalars are stored as ``int`` and ``float``).
    ``keys()`` and ``items()`` return lists in no particular order;
    ``snapshot()`` returns a ``dict``; all three are taken at one moment.

    Writes check before they change anything: a key of another type or a bool,
    ``None``, list... value raises ``TypeError``; a key or value over its size
    raises ``ValueError``; an ``int`` outside the signed 64-bit range raises
    ``OverflowError``; a new key in a full table raises :class:`TableFull`.
    Each leaves the table as it was. A lookup with a key of another type
    raises ``TypeError``; a key over ``key_size`` is simply absent. The
    ``default`` of ``get`` and ``pop`` may be any object: it never leaves the
    caller.

    ``update(key, fn, default)`` stores and returns ``fn(current)``, where
    ``current`` is the key's value or ``default``, atomically: no other write
    to the table comes between the read and the write. If ``fn`` raises, or
    returns a value the table refuses, the table is unchanged and the caller
    gets the exception (``BaseException`` too; one that cannot be pickled
    comes as a ``RuntimeError`` that names it). ``fn`` must be a module-level
    function and ``default`` picklable (the Queue and Manager ways send them to
    the process that runs ``fn``: anything else is a ``TypeError`` at once),
    and ``fn`` must not use the table. After ``close()`` every call raises
    ``ValueError``.
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

#: The largest segment one process can map: x86-64 and AArch64 give a process
#: 2**47 bytes of address space, a 32-bit process less than sys.maxsize.
_LARGEST_TABLE = min(2**47, sys.maxsize)


def _limits(capacity: object, key_size: object, value_size: object) -> tuple[int, int, int]:
    """The checked ``(capacity, key_size, value_size)`` of a table of any way.

    The same bounds for every way: limits whose segment the ctypes way could
    not map are refused by the other ways too, with the same ``ValueError``.
    """
    capacity = size(capacity, "capacity")
    key_size = size(key_size, "key_size")
    value_size = size(value_size, "value_size")
    nbytes = _HEADER_SIZE + _slots_for(capacity) * _slot_size(key_size, value_size)
    if nbytes > _LARGEST_TABLE:
        raise ValueError(
            f"capacity={capacity}, key_size={key_size} and value_size={value_size} make "
            f"a table of {nbytes} bytes, over the {_LARGEST_TABLE} one process can map"
        )
    return capacity, key_size, value_size


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
        length = len(_utf8(key) if isinstance(key, str) else key)
        if length > key_size:
            raise ValueError(
                f"key is {length} bytes, over key_size={key_size}; the table is unchanged"
            )
    return key


def _number(value: object) -> int | float:
    """A numpy (or other) integer or float scalar as an int or a float."""
    if not isinstance(value, bool):
        if isinstance(value, numbers.Integral):
            return integer(value, "value")
        # Not a Fraction: a float would not give it back.
        if isinstance(value, numbers.Real) and not isinstance(value, numbers.Rational):
            return real(value, "value")
    raise TypeError(f"value must be int, float, str or bytes, not {type(value).__name__}")


def _plain_value(value: object, value_size: int) -> Value:
    """``value`` as a plain int, float, str or bytes, checked against the limits."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str, bytes)):
        value = _number(value)
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
        length = len(value) if len(value) * 4 <= value_size else len(_utf8(value))
    else:
        value = bytes(value)
        length = len(value)
    if length > value_size:
        raise ValueError(
            f"value is {length} bytes, over value_size={value_size}; the table is unchanged"
        )
    return value


def _utf8(text: str) -> bytes:
    # surrogatepass: every str round-trips, as it would in a dict.
    return text.encode("utf-8", "surrogatepass")


def _full(key: Key, capacity: int) -> TableFull:
    return TableFull(f"the table holds capacity={capacity} keys; {key!r} is new: not stored")


# ---------------------------------------------------------------- ctypes way

# Segment layout. Header (64 bytes): generation (u64), count (u64), then the
# limits for a reader of a memory dump. Then `slots` slots of `slot_size`
# bytes: a 16-byte slot header (crc32 of the key, key tag, value tag, key
# length, value length), key_size bytes of key, max(value_size, 8) of value.
# The generation and the count are words of a memoryview cast to "Q": one
# aligned 8-byte load or store each. Not struct: its pack_into zeroes the
# field before writing it, so a lock-free reader could see a generation of 0
# twice, around a torn read, and keep it.
_GENERATION, _COUNT = 0, 1

# After the slots, the journal of the write in progress, so that whoever takes
# the lock over from a writer killed mid-write can put the table right: three
# words (what to do, a slot, the count before the write), then room for one
# slot's bytes. A store keeps the slot as it was (undone on repair); a
# removal keeps its current hole (redone on repair: the backward shift goes
# on from there, and moving an entry twice is harmless).
_JOURNAL_WORDS = 32
_IDLE, _UNDO_STORE, _UNDO_NEW, _REDO_REMOVE = 0, 1, 2, 3
_OP, _SLOT_NO, _SAVED_COUNT = 0, 1, 2
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


#: In a process's read cache: a key looked up and found absent.
_ABSENT: Any = _Missing()


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


class CtypesDict(Closable):
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

    Each handle keeps a read cache of its own. A lookup (``get``, ``[]``,
    ``in``) of a ``str`` or ``bytes`` key files what it read, the value or
    its absence, with the generation the table had all through that read;
    the next lookup of the key returns it while the generation is still
    that one: one 8-byte load from the segment and a dict lookup. Every
    write makes the generation odd before it changes anything, and the
    repair after a writer killed or interrupted mid-write moves it on too, so
    a lookup that starts after a write returned, in any process, reads the
    table again: the cache never answers with a value a write has since
    replaced. A lookup that follows a write to the table (by any process)
    since this process's last lookup neither looks in the cache nor files
    anything, so a table written between lookups costs little cache work;
    other lookups the cache cannot answer cost a little more than without
    it: the failed dict lookup and the filing. A forked child
    inherits its parent's entries, still valid for the same reason; a
    handle pickled to a spawned child starts empty. Values are ``int``,
    ``float``, ``str`` or ``bytes``, which cannot be changed in place, so
    the filed object serves as a new copy would (only ``is`` tells them
    apart). The cache holds at most ``cache`` entries for ``str`` keys and
    as many for ``bytes`` keys (by default twice ``capacity``: every key the
    table can hold and as many absent ones), each a key, its value and a
    pair; a full one starts again. ``cache=0`` turns it off.

    The creating process owns the segment: its ``close()`` unlinks it (and
    so does dropping its last reference); ``close()`` elsewhere only
    detaches. ``timeout`` bounds every wait for the lock. A writer killed
    holding it does not keep it: on Linux the next caller takes it over
    after about :data:`shmref.holder.STALE` seconds, and first puts the
    table right from the journal each write keeps in the segment (a cut
    store is undone, a cut removal finished), so the table is as before or
    after that write. An exception inside a write, a caught
    ``KeyboardInterrupt`` included, is repaired the same way. ``fn`` runs in
    the caller, so any callable will do (a lambda too, which the other ways
    cannot send).

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
        cache: int | None = None,
    ) -> None:
        self._timeout = seconds(timeout)
        capacity, key_size, value_size = _limits(capacity, key_size, value_size)
        self._capacity, self._key_size, self._value_size = capacity, key_size, value_size
        self._cache_limit = 2 * capacity if cache is None else size(cache, "cache", low=0)
        slots = _slots_for(capacity)
        # The lock with a record of its holder, taken over (after _repair)
        # if the holder dies mid-write: see shmref.holder.
        self._holder: Any = Holder(context(ctx))
        stride = _slot_size(key_size, value_size)
        segment = create(_HEADER_SIZE + slots * stride + _JOURNAL_WORDS + stride)
        # A fresh segment is zero-filled: generation 0, count 0, slots empty.
        buf: Any = segment.buf
        _LIMITS.pack_into(buf, 16, slots, key_size, value_size)
        del buf
        self._setup(segment, os.getpid())

    def _setup(self, segment: SharedMemory, creator: int | None) -> None:
        self._segment = segment
        self._buf: Any = cast(Any, segment.buf)
        self._words: Any = self._buf[:_HEADER_SIZE].cast("Q")
        slots, key_size, value_size = _LIMITS.unpack_from(self._buf, 16)
        self._mask = slots - 1
        self._slot_size = _slot_size(key_size, value_size)
        journal_at = _HEADER_SIZE + slots * self._slot_size
        self._journal: Any = self._buf[journal_at : journal_at + _JOURNAL_WORDS].cast("Q")
        self._image_at = journal_at + _JOURNAL_WORDS
        self._value_at = _SLOT_HEADER + key_size
        self._lock_free = _ORDERED_LOADS
        self._forget()
        self._finalizer = weakref.finalize(
            self, release, segment, [self._words, self._journal], creator
        )

    def __getstate__(self) -> dict[str, Any]:
        if self._closed:
            self._refuse()
        return {
            "name": self._segment.name,
            "holder": self._holder,
            "limits": (self._capacity, self._key_size, self._value_size),
            "timeout": self._timeout,
            "cache": self._cache_limit,  # the entries stay here: a new process starts empty
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._capacity, self._key_size, self._value_size = state["limits"]
        self._holder = state["holder"]
        self._timeout = state["timeout"]
        self._cache_limit = state["cache"]
        self._setup(attach(state["name"]), None)

    # -- reading

    def _find(self, tag: int, data: bytes, crc: int) -> tuple[int, int, int, int]:
        """(offset, value tag, value length, slot) of the key, or (-1, 0, 0, free slot)."""
        buf, mask, stride = self._buf, self._mask, self._slot_size
        slot = crc & mask
        length = len(data)
        for _ in range(mask + 1):
            at = _HEADER_SIZE + slot * stride
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

    def _read(self, tag: int, data: bytes) -> tuple[bool, Value | None, int]:
        """(found, value, generation) of a key, at one moment, without a lock if possible.

        ``generation`` is the one the table had all through the read (even).
        """
        crc = zlib.crc32(data, tag)
        if self._lock_free:
            words = self._words
            for _ in range(_OPTIMISTIC_READS):
                generation = words[_GENERATION]
                if generation & 1:
                    break  # a writer is at work: wait for it on the lock
                try:
                    at, value_tag, length, _ = self._find(tag, data, crc)
                    value = self._decode(at, value_tag, length) if at >= 0 else None
                except (_Inconsistent, UnicodeDecodeError):
                    continue  # a torn read; the generation has moved
                if words[_GENERATION] == generation:
                    return at >= 0, value, generation
        holder = self._holder
        try:
            holder.enter(self._timeout, "table lock", self, self._repair)
            at, value_tag, length, _ = self._find(tag, data, crc)
            value = self._decode(at, value_tag, length) if at >= 0 else None
            # Even: writes change it only under the lock, and enter()
            # repaired a write cut short before it let this process in.
            generation = self._words[_GENERATION]
            holder.leave()
        except BaseException:
            holder.abandon(self._repair)
            raise
        return at >= 0, value, generation

    # -- the read cache: what this process read, each entry with the
    # generation it was read at, valid while the table still has it

    def _forget(self) -> None:
        # Two dicts: "a" and b"a" hash alike, and comparing them warns under
        # python -b. Entries are (generation, value or _ABSENT).
        self._texts: dict[Key, tuple[int, Any]] = {}
        self._blobs: dict[Key, tuple[int, Any]] = {}
        #: The generation this process's last lookup saw: a lookup that
        #: sees another one comes after a write, when no entry can be valid.
        self._seen = -1

    def _remember(
        self, entries: dict[Key, tuple[int, Any]], key: Key, value: Any, generation: int
    ) -> None:
        """File ``value`` (or :data:`_ABSENT`) of ``key``, read all through ``generation``.

        ``entries`` is the cache of the key's type; ``get`` inlines the common case.
        """
        if len(entries) >= self._cache_limit:
            if not self._cache_limit:
                return
            # Full: start again. Each entry carries its generation, so a
            # thread filing one meanwhile files it rightly anyway.
            entries.clear()
        entries[key] = (generation, value)

    def _scan(self) -> list[tuple[Key, Value]]:
        if self._lock_free:
            generation = self._words[_GENERATION]
            if not generation & 1:
                try:
                    entries = self._entries()
                except (_Inconsistent, UnicodeDecodeError):
                    pass
                else:
                    if self._words[_GENERATION] == generation:
                        return entries
        # A whole-table read is long: under writes, take the lock at once.
        holder = self._holder
        try:
            holder.enter(self._timeout, "table lock", self, self._repair)
            entries = self._entries()
            holder.leave()
        except BaseException:
            holder.abandon(self._repair)
            raise
        return entries

    def _entries(self) -> list[tuple[Key, Value]]:
        buf, stride = self._buf, self._slot_size
        entries: list[tuple[Key, Value]] = []
        for at in range(_HEADER_SIZE, _HEADER_SIZE + (self._mask + 1) * stride, stride):
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
            self._refuse()
        # The read cache first: an entry read at the generation the table
        # still has is the key's value now, since every write makes the
        # generation odd before it changes anything. A hit is a dict lookup
        # and one 8-byte load from the segment.
        # The generation is read first: it also opens the read below. Only
        # if the table was quiet since this process's last lookup (no
        # write) can the cache hold a valid entry, and is a new one worth
        # filing: a table written between lookups costs no cache work.
        generation = self._words[_GENERATION]
        quiet = generation == self._seen
        kind = key.__class__
        entries: dict[Key, tuple[int, Any]] | None
        if kind is str or kind is bytes:
            entries = self._texts if kind is str else self._blobs
            if quiet:
                entry = entries.get(key)
                if entry is not None and entry[0] == generation:
                    value = entry[1]
                    return default if value is _ABSENT else value
            if kind is str:
                tag, data = _STR_KEY, key.encode("utf-8", "surrogatepass")  # type: ignore[union-attr]
            else:
                tag, data = _BYTES_KEY, key
        else:
            entries = None  # a subclass: not cached, its == may not be str's
            tag, data = _lookup_key(key)
        if not quiet:
            self._seen = generation
            entries = None
        # The common case inline (calls are most of the cost of a get): the
        # key or an empty slot at the key's home slot, and no writer about.
        if self._lock_free:
            buf, words = self._buf, self._words
            crc = zlib.crc32(data, tag)
            at = _HEADER_SIZE + (crc & self._mask) * self._slot_size
            hashed, key_tag, value_tag, length, value_length = _SLOT.unpack_from(buf, at)
            if key_tag == 0:
                value = _ABSENT
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
            # Read all through one even generation (a seqlock): only then
            # is the value the table's, and fit to be cached.
            if not generation & 1 and words[_GENERATION] == generation:
                if entries is not None:
                    if len(entries) < self._cache_limit:  # _remember, inlined
                        entries[key] = (generation, value)
                    else:
                        self._remember(entries, key, value, generation)
                return default if value is _ABSENT else value
        found, value, generation = self._read(tag, data)
        if entries is not None:
            self._remember(entries, key, value if found else _ABSENT, generation)
        return value if found else default

    def __getitem__(self, key: Key) -> Value:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value  # type: ignore[no-any-return]

    def __contains__(self, key: object) -> bool:
        return self.get(key, _MISSING) is not _MISSING  # type: ignore[arg-type]

    def __len__(self) -> int:
        if self._closed:
            self._refuse()
        # One aligned 8-byte field: read whole, no generation check needed.
        return int(self._words[_COUNT])

    def keys(self) -> list[Key]:
        if self._closed:
            self._refuse()
        return [key for key, _ in self._scan()]

    def items(self) -> list[tuple[Key, Value]]:
        if self._closed:
            self._refuse()
        return self._scan()

    def snapshot(self) -> dict[Key, Value]:
        if self._closed:
            self._refuse()
        return dict(self._scan())

    # -- writing (under the lock; the generation is odd while memory changes)

    def _begin(self) -> int:
        generation = int(self._words[_GENERATION]) + 1
        self._words[_GENERATION] = generation
        return generation

    def _end(self, generation: int) -> None:
        self._words[_GENERATION] = generation + 1

    def _store(
        self, key_tag: int, key: bytes, crc: int, at: int, slot: int, tag: int, data: bytes
    ) -> None:
        """Write a value at ``at``, or a new entry in the free ``slot`` if ``at < 0``."""
        buf, words, journal, stride = self._buf, self._words, self._journal, self._slot_size
        new = at < 0
        count = words[_COUNT]
        if new:
            if count >= self._capacity:
                decoded = str(key, "utf-8", "surrogatepass") if key_tag == _STR_KEY else key
                raise _full(decoded, self._capacity)
            at = _HEADER_SIZE + slot * stride
        words[_GENERATION] = generation = words[_GENERATION] + 1  # odd: _begin, inlined
        # The journal first, its operation last (stores are seen in order).
        journal[_SLOT_NO] = (at - _HEADER_SIZE) // stride
        journal[_SAVED_COUNT] = count
        if new:
            journal[_OP] = _UNDO_NEW
            start = at + _SLOT_HEADER
            buf[start : start + len(key)] = key
            words[_COUNT] = count + 1
        else:
            buf[self._image_at : self._image_at + stride] = buf[at : at + stride]
            journal[_OP] = _UNDO_STORE
        value_at = at + self._value_at
        buf[value_at : value_at + len(data)] = data
        _SLOT.pack_into(buf, at, crc, key_tag, tag, len(key), len(data))
        journal[_OP] = _IDLE
        words[_GENERATION] = generation + 1

    def _remove(self, slot: int) -> None:
        """Empty ``slot``, shifting back the entries whose probe passed over it."""
        journal, words = self._journal, self._words
        generation = self._begin()
        journal[_SLOT_NO] = slot
        journal[_SAVED_COUNT] = count = words[_COUNT]
        journal[_OP] = _REDO_REMOVE
        self._shift_back(slot)
        words[_COUNT] = count - 1
        journal[_OP] = _IDLE
        self._end(generation)

    def _shift_back(self, hole: int) -> None:
        """Fill ``hole`` from the entries after it whose home allows, then empty the last hole."""
        buf, mask, stride, journal = self._buf, self._mask, self._slot_size, self._journal
        slot = hole
        while True:
            slot = (slot + 1) & mask
            at = _HEADER_SIZE + slot * stride
            hashed, key_tag = _SLOT.unpack_from(buf, at)[:2]
            if key_tag == 0:
                break
            home = hashed & mask
            # The entry stays if its home lies cyclically in (hole, slot].
            if (hole < home <= slot) if hole <= slot else (home > hole or home <= slot):
                continue
            start = _HEADER_SIZE + hole * stride
            buf[start : start + stride] = buf[at : at + stride]
            hole = journal[_SLOT_NO] = slot  # the copy is whole: redo from the new hole
        start = _HEADER_SIZE + hole * stride
        buf[start : start + _SLOT_HEADER] = _EMPTY_SLOT

    def _repair(self) -> None:
        """Put right what a write cut short left (its writer died, or was interrupted).

        Runs under the lock, taken over from a dead writer or still held by
        an interrupted one: the journal's store is undone, its removal
        finished; then the generation is even again.
        """
        buf, words, journal, stride = self._buf, self._words, self._journal, self._slot_size
        op, at = journal[_OP], _HEADER_SIZE + journal[_SLOT_NO] * stride
        if op == _UNDO_STORE:
            buf[at : at + stride] = buf[self._image_at : self._image_at + stride]
            words[_COUNT] = journal[_SAVED_COUNT]
        elif op == _UNDO_NEW:
            buf[at : at + _SLOT_HEADER] = _EMPTY_SLOT
            words[_COUNT] = journal[_SAVED_COUNT]
        elif op == _REDO_REMOVE:
            self._shift_back(journal[_SLOT_NO])
            words[_COUNT] = journal[_SAVED_COUNT] - 1
        journal[_OP] = _IDLE
        if words[_GENERATION] & 1:
            words[_GENERATION] += 1

    def __setitem__(self, key: Key, value: Value) -> None:
        if self._closed:
            self._refuse()
        key_tag, key_data = _encode_key(key, self._key_size)
        tag, data = _encode_value(value, self._value_size)
        crc = zlib.crc32(key_data, key_tag)
        # Holder.enter and leave inlined: two calls are a tenth of a store.
        holder = self._holder
        lock = holder.lock
        try:
            if not lock.acquire(False):
                holder.wait(self._timeout, "table lock", self, self._repair)
            holder.record[0] = holder.pid
            at, _, _, slot = self._find(key_tag, key_data, crc)
            self._store(key_tag, key_data, crc, at, slot, tag, data)
            holder.record[0] = 0
            lock.release()
        except BaseException:
            holder.abandon(self._repair)
            raise

    def update(self, key: Key, fn: Callable[[Any], Value], default: Any) -> Value:
        if self._closed:
            self._refuse()
        key_tag, key_data = _encode_key(key, self._key_size)
        crc = zlib.crc32(key_data, key_tag)
        holder = self._holder
        lock = holder.lock
        try:
            if not lock.acquire(False):  # Holder.enter, inlined (see __setitem__)
                holder.wait(self._timeout, "table lock", self, self._repair)
            holder.record[0] = holder.pid
            at, value_tag, length, slot = self._find(key_tag, key_data, crc)
            current = self._decode(at, value_tag, length) if at >= 0 else default
            try:
                new = fn(current)
            except BaseException as error:
                # As the other ways give it: one that cannot be pickled
                # comes as the RuntimeError their owner or server sends.
                sent = portable(error)
                if sent is error:
                    raise
                raise sent from error
            tag, data = _encode_value(new, self._value_size)
            self._store(key_tag, key_data, crc, at, slot, tag, data)
            holder.record[0] = 0
            lock.release()
        except BaseException:
            holder.abandon(self._repair)
            raise
        return _plain_value(new, self._value_size)

    def pop(self, key: Key, default: Any = _MISSING) -> Any:
        if self._closed:
            self._refuse()
        key_tag, key_data = _lookup_key(key)
        crc = zlib.crc32(key_data, key_tag)
        holder = self._holder
        lock = holder.lock
        try:
            if not lock.acquire(False):  # Holder.enter, inlined (see __setitem__)
                holder.wait(self._timeout, "table lock", self, self._repair)
            holder.record[0] = holder.pid
            at, value_tag, length, slot = self._find(key_tag, key_data, crc)
            if at >= 0:
                value = self._decode(at, value_tag, length)
                self._remove(slot)
            holder.record[0] = 0
            lock.release()
        except BaseException:
            holder.abandon(self._repair)
            raise
        if at >= 0:
            return value
        if default is _MISSING:
            raise KeyError(key)
        return default

    def __delitem__(self, key: Key) -> None:
        self.pop(key)

    def _occupied(self) -> int:
        """Slots in use (for tests: deletions leave no tombstones)."""
        stride = self._slot_size
        return sum(
            1
            for at in range(_HEADER_SIZE, _HEADER_SIZE + (self._mask + 1) * stride, stride)
            if self._buf[at + 4]
        )

    def _release(self) -> None:
        self._buf = None  # the segment cannot close while a view of it lives
        self._finalizer()
        self._holder = None
        self._forget()


# ---------------------------------------------------------------- the dict a QueueDict's owner
# and a ManagerDict's server hold


class _Table(Served):
    """A ``dict`` with the table's capacity and an atomic ``apply``.

    Its public methods are the requests of both remote ways: a
    :class:`QueueDict`'s owner calls them one at a time, a
    :class:`ManagerDict`'s server directly (``apply`` through
    :meth:`~shmref.server.Served.serve`). Clients
    check keys and values before they send them; this class checks what only
    the holder can: the capacity, and the result of ``fn``. A missing key
    reads as ``None``, which no value can be, so a default never travels.
    The server serves each client in a thread of its own, so writes take a
    lock: ``apply`` runs Python code (``fn``) between its read and its write.
    """

    def __init__(self, capacity: int, value_size: int, timeout: float | None) -> None:
        self._data: dict[Key, Value] = {}
        self._capacity = capacity
        self._value_size = value_size
        self._timeout = timeout
        self._lock = threading.Lock()

    def get(self, key: Key) -> Value | None:
        return self._data.get(key)

    def count(self) -> int:
        return len(self._data)

    def keys(self) -> list[Key]:
        return list(self._data)

    def items(self) -> list[tuple[Key, Value]]:
        return list(self._data.items())

    def snapshot(self) -> dict[Key, Value]:
        return self._data.copy()

    def store(self, key: Key, value: Value) -> None:
        acquire(self._lock, self._timeout, "table lock")
        try:
            if key not in self._data and len(self._data) >= self._capacity:
                raise _full(key, self._capacity)
            self._data[key] = value
        finally:
            self._lock.release()

    def pop(self, key: Key) -> Value | None:
        acquire(self._lock, self._timeout, "table lock")
        try:
            return self._data.pop(key, None)
        finally:
            self._lock.release()

    def apply(self, key: Key, payload: bytes) -> Value:
        fn, (default,) = unpickled(payload)
        acquire(self._lock, self._timeout, "table lock")
        try:
            new = _plain_value(fn(self._data.get(key, default)), self._value_size)
            if key not in self._data and len(self._data) >= self._capacity:
                raise _full(key, self._capacity)
            self._data[key] = new
            return new
        finally:
            self._lock.release()


def _sendable(fn: object, default: object) -> bytes:
    """``fn`` and ``default`` of an update pickled here, naming the one that fails."""
    try:
        return pickled(fn, (default,))
    except TypeError:
        pickled(fn)  # raises if fn is to blame
        raise TypeError(
            "update sends default to the process that runs fn, so it must be "
            f"picklable, not {default!r}"
        ) from None


class _Remote(Closable):
    """What :class:`QueueDict` and :class:`ManagerDict` share: every call is a request.

    ``link`` is the handle's :class:`~shmref.owner.Owner` or
    :class:`~shmref.server.Server`; its ``call(method, *args)`` runs
    :class:`_Table`'s ``method`` there and returns its result or raises its
    exception here (``answer`` for a result that is never None,
    ``call_guarded`` for ``apply``, which runs the user's ``fn``). A get or
    pop sent as a server stops may read as a missing key.
    """

    def __init__(self, link: Owner | Server, key_size: int, value_size: int) -> None:
        self._link = link
        self._key_size = key_size
        self._value_size = value_size
        self._call = link.call  # bound once: no lookup on each call

    def __getstate__(self) -> dict[str, Any]:
        if self._closed:
            self._refuse()
        return {"link": self._link, "limits": (self._key_size, self._value_size)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        _Remote.__init__(self, state["link"], *state["limits"])

    def _release(self) -> None:
        self._link.close()

    def get(self, key: Key, default: Any = None) -> Any:
        if self._closed:
            self._refuse()
        value = self._call("get", _key_type(key))
        return default if value is None else value

    def __getitem__(self, key: Key) -> Value:
        if self._closed:
            self._refuse()
        value = self._call("get", _key_type(key))
        if value is None:
            raise KeyError(key)
        return value  # type: ignore[no-any-return]

    def __setitem__(self, key: Key, value: Value) -> None:
        if self._closed:
            self._refuse()
        key = _plain_key(key, self._key_size)  # the key first, as every way checks
        self._call("store", key, _plain_value(value, self._value_size))

    def __delitem__(self, key: Key) -> None:
        self.pop(key)

    def __contains__(self, key: object) -> bool:
        if self._closed:
            self._refuse()
        return self._call("get", _key_type(key)) is not None

    def __len__(self) -> int:
        if self._closed:
            self._refuse()
        return int(self._link.answer("count"))

    def keys(self) -> list[Key]:
        if self._closed:
            self._refuse()
        return self._link.answer("keys")  # type: ignore[no-any-return]

    def items(self) -> list[tuple[Key, Value]]:
        if self._closed:
            self._refuse()
        return self._link.answer("items")  # type: ignore[no-any-return]

    def pop(self, key: Key, default: Any = _MISSING) -> Any:
        if self._closed:
            self._refuse()
        value = self._call("pop", _key_type(key))
        if value is not None:
            return value
        if default is _MISSING:
            raise KeyError(key)
        return default

    def update(self, key: Key, fn: Callable[[Any], Value], default: Any) -> Value:
        if self._closed:
            self._refuse()
        key = _plain_key(key, self._key_size)
        return self._link.call_guarded("apply", key, _sendable(fn, default))  # type: ignore[no-any-return]

    def snapshot(self) -> dict[Key, Value]:
        if self._closed:
            self._refuse()
        return self._link.answer("snapshot")  # type: ignore[no-any-return]


# ---------------------------------------------------------------- Queue way


class QueueDict(_Remote):
    """A ``dict`` held by an owner process, reached by requests to it.

    Every call is one request and one reply (:class:`~shmref.owner.Owner`):
    the owner answers one request at a time, so each call is atomic and sees
    every call that returned before it in any process; ``update`` runs ``fn``
    in the owner. ``fn`` and ``default`` are pickled by the caller: a lambda
    fails there, with ``TypeError``, and nothing is sent. Calls from many
    processes, each on its own connection, queue one behind another in the
    owner. ``timeout`` bounds every call's wait: a call raises
    ``TimeoutError`` after it. If the owner dies,
    calls raise :class:`~shmref.lifecycle.OwnerGone` and ``close()`` returns
    at once; the owner exits by itself if its creator dies.

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
        timeout = seconds(timeout)
        capacity, key_size, value_size = _limits(capacity, key_size, value_size)
        owner = Owner(
            context(ctx),
            _Table,
            (capacity, value_size, timeout),
            what="QueueDict",
            timeout=timeout,
        )
        super().__init__(owner, key_size, value_size)

    @property
    def _owner(self) -> Owner:
        """The owner process's link, by the name every Queue way gives it."""
        return cast(Owner, self._link)


# ---------------------------------------------------------------- Manager way


class DictManager(SyncManager):
    """A ``SyncManager`` (``dict()``, ``list()``, ``Lock()``...) that also holds tables.

    Pass a started one as ``manager=`` to :class:`ManagerDict` to share one
    server between tables and the manager's other objects.
    """


register_state(DictManager, "Table", _Table)


class ManagerDict(_Remote, ManagerHandle):
    """A ``dict`` in a Manager server; every call is one round trip.

    The server runs each call, ``update`` included: its ``fn`` runs there,
    under a lock that every write to the table takes (the server serves each
    client in a thread of its own). ``fn`` and ``default`` are pickled by the
    caller: a lambda fails there, with ``TypeError``, and nothing is sent.
    Pass a started :class:`DictManager` as ``manager`` to share one server
    between tables and other managed objects; otherwise each table starts
    its own. ``timeout`` bounds the server's wait for that lock (a call
    behind an ``update`` whose ``fn`` runs longer raises ``TimeoutError``),
    and the caller's wait for the reply (a server stopped or hung, or an
    ``fn`` that runs longer: ``TimeoutError``). A dead server makes calls raise
    :class:`~shmref.lifecycle.OwnerGone` at once.

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
        address: tuple[str, int] | None = None,
        authkey: bytes | None = None,
    ) -> None:
        timeout = seconds(timeout)
        capacity, key_size, value_size = _limits(capacity, key_size, value_size)
        args = (capacity, value_size, timeout)
        server = self._serve(DictManager, "Table", args, manager, ctx, address, authkey, timeout)
        super().__init__(server, key_size, value_size)
        self._publish()

    @property
    def _server(self) -> Server:
        """The Manager server's link, by the name every Manager way gives it."""
        return cast(Server, self._link)


# ---------------------------------------------------------------- Redis way

# The hash's fields and values are tagged bytes, so that a value comes back
# with its type: s (str, UTF-8) or b (bytes) for a key; i (int, decimal), f
# (float, its repr, which float() reads back exactly), s or b for a value.
# Not pickle: whoever can write the server's keys could then run code in
# every process that reads them. No encoded value is empty: b"" in a swap
# stands for "absent".


def _field(key: Key) -> bytes:
    return b"s" + _utf8(key) if isinstance(key, str) else b"b" + key


def _unfield(field: bytes) -> Key:
    return str(field[1:], "utf-8", "surrogatepass") if field[:1] == b"s" else field[1:]


def _encoded(value: Value) -> bytes:
    """A plain value (:func:`_plain_value`'s) as the hash holds it."""
    if isinstance(value, int):
        return b"i%d" % value
    if isinstance(value, float):
        return b"f" + repr(value).encode()
    if isinstance(value, str):
        return b"s" + _utf8(value)
    return b"b" + value


def _decoded(data: bytes) -> Value:
    tag, body = data[:1], data[1:]
    if tag == b"i":
        return int(body)
    if tag == b"f":
        return float(body)
    if tag == b"s":
        return str(body, "utf-8", "surrogatepass")
    return body


# KEYS[2] is the hash. A new field in a hash of `capacity` fields is refused.
_REDIS_STORE = Script(
    """
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0
    and redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[3]) then
  return redis.error_reply('FULL')
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
"""
)
# update's write: only if the field still holds what fn was given (ARGV[2],
# empty for absent); 0 if another write came between.
_REDIS_SWAP = Script(
    """
local current = redis.call('HGET', KEYS[2], ARGV[1])
if (current or '') ~= ARGV[2] then return 0 end
if not current and redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[4]) then
  return redis.error_reply('FULL')
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return 1
"""
)
_REDIS_FIELD = Script("return redis.call('HGET', KEYS[2], ARGV[1])")
_REDIS_HAS = Script("return redis.call('HEXISTS', KEYS[2], ARGV[1])")
_REDIS_POP = Script(
    """
local value = redis.call('HGET', KEYS[2], ARGV[1])
if value then redis.call('HDEL', KEYS[2], ARGV[1]) end
return value
"""
)
_REDIS_COUNT = Script("return redis.call('HLEN', KEYS[2])")
_REDIS_ALL = Script("return redis.call('HGETALL', KEYS[2])")

#: update's pause after a lost compare-and-set: random, up to this many
#: seconds, doubled after each loss up to :data:`_LONGEST_PAUSE`, so that
#: updaters that keep colliding spread out.
_FIRST_PAUSE = 0.0005
_LONGEST_PAUSE = 0.02


class RedisDict(RedisHandle):
    """A Redis hash; every call is one round trip to the server (``update``, two or more).

    Each call but ``update`` is one Lua script, atomic on the server; a new
    key in a hash of ``capacity`` keys is refused there
    (:class:`TableFull`), the other limits are checked in the caller.
    ``update`` runs ``fn`` in the caller, so any callable will do (a lambda
    too) and ``default`` never leaves the process. It reads the value, runs
    ``fn``, and writes the result only if the key still holds what ``fn``
    was given (a compare-and-set, one script); if another write came
    between, it pauses a random moment and runs ``fn`` again on the new
    value. So the result is ``fn`` of the value the key held when it was
    written, as with a lock, but ``fn`` may run more than once: it must
    have no other effect. Updaters that keep colliding on one key take
    turns at random, with no order among them; an ``update`` that has not
    written within ``timeout`` seconds raises ``TimeoutError`` with the
    table unchanged.

    Other processes attach with :meth:`connect` (``url`` and ``name``) or get
    the table as a ``Process`` argument; the creator's ``close()`` deletes
    its keys, and calls elsewhere then raise
    :class:`~shmref.lifecycle.OwnerGone`, as they do when the server is
    gone. A server that does not answer within ``timeout`` seconds raises
    ``TimeoutError``. Needs a running Redis server (``url``, default a
    local one) and the ``redis`` package (``pip install shmref[redis]``).

    Part of the contract it cannot keep: a creator killed without
    ``close()`` leaves its keys on the server.
    """

    def __init__(
        self,
        *,
        capacity: int = DEFAULT_CAPACITY,
        key_size: int = DEFAULT_KEY_SIZE,
        value_size: int = DEFAULT_VALUE_SIZE,
        url: str = DEFAULT_URL,
        name: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        capacity, key_size, value_size = _limits(capacity, key_size, value_size)
        limits = {"capacity": capacity, "key_size": key_size, "value_size": value_size}
        self._create(url, name, timeout, description=limits)

    def _adopt(self, description: dict[str, Any]) -> None:
        super()._adopt(description)
        self._capacity = int(description["capacity"])
        self._key_size = int(description["key_size"])
        self._value_size = int(description["value_size"])

    def _run(self, script: Script, *args: str | bytes | int, key: Key = b"") -> Any:
        if self._closed:
            self._refuse()
        capacity = self._capacity
        full = {"FULL": lambda _: _full(key, capacity)}
        return self._keyspace.run(script, ("table",), args, full)

    def get(self, key: Key, default: Any = None) -> Any:
        if self._closed:
            self._refuse()
        stored = self._run(_REDIS_FIELD, _field(_key_type(key)))
        return default if stored is None else _decoded(stored)

    def __getitem__(self, key: Key) -> Value:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value  # type: ignore[no-any-return]

    def __setitem__(self, key: Key, value: Value) -> None:
        if self._closed:
            self._refuse()
        key = _plain_key(key, self._key_size)  # the key first, as every way checks
        data = _encoded(_plain_value(value, self._value_size))
        self._run(_REDIS_STORE, _field(key), data, self._capacity, key=key)

    def __delitem__(self, key: Key) -> None:
        self.pop(key)

    def __contains__(self, key: object) -> bool:
        if self._closed:
            self._refuse()
        return bool(self._run(_REDIS_HAS, _field(_key_type(key))))

    def __len__(self) -> int:
        return int(self._run(_REDIS_COUNT))

    def items(self) -> list[tuple[Key, Value]]:
        flat = self._run(_REDIS_ALL)
        return [(_unfield(flat[i]), _decoded(flat[i + 1])) for i in range(0, len(flat), 2)]

    def keys(self) -> list[Key]:
        return [key for key, _ in self.items()]

    def snapshot(self) -> dict[Key, Value]:
        return dict(self.items())

    def pop(self, key: Key, default: Any = _MISSING) -> Any:
        if self._closed:
            self._refuse()
        stored = self._run(_REDIS_POP, _field(_key_type(key)))
        if stored is not None:
            return _decoded(stored)
        if default is _MISSING:
            raise KeyError(key)
        return default

    def update(self, key: Key, fn: Callable[[Any], Value], default: Any) -> Value:
        if self._closed:
            self._refuse()
        key = _plain_key(key, self._key_size)
        field = _field(key)
        timeout = self._keyspace.timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = _FIRST_PAUSE
        while True:
            stored = self._run(_REDIS_FIELD, field)
            try:
                new = fn(default if stored is None else _decoded(stored))
            except BaseException as error:
                sent = portable(error)  # as the other ways give it (see CtypesDict)
                if sent is error:
                    raise
                raise sent from error
            plain = _plain_value(new, self._value_size)
            expected = b"" if stored is None else stored
            if self._run(_REDIS_SWAP, field, expected, _encoded(plain), self._capacity, key=key):
                return plain
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(
                    f"update of {key!r}: another write came before each of its own "
                    f"for {timeout} s; the table is unchanged by it"
                )
            time.sleep(random.uniform(0, pause))
            pause = min(2 * pause, _LONGEST_PAUSE)


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
