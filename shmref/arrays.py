"""A fixed-length typed array shared between processes, three ways.

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
  round trip per call).

Objects pass to child processes as ``Process`` arguments under every start
method. The process that creates an array owns it: its ``close()`` releases
the segment, owner process or server; ``close()`` in another process only
detaches that process's handle. This module is named ``arrays`` so that,
copied alone into a project, it does not shadow the standard ``array``
module; it imports only the standard library (numpy is optional).
"""

from __future__ import annotations

import array
import gc
import multiprocessing
import os
import queue
import secrets
import sys
import threading
import weakref
from collections.abc import Iterable, Iterator
from multiprocessing import resource_tracker, shared_memory
from multiprocessing.context import BaseContext
from multiprocessing.managers import BaseManager
from typing import TYPE_CHECKING, Any, Protocol, overload, runtime_checkable

if TYPE_CHECKING:
    import numpy

__all__ = [
    "SEGMENT_BYTES",
    "TYPECODES",
    "Array",
    "ArrayManager",
    "CtypesArray",
    "ManagerArray",
    "QueueArray",
    "fill",
]

#: Typecodes of the :mod:`array` module that every way supports: signed and
#: unsigned integers of 1 to 8 bytes, C float and C double.
TYPECODES = "bBhHiIlLqQfd"

#: Arrays of at least this many bytes get a shared_memory segment of their
#: own; smaller ones share the multiprocessing heap (see CtypesArray).
SEGMENT_BYTES = 1 << 20

#: Seconds a call waits for a lock or a reply before raising TimeoutError.
DEFAULT_TIMEOUT = 30.0

#: Prefix of the segments' names, so that ``ls /dev/shm`` shows whose they are.
SEGMENT_PREFIX = "shmref_"

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
    try:
        packed = array.array(code, items)
    except (TypeError, OverflowError):
        packed = None
    # array.array takes bools as ints, and C float overflow as inf: look closer.
    if (
        packed is None
        or any(type(value).__name__ in _BOOLS for value in items)
        or (code == "f" and _INF in map(abs, packed))
    ):
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


def _slice_length(key: slice, length: int) -> int:
    # range() applies Python's slice rules, including ValueError for step 0.
    return len(range(length)[key])


def _spec(typecode: object, size_or_initializer: object) -> tuple[str, int, memoryview | None]:
    """The typecode, length and initial items of a new array."""
    code = _typecode(typecode)
    if isinstance(size_or_initializer, int) and not isinstance(size_or_initializer, bool):
        if size_or_initializer < 1:
            raise ValueError(f"an array needs at least one item, not {size_or_initializer}")
        return code, size_or_initializer, None
    if isinstance(size_or_initializer, bool) or not isinstance(size_or_initializer, Iterable):
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
    return code, count, _pack(code, size_or_initializer, count, "the initializer")


def _numpy() -> Any:
    try:
        import numpy
    except ImportError:
        raise ModuleNotFoundError(
            "as_numpy() needs numpy, which is not installed; read() returns an array.array"
        ) from None
    return numpy


def _context(ctx: BaseContext | None) -> Any:
    # Any: typeshed's BaseContext lacks Process, RawArray and friends.
    return ctx if ctx is not None else multiprocessing.get_context()


def _acquire(lock: Any, timeout: float | None, what: str) -> None:
    if not lock.acquire(timeout=timeout):
        raise TimeoutError(f"{what} not acquired within {timeout} s (a holder may have died)")


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
    After ``close()`` every call raises ``ValueError``; ``close()`` may be
    called again.
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


