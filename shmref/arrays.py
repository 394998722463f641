"""A fixed-length typed array shared between processes, four ways.

Every class here implements :class:`Array`: item and slice access with
Python's semantics, ``read()``/``readinto()``/``write()`` of the whole array,
``close()`` and the context-manager protocol, for the typecodes of the
:mod:`array` module listed in :data:`TYPECODES`.

* ctypes shared memory: :class:`CtypesArray`. Small arrays live in a
  ``multiprocessing.RawArray``, large ones (:data:`SEGMENT_BYTES` and up) in a
  named ``multiprocessing.shared_memory`` segment; with numpy installed,
  ``as_numpy()`` returns a view of the shared memory itself;
* message passing: :class:`QueueArray` (an owner process holds the data and
  answers requests sent on a ``multiprocessing.Queue``);
* a Manager server: :class:`ManagerArray` (the data lives in the server, one
  round trip per call);
* a Redis server: :class:`RedisArray` (the items are one Redis string, each
  call one Lua script; reachable from any host that can reach the server).

Every argument is checked in the caller, by code the four ways share, so
the same bad input raises the same exception in each, before anything is
written or sent. numpy's integer and float scalars count as ints and
floats; a size larger than :data:`MAX_BYTES` (this machine's memory) is
refused with ``ValueError`` by every way.

Objects pass to child processes as ``Process`` arguments under every start
method. The process that creates an array owns it: its ``close()`` releases
the segment, owner process or server; ``close()`` in another process only
detaches that process's handle. This module is named ``arrays`` so that,
copied alone into a project, it does not shadow the standard ``array``
module. ``python -m shmref.standalone arrays`` writes it and the shared
machinery it uses as one file that imports only the standard library (numpy
is optional; :class:`RedisArray` imports the ``redis`` package when one is
made).
"""

from __future__ import annotations

import array
import gc
import numbers
import os
import sys
import threading
import weakref
from collections.abc import Iterable, Iterator
from multiprocessing.context import BaseContext
from multiprocessing.managers import BaseManager
from typing import TYPE_CHECKING, Any, Protocol, cast, overload, runtime_checkable

from shmref.holder import Holder, RecordedLock
from shmref.keyspace import DEFAULT_URL, RedisHandle, Script
from shmref.lifecycle import DEFAULT_TIMEOUT, Closable, context, seconds, size
from shmref.owner import Owner
from shmref.segment import attach, create, release
from shmref.server import ManagerHandle, Served, Server, register_state

if TYPE_CHECKING:
    from multiprocessing.shared_memory import SharedMemory

    import numpy

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_BYTES",
    "REDIS_BYTES",
    "SEGMENT_BYTES",
    "TYPECODES",
    "Array",
    "ArrayManager",
    "CtypesArray",
    "ManagerArray",
    "QueueArray",
    "RedisArray",
    "fill",
]

#: Typecodes of the :mod:`array` module that every way supports: signed and
#: unsigned integers of 1 to 8 bytes, C float and C double.
TYPECODES = "bBhHiIlLqQfd"

#: Arrays of at least this many bytes get a shared_memory segment of their
#: own; smaller ones share the multiprocessing heap (see CtypesArray).
SEGMENT_BYTES = 1 << 20


def _memory() -> int:
    """This machine's physical memory in bytes (``sys.maxsize`` where unknown)."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # no sysconf, or not these names
        return sys.maxsize
    return min(total, sys.maxsize) if total > 0 else sys.maxsize


# The docs hide the value: it is the memory of the machine that built them.
#: The most bytes one array may hold: this machine's physical memory. No way
#: can hold more (a segment and the heap live in RAM-backed files, an owner
#: and a server in their process's memory), and every way refuses a larger
#: size with the same ``ValueError`` before it allocates anything. Without
#: this bound the ways failed each their own way: ``OverflowError``,
#: ``MemoryError``, a segment that raised SIGBUS when written, a heap array
#: that wrote terabytes of zeros to a temporary file.
#:
#: :meta hide-value:
MAX_BYTES = _memory()

Item = int | float


def _int_range(code: str) -> tuple[int, int]:
    bits = 8 * array.array(code).itemsize
    if code.isupper():
        return 0, 2**bits - 1
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


_INT_RANGES = {code: _int_range(code) for code in TYPECODES if code not in "fd"}
# Python's bool, and numpy's (named bool_ before numpy 2): both pass for 1 and 0.
_BOOLS = ("bool", "bool_")


def _kind(code: str) -> tuple[str, int]:
    """What a buffer format means for copying: (signed/unsigned/float, size)."""
    kind = "f" if code in "fd" else "u" if code.isupper() else "i"
    return kind, array.array(code).itemsize


_KINDS = {code: _kind(code) for code in TYPECODES}
_NATIVE = "<" if sys.byteorder == "little" else ">"


def _typecode(typecode: object) -> str:
    if not isinstance(typecode, str) or len(typecode) != 1 or typecode not in TYPECODES:
        raise ValueError(f"typecode must be one of {TYPECODES!r}, not {typecode!r}")
    return typecode


def _describe(code: str) -> str:
    if code in _INT_RANGES:
        low, high = _INT_RANGES[code]
        return f"ints from {low} to {high}"
    return "floats" if code == "d" else "C floats (finite up to 3.4e38)"


_UNCHANGED = "the array is unchanged"
_INF = float("inf")


def _cast(view: memoryview, code: str) -> memoryview:
    """``view``'s bytes seen as items of typecode ``code`` (no copy)."""
    items: Any = view.cast("B")  # Any: typeshed types cast() by literal format
    return items.cast(code)  # type: ignore[no-any-return]