class _ArrayBase(_Closable):
    """Checks every argument, then hands a valid request to the way's storage.

    Subclasses implement ``_get(key)`` (an int index in range, or a slice),
    ``_set(key, payload)`` (payload: a checked value, or a memoryview of the
    slice's items), ``_read()`` (a bytes-like copy of the whole array) and
    ``_write(payload)``.
    """

    _typecode: str
    _length: int

    @property
    def typecode(self) -> str:
        """The :mod:`array` typecode of the items."""
        return self._typecode

    def __len__(self) -> int:
        return self._length

    @overload
    def __getitem__(self, key: int) -> Item: ...

    @overload
    def __getitem__(self, key: slice) -> list[Item]: ...

    def __getitem__(self, key: int | slice) -> Item | list[Item]:
        self._check_open()
        if isinstance(key, slice):
            _slice_length(key, self._length)
            return self._get(key)  # type: ignore[no-any-return]
        return self._get(_index(key, self._length))  # type: ignore[no-any-return]

    def __setitem__(self, key: int | slice, value: Any) -> None:
        self._check_open()
        if isinstance(key, slice):
            count = _slice_length(key, self._length)
            self._set(key, _pack(self._typecode, value, count, "slice assignment"))
        else:
            self._set(_index(key, self._length), _item(self._typecode, value))

    def __iter__(self) -> Iterator[Item]:
        """Iterate over a snapshot taken by one ``read()``."""
        return iter(self.read())

    def read(self) -> array.array[Any]:
        """A copy of every item, taken atomically."""
        self._check_open()
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
        self._check_open()
        target = memoryview(buffer)
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
        self._check_open()
        self._write(_pack(self._typecode, values, self._length, "write()"))

    def as_numpy(self) -> numpy.ndarray[Any, Any]:
        """A numpy view of the shared items (only :class:`CtypesArray` has one)."""
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


def _tracker_id() -> int | None:
    """Which resource_tracker this process talks to: the inode of its pipe."""
    fd = getattr(resource_tracker._resource_tracker, "_fd", None)
    if fd is None:
        return None
    try:
        return os.fstat(fd).st_ino
    except OSError:
        return None


def _create_segment(nbytes: int) -> shared_memory.SharedMemory:
    # SharedMemory creates with mode 0600 and O_EXCL; a name of our own
    # makes shmref's segments recognisable in /dev/shm.
    while True:
        name = SEGMENT_PREFIX + secrets.token_hex(8)
        try:
            return shared_memory.SharedMemory(name, create=True, size=nbytes)
        except FileExistsError:
            continue


def _attach_segment(name: str, creator_tracker: int | None) -> shared_memory.SharedMemory:
    """Map an existing segment without making this process's tracker own it.

    The creator's resource_tracker unlinks a segment whose creator died
    without ``close()``; an attaching process must not register it too.
    Python 3.13 has ``track=False`` for that. Before 3.13 attaching always
    registers, and the usual fix, unregistering right after, is wrong when
    the tracker is shared: fork, spawn and forkserver children all talk to
    their parent's tracker, which keeps one *set* of names, so the child's
    unregister would erase the creator's registration (its own unlink then
    makes the tracker print a KeyError, and a crash would leak the segment).
    So the registration is undone only if this process has a tracker of its
    own, which would otherwise unlink the segment when this process exits.
    """
    if sys.version_info >= (3, 13):
        return shared_memory.SharedMemory(name, track=False)
    segment = shared_memory.SharedMemory(name)
    if _tracker_id() != creator_tracker:
        resource_tracker.unregister(getattr(segment, "_name", name), "shared_memory")
    return segment


def _release_segment(
    segment: shared_memory.SharedMemory, views: list[memoryview], creator: int
) -> None:
    """Unmap a segment, and unlink it if this process created it (runs once)."""
    for view in views:
        view.release()
    try:
        segment.close()
    except BufferError:
        # numpy views outlive a handle that was dropped without close(): they
        # keep the mapping alive, and it is unmapped when the last one goes.
        segment._mmap = None  # type: ignore[attr-defined]
        segment.close()
    if os.getpid() == creator:
        segment.unlink()


class CtypesArray(_ArrayBase):
    """Items in shared memory, every call under one lock.

    Storage: arrays under :data:`SEGMENT_BYTES` live in a
    ``multiprocessing.RawArray`` (the multiprocessing heap: cheap to create,
    can only be passed to children as ``Process`` arguments); larger ones
    in a ``shared_memory`` segment of their own, named ``shmref_*``,
    created with mode 0600 and unlinked exactly once, by the creator's
    ``close()`` (or when the creator's handle is garbage-collected). Pass
    ``segment=True`` or ``False`` to choose. Children attach without the
    resource_tracker claiming the segment (see :func:`_attach_segment`).
    The creator must not close before its children have attached (a child
    started just before ``close()`` gets ``FileNotFoundError``).

    Guarantees: every call (item, slice, ``read``, ``write``) holds the lock
    and is atomic; a process dying in the middle of a call (it holds the
    lock for a copy) makes other callers raise ``TimeoutError`` after
    ``timeout`` seconds. ``get_lock()`` returns the lock.

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
        nbytes = self._length * array.array(self._typecode).itemsize
        context = _context(ctx)
        self._lock = context.Lock()
        self._timeout = timeout
        self._creator = os.getpid()
        self._raw: Any = None
        self._segment: shared_memory.SharedMemory | None = None
        self._tracker: int | None = None
        if segment if segment is not None else nbytes >= SEGMENT_BYTES:
            self._segment = _create_segment(nbytes)
            self._tracker = _tracker_id()
            self._name: str | None = self._segment.name
        else:
            self._raw = context.RawArray(self._typecode, self._length)
            self._name = None
        self._attach()
        if initial is not None:
            self._view[:] = initial

    def _attach(self) -> None:
        if self._segment is not None:
            buf = self._segment.buf
            assert buf is not None  # an open segment is mapped
            self._bytes = buf[: self._length * array.array(self._typecode).itemsize]
        else:
            self._bytes = memoryview(self._raw).cast("B")
        self._view = _cast(self._bytes, self._typecode)
        self._numpy_bases: list[tuple[int, weakref.ref[Any]]] = []
        self._finalizer = None
        if self._segment is not None:
            self._finalizer = weakref.finalize(
                self, _release_segment, self._segment, [self._view, self._bytes], self._creator
            )

    @property
    def name(self) -> str | None:
        """The segment's name (in ``/dev/shm`` on Linux), or None for a RawArray."""
        return self._name

    def get_lock(self) -> Any:
        """The lock every call holds; hold it to use a numpy view safely."""
        return self._lock

    def __getstate__(self) -> dict[str, Any]:
        self._check_open()
        state = {
            "typecode": self._typecode,
            "length": self._length,
            "lock": self._lock,
            "timeout": self._timeout,
            "creator": self._creator,
        }
        if self._segment is not None:
            state.update(segment=self._segment.name, tracker=self._tracker)
        else:
            state.update(raw=self._raw)  # the heap's fd travels with a spawned child
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._typecode = state["typecode"]
        self._length = state["length"]
        self._lock = state["lock"]
        self._timeout = state["timeout"]
        self._creator = state["creator"]
        self._tracker = state.get("tracker")
        self._raw = state.get("raw")
        self._segment = None
        self._name = state.get("segment")
        if self._name is not None:
            self._segment = _attach_segment(self._name, self._tracker)
        self._attach()

    def _get(self, key: int | slice) -> Any:
        _acquire(self._lock, self._timeout, "array lock")
        try:
            view: Any = self._view
            return view[key] if key.__class__ is int else view[key].tolist()
        finally:
            self._lock.release()

    def _set(self, key: int | slice, payload: Any) -> None:
        _acquire(self._lock, self._timeout, "array lock")
        try:
            self._view[key] = payload
        finally:
            self._lock.release()

    def _read_into(self, target: memoryview) -> None:
        _acquire(self._lock, self._timeout, "array lock")
        try:
            target[:] = self._bytes
        finally:
            self._lock.release()

    def read(self) -> array.array[Any]:
        self._check_open()
        out = array.array(self._typecode)
        _acquire(self._lock, self._timeout, "array lock")
        try:
            out.frombytes(self._bytes)  # one copy, straight from shared memory
        finally:
            self._lock.release()
        return out

    def _write(self, payload: memoryview) -> None:
        _acquire(self._lock, self._timeout, "array lock")
        try:
            self._view[:] = payload
        finally:
            self._lock.release()

    def as_numpy(self) -> numpy.ndarray[Any, Any]:
        """A writable numpy view of the shared items; it does not take the lock.

        Delete every view (and every array derived from one) before
        ``close()``, which refuses with ``BufferError`` while one exists.
        """
        self._check_open()
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
        delete).
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
        self._closed = True
        if self._finalizer is not None:
            self._finalizer()  # unmaps, and unlinks in the creator
        else:
            self._view.release()
            self._bytes.release()
        self._raw = self._segment = self._finalizer = None