def _check_item(code: str, value: Any) -> None:
    """Raise the clear error for a value that typecode ``code`` cannot hold."""
    if type(value).__name__ in _BOOLS:
        raise TypeError(f"typecode {code!r} holds {_describe(code)}, not bool; {_UNCHANGED}")
    try:
        stored = array.array(code, (value,))[0]
    except TypeError:
        raise TypeError(
            f"typecode {code!r} holds {_describe(code)}, not {type(value).__name__}; " + _UNCHANGED
        ) from None
    except OverflowError:
        stored = None
    # array.array("f") turns a finite double beyond a C float into inf.
    if stored is None or (abs(stored) == _INF and abs(float(value)) != _INF):
        raise OverflowError(
            f"{value!r} does not fit typecode {code!r}, which holds {_describe(code)}; "
            + _UNCHANGED
        )


def _item(code: str, value: Any) -> Item:
    """``value`` as typecode ``code`` stores it, or the error it deserves."""
    cls = value.__class__
    if cls is int and code in _INT_RANGES:
        low, high = _INT_RANGES[code]
        if low <= value <= high:
            return value  # type: ignore[no-any-return]
    elif cls is float and code == "d":
        return value  # type: ignore[no-any-return]
    return _pack(code, (value,), 1, "an item")[0]


def _pack(code: str, values: object, count: int, what: str) -> memoryview:
    """``values`` as ``count`` items of ``code``, in a memoryview of that format.

    A 1-D buffer of the same kind and size of item (numpy array,
    array.array, memoryview) is used as it is: no conversion, and no copy
    if it is contiguous. Anything else is iterated and every item checked:
    ctypes wraps out-of-range values around, this never does.
    """
    try:
        source: memoryview | None = memoryview(values)  # type: ignore[arg-type]
    except TypeError:
        source = None
    if source is not None and source.ndim == 1:
        fmt = source.format.lstrip("@=" + _NATIVE)
        if fmt in _KINDS and _KINDS[fmt] == _KINDS[code]:
            if len(source) != count:
                raise ValueError(f"{what} needs {count} items, got {len(source)}; {_UNCHANGED}")
            if not source.c_contiguous:
                source = memoryview(source.tobytes())
            return _cast(source, code)
    if source is not None:
        source.release()
    if not isinstance(values, Iterable):
        raise TypeError(f"{what} needs an iterable of numbers, not {type(values).__name__}")
    items = values if isinstance(values, (list, tuple)) else list(values)
    if len(items) != count:
        raise ValueError(f"{what} needs {count} items, got {len(items)}; {_UNCHANGED}")
    # array.array takes bools as ints (numpy's with a DeprecationWarning), and
    # C float overflow as inf: look closer. _check_item refuses every bool.
    try:
        packed = (
            None if any(type(v).__name__ in _BOOLS for v in items) else array.array(code, items)
        )
    except (TypeError, OverflowError):  # the item check below names the item
        packed = None
    if packed is None or (code == "f" and _INF in map(abs, packed)):
        for value in items:
            _check_item(code, value)
        if packed is None:  # an item that converts alone but not in the list
            raise TypeError(f"{what}: the items cannot be stored as typecode {code!r}")
    return memoryview(packed)


def _index(key: object, length: int) -> int:
    try:
        i = key.__index__()  # type: ignore[attr-defined]
    except AttributeError:
        raise TypeError(
            f"array indices must be integers or slices, not {type(key).__name__}"
        ) from None
    if i < 0:
        i += length
    if not 0 <= i < length:
        raise IndexError("array index out of range")
    return int(i)


def _slice(key: slice, length: int) -> tuple[slice, int]:
    """``key`` with plain int bounds, and the number of items it selects.

    range() applies Python's slice rules, including ValueError for step 0.
    The bounds may be anything with ``__index__``; the slice that goes to an
    owner process or a server holds ints, which always pickle.
    """
    selected = range(length)[key]
    # A negative step ends at -1, which a slice would read as the last item.
    stop = selected.stop if selected.stop >= 0 else None
    return slice(selected.start, stop, selected.step), len(selected)