# ---------------------------------------------------------------- Queue

_GET, _SET, _READ, _WRITE, _STOP = "get", "set", "read", "write", "stop"


def _queue_owner(requests: Any, replies: Any, data: array.array[Any]) -> None:
    """Owner process of a :class:`QueueArray`: applies requests in order.

    Requests arrive checked (the sender knows the length and typecode);
    every request gets a reply, so a caller returns only once its write is
    applied.
    """
    code = data.typecode
    # Not os.getppid(): under forkserver the parent is the fork server.
    creator = multiprocessing.parent_process()
    while True:
        try:
            message = requests.get(timeout=1.0)
        except queue.Empty:
            if creator is not None and not creator.is_alive():  # died without close()
                return
            continue
        kind, token = message[0], message[1]
        reply: Any = None
        try:
            if kind == _GET:
                key = message[2]
                reply = data[key].tolist() if isinstance(key, slice) else data[key]
            elif kind == _SET:
                key, payload = message[2], message[3]
                if isinstance(key, slice):
                    payload = array.array(code, payload)
                data[key] = payload
            elif kind == _READ:
                # A copy: the queue's feeder thread pickles the reply after
                # this loop has moved on to the next request.
                reply = data.tobytes()
            elif kind == _WRITE:
                data = array.array(code, message[2])
            elif kind == _STOP:
                replies.put((token, None, None))
                return
        except Exception as exc:  # a bug, reported to the caller
            replies.put((token, None, exc))
        else:
            replies.put((token, reply, None))