def _count(count: object, code: str) -> int:
    """A checked number of items: one rule, one limit (:data:`MAX_BYTES`) for every way."""
    itemsize = _KINDS[code][1]
    what = f"size ({code!r} items of {itemsize} bytes, MAX_BYTES = {MAX_BYTES} in all)"
    return size(count, what, limit=MAX_BYTES // itemsize)


def _spec(typecode: object, size_or_initializer: object) -> tuple[str, int, memoryview | None]:
    """The typecode, length and initial items of a new array."""
    code = _typecode(typecode)
    boolean = type(size_or_initializer).__name__ in _BOOLS  # Python's or numpy's
    if isinstance(size_or_initializer, numbers.Integral) and not boolean:
        return code, _count(size_or_initializer, code), None
    if boolean or not isinstance(size_or_initializer, Iterable):
        raise TypeError(
            "size_or_initializer must be a positive int or an iterable of numbers, "
            f"not {type(size_or_initializer).__name__}"
        )
    try:
        with memoryview(size_or_initializer) as view:  # type: ignore[arg-type]
            count = len(view)
    except TypeError:
        size_or_initializer = list(size_or_initializer)
        count = len(size_or_initializer)
    if count < 1:
        raise ValueError("an array needs at least one item, not an empty initializer")
    count = _count(count, code)
    return code, count, _pack(code, size_or_initializer, count, "the initializer")


def _items(code: str, length: int, initial: memoryview | None) -> array.array[Any]:
    """The items an owner process or a server starts with."""
    if initial is not None:
        return array.array(code, initial.tobytes())
    return array.array(code, [0]) * length


def _numpy() -> Any:
    try:
        import numpy
    except ImportError:
        raise ModuleNotFoundError(
            "as_numpy() needs numpy, which is not installed; read() returns an array.array"
        ) from None
    return numpy


@runtime_checkable
class Array(Protocol):
    """What every array in this module guarantees.

    A fixed number of items of one typecode. ``a[i]`` and ``a[i:j:k]`` read
    and write with the semantics of a Python list, except that the length
    never changes: negative indices count from the end, an index out of
    range raises ``IndexError``, a slice assignment of the wrong length
    raises ``ValueError``. A slice reads as a ``list``; ``read()`` copies the
    whole array into an ``array.array``, ``readinto(buffer)`` into a buffer
    of yours, and ``write(values)`` replaces every item.

    Each call is atomic: a ``read()`` or a slice never shows half of a
    concurrent ``write()``, and it sees every write that returned, in any
    process, before it started. Values are checked before anything is
    written: a ``bool``, ``str`` or ``float`` for an int typecode raises
    ``TypeError``, a value outside the typecode's range ``OverflowError``
    (ctypes would silently wrap it), and on any error nothing is written.
    numpy integer and float scalars are values like Python's ints and
    floats. After ``close()`` every call raises ``ValueError``, ``len()``
    and ``typecode`` included; ``close()`` may be called again.
    """

    @property
    def typecode(self) -> str: ...

    def __len__(self) -> int: ...

    @overload
    def __getitem__(self, key: int) -> Item: ...

    @overload
    def __getitem__(self, key: slice) -> list[Item]: ...

    def __getitem__(self, key: int | slice) -> Item | list[Item]: ...

    def __setitem__(self, key: int | slice, value: Any) -> None: ...

    def __iter__(self) -> Iterator[Item]: ...

    def read(self) -> array.array[Any]: ...

    def readinto(self, buffer: Any) -> None: ...

    def write(self, values: Iterable[Item]) -> None: ...

    def as_numpy(self) -> numpy.ndarray[Any, Any]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Array: ...

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None: ...


class _ArrayBase(Closable):
    """Checks every argument, then hands a valid request to the way's storage.

    A closed handle refuses every call before looking at its arguments.
    Subclasses implement ``_get(key)`` (an int index in range, or a slice
    with int bounds), ``_set(key, payload)`` (payload: a checked value, or a
    memoryview of the slice's items), ``_read()`` (a bytes-like copy of the
    whole array) and ``_write(payload)``.
    """

    _typecode: str
    _length: int

    @property
    def typecode(self) -> str:
        """The :mod:`array` typecode of the items."""
        if self._closed:
            self._refuse()
        return self._typecode

    def __len__(self) -> int:
        if self._closed:
            self._refuse()
        return self._length

    @overload
    def __getitem__(self, key: int) -> Item: ...

    @overload
    def __getitem__(self, key: slice) -> list[Item]: ...

    def __getitem__(self, key: int | slice) -> Item | list[Item]:
        if self._closed:
            self._refuse()
        if isinstance(key, slice):
            return self._get(_slice(key, self._length)[0])  # type: ignore[no-any-return]
        return self._get(_index(key, self._length))  # type: ignore[no-any-return]

    def __setitem__(self, key: int | slice, value: Any) -> None:
        if self._closed:
            self._refuse()
        if isinstance(key, slice):
            key, count = _slice(key, self._length)
            self._set(key, _pack(self._typecode, value, count, "slice assignment"))
        else:
            self._set(_index(key, self._length), _item(self._typecode, value))

    def __iter__(self) -> Iterator[Item]:
        """Iterate over a snapshot taken by one ``read()``."""
        if self._closed:
            self._refuse()
        return iter(self.read())

    def read(self) -> array.array[Any]:
        """A copy of every item, taken atomically."""
        if self._closed:
            self._refuse()
        out = array.array(self._typecode)
        out.frombytes(self._read())
        return out

    def readinto(self, buffer: Any) -> None:
        """Copy every item, atomically, into ``buffer``.

        ``buffer`` is a writable 1-D buffer of ``len(self)`` items of the
        same kind and size (a numpy array of the matching dtype, an
        ``array.array`` of the same typecode). Reusing one buffer avoids the
        page faults of fresh memory that ``read()`` pays on large arrays.
        """
        if self._closed:
            self._refuse()
        try:
            target = memoryview(buffer)
        except TypeError:
            raise TypeError(
                f"readinto() needs a writable, contiguous, 1-D buffer, not {type(buffer).__name__}"
            ) from None
        try:
            fmt = target.format.lstrip("@=" + _NATIVE)
            if target.readonly or target.ndim != 1 or not target.c_contiguous:
                raise TypeError("readinto() needs a writable, contiguous, 1-D buffer")
            if _KINDS.get(fmt) != _KINDS[self._typecode]:
                raise TypeError(
                    f"readinto() needs a buffer of {_describe(self._typecode)} items, "
                    f"not of format {target.format!r}"
                )
            if len(target) != self._length:
                raise ValueError(f"readinto() needs {self._length} items, got {len(target)}")
            self._read_into(target.cast("B"))
        finally:
            target.release()

    def write(self, values: Iterable[Item]) -> None:
        """Replace every item, atomically; ``values`` has ``len(self)`` items."""
        if self._closed:
            self._refuse()
        self._write(_pack(self._typecode, values, self._length, "write()"))

    def as_numpy(self) -> numpy.ndarray[Any, Any]:
        """A numpy view of the shared items (only :class:`CtypesArray` has one)."""
        if self._closed:
            self._refuse()
        raise NotImplementedError(
            f"{type(self).__name__} keeps its items in another process: there is no "
            "shared memory to view; numpy.frombuffer(array.read(), array.typecode) is a copy"
        )

    def _read_into(self, target: memoryview) -> None:
        target[:] = memoryview(self._read()).cast("B")

    # Implemented by each way.
    def _get(self, key: int | slice) -> Any:
        raise NotImplementedError

    def _set(self, key: int | slice, payload: Any) -> None:
        raise NotImplementedError

    def _read(self) -> Any:
        raise NotImplementedError

    def _write(self, payload: memoryview) -> None:
        raise NotImplementedError


# ---------------------------------------------------------------- ctypes


class CtypesArray(_ArrayBase):
    """Items in shared memory, every call under one lock.

    Storage: arrays under :data:`SEGMENT_BYTES` live in a
    ``multiprocessing.RawArray`` (the multiprocessing heap: cheap to create,
    can only be passed to children as ``Process`` arguments); larger ones
    in a ``shared_memory`` segment of their own, named ``shmref_*``,
    created with mode 0600 and unlinked exactly once, by the creator's
    ``close()`` (or when the creator's handle is garbage-collected). Pass
    ``segment=True`` or ``False`` to choose. Children attach without the
    resource_tracker claiming the segment (see :func:`shmref.segment.attach`).
    The creator must not close before its children have attached (a child
    started just before ``close()`` gets ``FileNotFoundError``). A segment's
    memory is reserved when it is made: a full ``/dev/shm`` raises
    ``OSError`` then, not SIGBUS later.

    Guarantees: every call (item, slice, ``read``, ``write``) holds the lock
    and is atomic, and ``timeout`` bounds every wait for it. A process
    killed in the middle of a call (it holds the lock for a copy) or while
    it holds ``get_lock()`` does not keep it: on Linux the next caller takes
    it over after about :data:`shmref.holder.STALE` seconds (see
    :mod:`shmref.holder`). The items the dead process was writing may then
    be part old, part new: there is no undo record, which would double the
    memory and the cost of every write. An exception in a call, a caught
    ``KeyboardInterrupt`` included, leaves the lock free. A thread waiting
    for the lock when another thread closes the handle gets the closed
    error. ``get_lock()`` returns the lock.

    ``as_numpy()`` returns a writable numpy view of the shared items, which
    does *not* take the lock: hold ``get_lock()`` while other processes may
    write. A view is valid while the handle is open: ``close()`` raises
    ``BufferError`` and leaves the array open while any view (or an array
    derived from one) exists, because it would unmap the memory they read.

    >>> from shmref.arrays import CtypesArray
    >>> with CtypesArray("i", [1, 2, 3, 4]) as a:
    ...     a[-1] = 40
    ...     a[0:2] = [10, 20]
    ...     a[:]
    [10, 20, 3, 40]
    """

    def __init__(
        self,
        typecode: str,
        size_or_initializer: int | Iterable[Item],
        *,
        segment: bool | None = None,
        ctx: BaseContext | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        self._typecode, self._length, initial = _spec(typecode, size_or_initializer)
        self._timeout = seconds(timeout)
        if segment is not None and not isinstance(segment, bool):
            raise TypeError(f"segment must be True, False or None, not {segment!r}")
        nbytes = self._length * _KINDS[self._typecode][1]
        ctx = context(ctx)
        # A Lock with a record of its holder, which a waiter takes over if
        # the holder dies inside a call (see shmref.holder).
        self._holder = Holder(ctx)
        self._creator = os.getpid()
        self._raw: Any = None
        self._segment: SharedMemory | None = None
        self._name: str | None = None
        if segment if segment is not None else nbytes >= SEGMENT_BYTES:
            self._segment = create(nbytes)
            self._name = self._segment.name
        else:
            self._raw = ctx.RawArray(self._typecode, self._length)
        self._attach()
        if initial is not None:
            self._view[:] = initial

    def _attach(self) -> None:
        if self._segment is not None:
            buf = self._segment.buf
            assert buf is not None  # an open segment is mapped
            self._bytes = buf[: self._length * _KINDS[self._typecode][1]]
        else:
            self._bytes = memoryview(self._raw).cast("B")
        self._view = _cast(self._bytes, self._typecode)
        self._numpy_bases: list[tuple[int, weakref.ref[Any]]] = []
        self._finalizer = None
        if self._segment is not None:
            self._finalizer = weakref.finalize(
                self, release, self._segment, [self._view, self._bytes], self._creator
            )

    @property
    def name(self) -> str | None:
        """The segment's name (in ``/dev/shm`` on Linux), or None for a RawArray."""
        if self._closed:
            self._refuse()
        return self._name

    def get_lock(self) -> RecordedLock:
        """The lock every call holds; hold it to use a numpy view safely.

        A process killed while it holds it is taken over like one killed
        inside a call; ``with`` waits at most the handle's ``timeout``.
        """
        if self._closed:
            self._refuse()
        return RecordedLock(self._holder, self._timeout, "array lock")

    def __getstate__(self) -> dict[str, Any]:
        if self._closed:
            self._refuse()
        return {
            "typecode": self._typecode,
            "length": self._length,
            "holder": self._holder,
            "timeout": self._timeout,
            "creator": self._creator,
            "segment": self._name,
            "raw": self._raw,  # a heap array: its fd travels with a spawned child
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._typecode = state["typecode"]
        self._length = state["length"]
        self._holder = state["holder"]
        self._timeout = state["timeout"]
        self._creator = state["creator"]
        self._raw = state["raw"]
        self._name = state["segment"]
        self._segment = attach(self._name) if self._name is not None else None
        self._attach()

    # Each call is one critical section, written as one try (taking the lock
    # included; see shmref.holder). A holder killed inside one is taken over;
    # what it was copying may then be part old, part new (no undo record:
    # it would double the memory and the cost of every write).

    # Items and slices: Holder.enter and leave inlined (two calls are a
    # fifth of an item's cost).

    def _get(self, key: int | slice) -> Any:
        holder = self._holder
        lock = holder.lock
        record = holder.record
        try:
            if not lock.acquire(False):
                holder.wait(self._timeout, "array lock", self)
            record[0] = holder.pid
            view: Any = self._view
            items = view[key] if key.__class__ is int else view[key].tolist()
            record[0] = 0
            lock.release()
        except BaseException:
            holder.abandon()
            raise
        return items

    def _set(self, key: int | slice, payload: Any) -> None:
        holder = self._holder
        lock = holder.lock
        record = holder.record
        try:
            if not lock.acquire(False):
                holder.wait(self._timeout, "array lock", self)
            record[0] = holder.pid
            self._view[key] = payload
            record[0] = 0
            lock.release()
        except BaseException:
            holder.abandon()
            raise

    def _read_into(self, target: memoryview) -> None:
        holder = self._holder
        try:
            holder.enter(self._timeout, "array lock", self)
            target[:] = self._bytes
            holder.leave()
        except BaseException:
            holder.abandon()
            raise

    def read(self) -> array.array[Any]:
        if self._closed:
            self._refuse()
        out = array.array(self._typecode)
        holder = self._holder
        try:
            holder.enter(self._timeout, "array lock", self)
            out.frombytes(self._bytes)  # one copy, straight from shared memory
            holder.leave()
        except BaseException:
            holder.abandon()
            raise
        return out

    def _write(self, payload: memoryview) -> None:
        holder = self._holder
        try:
            holder.enter(self._timeout, "array lock", self)
            self._view[:] = payload
            holder.leave()
        except BaseException:
            holder.abandon()
            raise

    def as_numpy(self) -> numpy.ndarray[Any, Any]:
        """A writable numpy view of the shared items; it does not take the lock.

        Delete every view (and every array derived from one) before
        ``close()``, which refuses with ``BufferError`` while one exists.
        """
        if self._closed:
            self._refuse()
        view = _numpy().frombuffer(self._view, dtype=self._typecode)
        # numpy gives the view a memoryview of its own as base (no export
        # of ours to count), and arrays derived from the view keep the view,
        # hence that base, alive: while the base lives, some array can
        # still read the memory.
        self._numpy_bases = [(pid, ref) for pid, ref in self._numpy_bases if ref() is not None]
        self._numpy_bases.append((os.getpid(), weakref.ref(view.base)))
        return view  # type: ignore[no-any-return]

    def _views_alive(self) -> int:
        """This process's live views; a forked child's copies of its parent's do not count."""
        pid = os.getpid()
        alive = sum(ref() is not None for made_by, ref in self._numpy_bases if made_by == pid)
        if alive:
            gc.collect()  # views in unreachable cycles cannot be used any more
            alive = sum(ref() is not None for made_by, ref in self._numpy_bases if made_by == pid)
        return alive

    def close(self) -> None:
        """Detach this handle; in the creator, also free the memory.

        Raises ``BufferError``, and leaves the array open, while numpy views
        made by this process exist: they would read unmapped memory. A
        forked child's copies of its parent's views keep the child's mapping
        alive instead, until they are gone (they are not the child's to
        delete). Inside ``with``, a ``BufferError`` of this close never
        replaces the exception that ended the block (it becomes a note).
        """
        if self._closed:
            return
        alive = self._views_alive()
        if alive:
            raise BufferError(
                f"cannot close {type(self).__name__}: {alive} numpy view(s) of its "
                "memory (or arrays derived from them) still exist; delete them first, "
                "since close() unmaps the memory they read"
            )
        super().close()

    def _release(self) -> None:
        if self._finalizer is not None:
            self._finalizer()  # unmaps, and unlinks in the creator
        else:
            self._view.release()
            self._bytes.release()
        self._raw = self._segment = self._finalizer = None


# ---------------------------------------------------------------- Queue and Manager


class _ArrayState(Served):
    """The items, held by a :class:`QueueArray`'s owner or a :class:`ManagerArray`'s server.

    Requests arrive checked (the caller knows the length and typecode), and
    each gets a reply, so a caller returns only once its write is applied.
    A Manager server runs each client connection in a thread of its own: the
    lock makes every call atomic without relying on the GIL (an owner
    process applies one request at a time, and the lock costs it nothing).
    ``read`` returns a copy taken under the lock, since the server pickles
    its reply after the lock is released.
    """

    def __init__(self, data: array.array[Any]) -> None:
        self._data = data
        self._lock = threading.Lock()

    def get(self, key: int | slice) -> Any:
        with self._lock:
            return self._data[key].tolist() if key.__class__ is slice else self._data[key]

    def set(self, key: int | slice, payload: Any) -> None:
        if key.__class__ is slice:
            payload = array.array(self._data.typecode, payload)
        with self._lock:
            self._data[key] = payload

    def read(self) -> bytes:
        with self._lock:
            return self._data.tobytes()

    def write(self, payload: bytes) -> None:
        fresh = array.array(self._data.typecode, payload)
        with self._lock:
            self._data = fresh


class _Remote(_ArrayBase):
    """A way whose items live in another process, reached by ``self._link.call``.

    ``_link`` is the handle's :class:`~shmref.owner.Owner` (Queue way) or
    :class:`~shmref.server.Server` (Manager way): each call is one request
    to it and one reply, which carries the state's exception if there is
    one, and :class:`~shmref.lifecycle.OwnerGone` if the process is gone.
    """

    _link: Owner | Server

    def __getstate__(self) -> dict[str, Any]:
        if self._closed:
            self._refuse()
        return {"typecode": self._typecode, "length": self._length, "link": self._link}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._typecode = state["typecode"]
        self._length = state["length"]
        self._link = state["link"]

    def _get(self, key: int | slice) -> Any:
        return self._link.answer("get", key)

    def _set(self, key: int | slice, payload: Any) -> None:
        if payload.__class__ is memoryview:
            payload = payload.tobytes()
        self._link.call("set", key, payload)

    def _read(self) -> Any:
        return self._link.answer("read")

    def _write(self, payload: memoryview) -> None:
        self._link.call("write", payload.tobytes())

    def _release(self) -> None:
        self._link.close()


class QueueArray(_Remote):
    """Items held by an owner process, read and written by messages to it.

    Every call sends a request and waits for the owner's reply: a write
    returns once the owner has applied it, so any later read, in any
    process, sees it; the owner applies requests one at a time, so each is
    atomic, and a large ``read()`` makes the others wait. Each process has a
    connection of its own to the owner (:mod:`shmref.owner`), which a
    writer killed mid-message breaks for nobody else. Every item crosses a
    socket pickled, twice for a round trip from a writer to a reader.
    ``timeout`` bounds every wait (then ``TimeoutError``); a dead owner
    makes calls raise :class:`~shmref.lifecycle.OwnerGone` instead of
    waiting that long.

    Part of the contract it cannot keep: ``as_numpy()`` (nothing is shared;
    ``numpy.frombuffer(a.read(), a.typecode)`` makes a copy).

    >>> from shmref.arrays import QueueArray
    >>> with QueueArray("d", 3) as a:
    ...     a[1] = 2.5
    ...     a.read().tolist()
    [0.0, 2.5, 0.0]
    """

    def __init__(
        self,
        typecode: str,
        size_or_initializer: int | Iterable[Item],
        *,
        ctx: BaseContext | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        self._typecode, self._length, initial = _spec(typecode, size_or_initializer)
        self._link = Owner(
            context(ctx),
            _ArrayState,
            (_items(self._typecode, self._length, initial),),
            what="QueueArray",
            timeout=seconds(timeout),
        )


class ArrayManager(BaseManager):
    """A manager whose ``Array(data)`` is an array living in its server."""


register_state(ArrayManager, "Array", _ArrayState)


class ManagerArray(_Remote, ManagerHandle):
    """Items living in a Manager server; every call is one round trip.

    The server applies each call under a lock, so each is atomic and sees
    every call that returned before it, in any process. Pass a started
    :class:`ArrayManager` as ``manager`` to share one server between arrays;
    otherwise each array starts its own. A dead server makes calls raise
    :class:`~shmref.lifecycle.OwnerGone` at once. Every item crosses a
    socket pickled, twice for a round trip from a writer to a reader.
    ``timeout`` bounds the wait for the server's reply (a server stopped or
    hung: ``TimeoutError``); the server holds its lock only for a copy, so
    no call waits on a holder that could die.

    Part of the contract it cannot keep: ``as_numpy()`` (nothing is shared).

    >>> from shmref.arrays import ManagerArray
    >>> with ManagerArray("q", [5, 6, 7]) as a:
    ...     a[::2] = [0, 0]
    ...     list(a)
    [0, 6, 0]
    """

    def __init__(
        self,
        typecode: str,
        size_or_initializer: int | Iterable[Item],
        *,
        manager: ArrayManager | None = None,
        ctx: BaseContext | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        address: tuple[str, int] | None = None,
        authkey: bytes | None = None,
    ) -> None:
        self._typecode, self._length, initial = _spec(typecode, size_or_initializer)
        timeout = seconds(timeout)
        items = _items(self._typecode, self._length, initial)
        self._link = self._serve(
            ArrayManager, "Array", (items,), manager, ctx, address, authkey, timeout
        )
        self._publish()

    @property
    def _server(self) -> Server:
        """The Manager server's link, by the name every Manager way gives it."""
        return cast(Server, self._link)


# ---------------------------------------------------------------- Redis

#: The most bytes a :class:`RedisArray` holds: one Redis string's limit.
REDIS_BYTES = 512 * 2**20

# KEYS[2] is the string of items, little-endian whatever the host (a
# server may be shared by hosts of both byte orders).
_REDIS_READ = Script("return redis.call('GET', KEYS[2])")
_REDIS_WRITE = Script("return redis.call('SET', KEYS[2], ARGV[1])")
# Bytes ARGV[1] to ARGV[2] (inclusive): the span of an item or a slice.
_REDIS_RANGE = Script(
    """
if tonumber(ARGV[2]) < tonumber(ARGV[1]) then return '' end
return redis.call('GETRANGE', KEYS[2], ARGV[1], ARGV[2])
"""
)
# ARGV[4]'s items, ARGV[3] bytes each, stored from byte ARGV[1] on, one every
# ARGV[2] bytes: one SETRANGE for a contiguous slice, one per item otherwise.
_REDIS_STORE = Script(
    """
local offset, stride, size = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local items = ARGV[4]
if stride == size then
  if #items > 0 then redis.call('SETRANGE', KEYS[2], offset, items) end
  return 1
end
for i = 0, #items / size - 1 do
  local item = string.sub(items, i * size + 1, (i + 1) * size)
  redis.call('SETRANGE', KEYS[2], offset + i * stride, item)
end
return 1
"""
)


def _little(data: Any, code: str) -> bytes:
    """Items (a bytes-like object, native order) as the server holds them."""
    if sys.byteorder == "little":
        return bytes(data)
    items = array.array(code, bytes(data))
    items.byteswap()
    return items.tobytes()


_native = _little  # swapping the bytes is its own inverse


class RedisArray(_ArrayBase, RedisHandle):
    """Items in one Redis string; every call is one Lua script, one round trip.

    A script runs alone on the server, so each call is atomic: ``read()``
    (one ``GET``) and a slice (one ``GETRANGE``) never show part of a
    concurrent ``write()`` or slice assignment, and they see every write
    that returned, in any process on any host. An item is ``GETRANGE`` or
    ``SETRANGE`` of its bytes; a slice with a step is stored item by item
    inside one script. Items are checked and packed in the caller, as in
    the other ways, and held little-endian, so hosts of either byte order
    read the same values.

    Attaching, ``close()``, what it needs and the errors of a server gone
    or slow are :class:`~shmref.keyspace.RedisHandle`'s.
    An array holds at most :data:`REDIS_BYTES` (a Redis string's limit): a
    larger size raises ``ValueError``, as a size past :data:`MAX_BYTES` does.

    Part of the contract it cannot keep: ``as_numpy()`` (nothing is shared;
    ``numpy.frombuffer(a.read(), a.typecode)`` makes a copy); and a creator
    killed without ``close()`` leaves its keys on the server.
    """

    def __init__(
        self,
        typecode: str,
        size_or_initializer: int | Iterable[Item],
        *,
        url: str = DEFAULT_URL,
        name: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        code, length, initial = _spec(typecode, size_or_initializer)
        nbytes = length * _KINDS[code][1]
        if nbytes > REDIS_BYTES:
            raise ValueError(
                f"a RedisArray holds at most {REDIS_BYTES} bytes (a Redis string), "
                f"not {length} items of {_KINDS[code][1]} bytes"
            )
        items = bytes(nbytes) if initial is None else _little(initial, code)
        self._create(
            url,
            name,
            timeout,
            description={"typecode": code, "length": length},
            initial={"items": items},
        )

    def _adopt(self, description: dict[str, Any]) -> None:
        super()._adopt(description)
        self._typecode = description["typecode"]
        self._length = description["length"]
        self._itemsize = _KINDS[self._typecode][1]

    def _get(self, key: int | slice) -> Any:
        size = self._itemsize
        if isinstance(key, int):
            first = key * size
            data = self._keyspace.run(_REDIS_RANGE, ("items",), (first, first + size - 1))
            return array.array(self._typecode, _native(data, self._typecode))[0]
        selected = range(self._length)[key]
        low, high = (min(selected), max(selected)) if selected else (0, -1)
        data = self._keyspace.run(_REDIS_RANGE, ("items",), (low * size, (high + 1) * size - 1))
        span = array.array(self._typecode, _native(data, self._typecode))
        # The span runs from the lowest selected item to the highest: the
        # step picks the selection out of it, in its order either way.
        return span[:: selected.step].tolist()

    def _set(self, key: int | slice, payload: Any) -> None:
        code, size = self._typecode, self._itemsize
        if isinstance(key, int):
            items = _little(array.array(code, (payload,)), code)
            self._keyspace.run(_REDIS_STORE, ("items",), (key * size, size, size, items))
            return
        selected = range(self._length)[key]
        step = selected.step
        first = min(selected) if selected else 0
        if step < 0:  # the same stores, from the lowest item up
            values = array.array(code)
            values.frombytes(memoryview(payload).cast("B"))
            values.reverse()
            payload, step = values, -step
        stored = _little(payload, code)
        self._keyspace.run(_REDIS_STORE, ("items",), (first * size, step * size, size, stored))

    def _read(self) -> Any:
        return _native(self._keyspace.run(_REDIS_READ, ("items",)), self._typecode)

    def _write(self, payload: memoryview) -> None:
        self._keyspace.run(_REDIS_WRITE, ("items",), (_little(payload, self._typecode),))


def fill(shared: Array, value: Item, start: int = 0, stop: int | None = None) -> None:
    """Process target: set ``shared[start:stop]`` to ``value``, then close the handle."""
    count = len(range(len(shared))[start:stop])
    shared[start:stop] = [value] * count
    shared.close()