class QueueArray(_ArrayBase):
    """Items held by an owner process, read and written by messages on a Queue.

    Every call sends a request and waits for the owner's reply: a write
    returns once the owner has applied it, so any later read, in any
    process, sees it; the owner applies requests one at a time, so each is
    atomic. Callers take turns (one request in flight at a time), so a
    large ``read()`` makes the others wait. Every item crosses a pipe
    pickled, twice for a round trip from a writer to a reader. A dead owner
    makes calls raise ``TimeoutError`` after ``timeout`` seconds.

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
        data = array.array(
            self._typecode, bytes(array.array(self._typecode).itemsize * self._length)
        )
        if initial is not None:
            data = array.array(self._typecode, initial.tobytes())
        context = _context(ctx)
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
            args=(self._requests, self._replies, data),
            name="shmref-array-owner",
            daemon=True,
        )
        self._owner.start()

    def __getstate__(self) -> dict[str, Any]:
        self._check_open()
        state = self.__dict__.copy()
        state.update(_owner=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

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
                        f"no reply from the array's owner within {self._timeout} s"
                    ) from None
                # A reply for a caller that timed out earlier: nobody waits for it.
                if answer == token:
                    break
        finally:
            self._reply_lock.release()
        if error is not None:
            raise error
        return value

    def _get(self, key: int | slice) -> Any:
        return self._request(_GET, key)

    def _set(self, key: int | slice, payload: Any) -> None:
        if isinstance(payload, memoryview):
            payload = payload.tobytes()
        self._request(_SET, key, payload)

    def _read(self) -> Any:
        return self._request(_READ)

    def _write(self, payload: memoryview) -> None:
        self._request(_WRITE, payload.cast("B").tobytes())

    def close(self) -> None:
        if self._closed:
            return
        try:
            creator = os.getpid() == self._creator
            if creator and self._owner is not None and self._owner.is_alive():
                self._request(_STOP)
        finally:
            self._closed = True
            if self._owner is not None and os.getpid() == self._creator:
                self._owner.join(self._timeout)
                owner_died = self._owner.exitcode != 0
                if self._owner.is_alive():
                    self._owner.kill()
                    self._owner.join()
                self._owner.close()
                self._owner = None
                for q in (self._requests, self._replies):
                    if owner_died:  # nobody reads: do not wait to flush into a full pipe
                        q.cancel_join_thread()
                    q.close()
                    q.join_thread()


# ---------------------------------------------------------------- Manager


class _ArrayState:
    """The items, living in a manager's server process.

    The server runs each client connection in a thread of its own: the lock
    makes every call atomic without relying on the GIL.
    """

    def __init__(self, data: array.array[Any]) -> None:
        self._data = data
        self._lock = threading.Lock()

    def get(self, key: int | slice) -> Any:
        with self._lock:
            return self._data[key].tolist() if isinstance(key, slice) else self._data[key]

    def set(self, key: int | slice, payload: Any) -> None:
        if isinstance(key, slice):
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


class ArrayManager(BaseManager):
    """A manager whose ``Array(data)`` is an array living in its server."""


ArrayManager.register("Array", _ArrayState, exposed=("get", "set", "read", "write"))


class ManagerArray(_ArrayBase):
    """Items living in a Manager server; every call is one round trip.

    The server applies each call under a lock, so each is atomic and sees
    every call that returned before it, in any process. Pass a started
    :class:`ArrayManager` as ``manager`` to share one server between arrays;
    otherwise each array starts its own. A dead server makes calls fail at
    once (``EOFError`` or ``ConnectionError``). Every item crosses a socket
    pickled, twice for a round trip from a writer to a reader.

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
    ) -> None:
        self._typecode, self._length, initial = _spec(typecode, size_or_initializer)
        data = array.array(
            self._typecode, bytes(array.array(self._typecode).itemsize * self._length)
        )
        if initial is not None:
            data = array.array(self._typecode, initial.tobytes())
        self._manager: ArrayManager | None = None
        self._creator = os.getpid()
        if manager is None:
            manager = self._manager = ArrayManager(ctx=_context(ctx))
            manager.start()
        self._proxy: Any = manager.Array(data)  # type: ignore[attr-defined]

    def __getstate__(self) -> dict[str, Any]:
        self._check_open()
        return {"typecode": self._typecode, "length": self._length, "proxy": self._proxy}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._typecode = state["typecode"]
        self._length = state["length"]
        self._proxy = state["proxy"]
        self._manager = None

    def _get(self, key: int | slice) -> Any:
        return self._proxy.get(key)

    def _set(self, key: int | slice, payload: Any) -> None:
        if isinstance(payload, memoryview):
            payload = payload.tobytes()
        self._proxy.set(key, payload)

    def _read(self) -> Any:
        return self._proxy.read()

    def _write(self, payload: memoryview) -> None:
        self._proxy.write(payload.cast("B").tobytes())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._proxy = None  # the server drops its object before it stops
        # A forked child holds a copy of the creator's manager: not its to stop.
        if self._manager is not None and os.getpid() == self._creator:
            self._manager.shutdown()
            self._manager = None


def fill(shared: Array, value: Item, start: int = 0, stop: int | None = None) -> None:
    """Process target: set ``shared[start:stop]`` to ``value``, then close the handle."""
    count = len(range(len(shared))[start:stop])
    shared[start:stop] = [value] * count
    shared.close()
