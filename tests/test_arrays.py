"""The contract of shmref.arrays, once, for every way and start method.

Each test is one clause of the :class:`~shmref.arrays.Array` contract. It
runs for every way in :data:`FACTORIES` (or the ways :func:`ways` names)
under every start method; a way that cannot keep a clause is marked at its
parameter with the reason. Arrays are small here: large ones are the
benchmarks' business. Targets of child processes are module-level so that
spawn and forkserver children can import them. The lifecycle clauses (a
closed array refuses every call, ``with``, a child's ``close()``, a dead
owner or server, a blocked call woken by ``close()``) are tests/test_lifecycle.py's,
which takes the ways and calls from tests/ways_arrays.py.
"""

from __future__ import annotations

import array
import multiprocessing
import os
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from multiprocessing import shared_memory
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any

import pytest

from shmref.arrays import (
    MAX_BYTES,
    REDIS_BYTES,
    SEGMENT_BYTES,
    TYPECODES,
    Array,
    ArrayManager,
    CtypesArray,
    ManagerArray,
    QueueArray,
    RedisArray,
    fill,
)
from shmref.segment import SEGMENT_PREFIX
from tests import redis_server
from tests.conftest import JOIN, contract, run_children

ROOT = Path(__file__).resolve().parent.parent

#: Items of the arrays under test: a few slots, and enough to slice every way.
N = 8

#: way id -> callable(ctx, typecode, size_or_initializer, **kwargs) -> a new array.
FACTORIES: dict[str, Callable[..., Array]] = {
    "ctypes": lambda ctx, *a, **kw: CtypesArray(*a, segment=False, ctx=ctx, **kw),
    "segment": lambda ctx, *a, **kw: CtypesArray(*a, segment=True, ctx=ctx, **kw),
    "queue": lambda ctx, *a, **kw: QueueArray(*a, ctx=ctx, **kw),
    "manager": lambda ctx, *a, **kw: ManagerArray(*a, ctx=ctx, **kw),
    "redis": lambda ctx, *a, **kw: RedisArray(*a, url=redis_server.url(), **kw),
}
SHARED_WAYS = ("ctypes", "segment")  # the ways whose items are in shared memory
OWNED_WAYS = ("queue", "manager")  # the ways with an owner process or server
NO_VIEW = "nothing is shared: the items live in another process"
NO_VIEW_REDIS = "nothing is shared: the items live in a Redis server"


def ways(
    *names: str, cannot: dict[str, str] | None = None, skip: dict[str, str] | None = None
) -> pytest.MarkDecorator:
    """Run a contract clause for the ways ``names`` (default: all) x every start method."""
    return contract(names or FACTORIES, cannot=cannot, skip=skip)


@pytest.fixture
def make(way_name: str, ctx: BaseContext) -> Iterator[Callable[..., Any]]:
    """Build arrays of the way under test; all are closed afterwards."""
    made: list[Array] = []

    def make(typecode: str = "q", size_or_initializer: Any = N, **kwargs: Any) -> Any:
        shared = FACTORIES[way_name](ctx, typecode, size_or_initializer, **kwargs)
        made.append(shared)
        return shared

    yield make
    for shared in made:
        shared.close()
    made.clear()


@pytest.fixture
def way(make: Callable[..., Any]) -> Any:
    """An array of the way under test: N int64 items, 0 to N-1."""
    return make("q", list(range(N)))


def numpy_or_skip() -> Any:
    return pytest.importorskip("numpy", reason="numpy is optional")


# Child process targets.


def report_and_write(shared: Array, conn: Any) -> None:
    """Send what this process reads, then write with slices and an item."""
    conn.send((shared.read().tolist(), shared[2:5], shared[-1]))
    conn.close()
    shared[::2] = [-1] * len(range(len(shared))[::2])
    shared[-1] = 99
    shared.close()


def alternate(shared: Array, stop: Any, barrier: Any) -> None:
    """Write the whole array with k everywhere, k = 0, 1, 2, ..., until stopped."""
    barrier.wait(JOIN)
    k = 0
    while not stop.is_set():
        shared.write([k] * len(shared))
        k += 1
    shared.close()


# Reading and writing across processes.


@ways()
def test_child_reads_parent_writes_and_parent_reads_child_writes(
    way: Array, ctx: BaseContext
) -> None:
    way[0] = 100
    reader, writer = ctx.Pipe(duplex=False)
    with reader:
        process = ctx.Process(target=report_and_write, args=(way, writer))
        process.start()
        writer.close()
        assert reader.poll(JOIN), "the child sent nothing"
        seen = reader.recv()
        process.join(JOIN)
    assert process.exitcode == 0
    process.close()
    assert isinstance(way, Array)
    assert seen == ([100, 1, 2, 3, 4, 5, 6, 7], [2, 3, 4], 7)
    assert way[:] == [-1, 1, -1, 3, -1, 5, -1, 99]


@ways()
def test_read_never_sees_half_a_write(make: Callable[..., Any], ctx: BaseContext) -> None:
    # 2,048 int64 items (16 KiB): a copy takes long enough to be caught
    # half-done by an unlocked reader, and short enough to repeat often.
    shared = make("q", 2048)
    stop, barrier = ctx.Event(), ctx.Barrier(2)
    process = ctx.Process(target=alternate, args=(shared, stop, barrier))
    process.start()
    torn = []
    try:
        barrier.wait(JOIN)
        for _ in range(200):
            seen = set(shared.read())
            if len(seen) != 1:
                torn.append(sorted(seen))
            seen = set(shared[100:1900])
            if len(seen) != 1:
                torn.append(sorted(seen))
    finally:
        stop.set()
        process.join(JOIN)
    assert process.exitcode == 0
    process.close()
    assert torn == []
    assert len(set(shared.read())) == 1


# Items and slices: Python's semantics, a fixed length.


@ways()
def test_items_follow_python_indexing(way: Array) -> None:
    model = list(range(N))
    for i in range(-N, N):
        assert way[i] == model[i]
    way[-1] = -8
    way[-N] = -1
    model[-1], model[-N] = -8, -1
    assert way[:] == model
    assert len(way) == N
    assert list(way) == model


SLICES = [
    slice(None),
    slice(2, 5),
    slice(-3, None),
    slice(None, None, 2),
    slice(None, None, -1),
    slice(6, 1, -2),
    slice(-100, 100),
    slice(5, 2),
    slice(1, None, 3),
]


@ways()
def test_slices_follow_python_slicing(way: Array) -> None:
    model = list(range(N))
    for key in SLICES:
        assert way[key] == model[key], key
        values = [100 + i for i in range(len(model[key]))]
        way[key] = values
        model[key] = values
        assert way[:] == model, key


# Bad input: the same error in every way, and nothing written.

#: Calls on an array of N int64 items, 0 to N-1, that every way refuses:
#: (call, the exception's exact type, words its message must hold).
BAD_INPUTS: dict[str, tuple[Callable[[Any], object], type[Exception], str]] = {
    "a[3] = True": (lambda a: a.__setitem__(3, True), TypeError, "not bool"),
    "a[3] = 1.5": (lambda a: a.__setitem__(3, 1.5), TypeError, "not float"),
    "a[3] = '1'": (lambda a: a.__setitem__(3, "1"), TypeError, "not str"),
    "a[3] = None": (lambda a: a.__setitem__(3, None), TypeError, "not NoneType"),
    "a[3] = b'1'": (lambda a: a.__setitem__(3, b"1"), TypeError, "not bytes"),
    "a[3] = 2**63": (lambda a: a.__setitem__(3, 2**63), OverflowError, "does not fit"),
    "a[3] = -2**63-1": (lambda a: a.__setitem__(3, -(2**63) - 1), OverflowError, "does not fit"),
    "a[N]": (lambda a: a[N], IndexError, "out of range"),
    "a[-N-1] = 1": (lambda a: a.__setitem__(-N - 1, 1), IndexError, "out of range"),
    "a[2**70]": (lambda a: a[2**70], IndexError, "out of range"),
    "a['1']": (lambda a: a["1"], TypeError, "not str"),
    "a[1.0] = 1": (lambda a: a.__setitem__(1.0, 1), TypeError, "not float"),
    "a[None]": (lambda a: a[None], TypeError, "not NoneType"),
    "a[::0]": (lambda a: a[::0], ValueError, "zero"),
    "a[::0] = []": (lambda a: a.__setitem__(slice(None, None, 0), []), ValueError, "zero"),
    "a[2:5] = 2 items": (lambda a: a.__setitem__(slice(2, 5), [0, 1]), ValueError, "needs 3"),
    "a[2:5] = 4 items": (lambda a: a.__setitem__(slice(2, 5), [0] * 4), ValueError, "needs 3"),
    "a[::2] = 3 items": (lambda a: a.__setitem__(slice(None, None, 2), [1] * 3), ValueError, "4"),
    "a[5:2] = [1]": (lambda a: a.__setitem__(slice(5, 2), [1]), ValueError, "needs 0"),
    "a[0:1] = 5": (lambda a: a.__setitem__(slice(0, 1), 5), TypeError, "iterable"),
    # The bad item comes after good ones: nothing before it may be written.
    "a[0:3] = [7, 7, 2**63]": (
        lambda a: a.__setitem__(slice(0, 3), [7, 7, 2**63]),
        OverflowError,
        "does not fit",
    ),
    "a[::2] = [7, 7, False, 7]": (
        lambda a: a.__setitem__(slice(None, None, 2), [7, 7, False, 7]),
        TypeError,
        "not bool",
    ),
    "write(N-1 items)": (lambda a: a.write([7] * (N - 1)), ValueError, f"needs {N} items"),
    "write(N+1 items)": (lambda a: a.write(range(N + 1)), ValueError, f"needs {N} items"),
    "write(... 7.0)": (lambda a: a.write([7] * (N - 1) + [7.0]), TypeError, "not float"),
    "write(... 2**64)": (lambda a: a.write([7] * (N - 1) + [2**64]), OverflowError, "fit"),
    "write(5)": (lambda a: a.write(5), TypeError, "iterable"),
    "write('12345678')": (lambda a: a.write("12345678"), TypeError, "not str"),
    "readinto(N-1 items)": (
        lambda a: a.readinto(array.array("q", bytes(8 * (N - 1)))),
        ValueError,
        f"needs {N} items",
    ),
    "readinto(doubles)": (lambda a: a.readinto(array.array("d", bytes(8 * N))), TypeError, "'d'"),
    "readinto(bytes)": (lambda a: a.readinto(bytes(8 * N)), TypeError, "writable"),
    "readinto(5)": (lambda a: a.readinto(5), TypeError, "buffer"),
}

#: Constructor arguments every way refuses: (typecode, size_or_initializer,
#: the exception's exact type, words its message must hold).
BAD_ARGUMENTS: list[tuple[object, object, type[Exception], str]] = [
    ("x", 2, ValueError, "typecode"),
    ("u", 2, ValueError, "typecode"),
    ("dd", 2, ValueError, "typecode"),
    (None, 2, ValueError, "typecode"),
    ("q", 0, ValueError, "from 1"),
    ("q", -1, ValueError, "from 1"),
    ("q", True, TypeError, "not bool"),
    ("q", 2.0, TypeError, "not float"),
    ("q", None, TypeError, "not NoneType"),
    ("q", [], ValueError, "at least one item"),
    ("b", [1, 128], OverflowError, "does not fit"),
    ("q", [1, "2"], TypeError, "not str"),
    ("q", "12", TypeError, "not str"),
]


@ways()
def test_bad_input_raises_the_same_error_in_every_way(way: Array) -> None:
    for name, (call, error, words) in BAD_INPUTS.items():
        with pytest.raises(error) as caught:
            call(way)
        assert type(caught.value) is error, (name, caught.value)
        assert words in str(caught.value), (name, caught.value)
        assert way[:] == list(range(N)), name


@ways()
def test_bad_arguments_raise_the_same_error_in_every_way(make: Callable[..., Any]) -> None:
    before = {process.pid for process in multiprocessing.active_children()}
    for typecode, size, error, words in BAD_ARGUMENTS:
        with pytest.raises(error) as caught:
            make(typecode, size)
        assert type(caught.value) is error, (typecode, size, caught.value)
        assert words in str(caught.value), (typecode, size, caught.value)
    # A refused array started no owner process or server.
    assert {process.pid for process in multiprocessing.active_children()} == before


#: Sizes past MAX_BYTES (this machine's memory): (typecode, number of items).
HUGE_SIZES = [("d", 2**62), ("d", 2**40), ("B", MAX_BYTES + 1), ("q", MAX_BYTES // 8 + 1)]


@ways()
def test_sizes_no_way_can_hold_are_refused_alike(make: Callable[..., Any]) -> None:
    # Regression (issue 9): these raised OverflowError ("array too large",
    # "Python int too large to convert to C long", "cannot fit 'int' into an
    # index-sized integer") or MemoryError, depending on the way; and
    # CtypesArray("d", 2**40) made a sparse 8 TiB segment that raised SIGBUS
    # when written, or, on the heap, wrote zeros to a file in the temporary
    # directory for as long as the disk lasted.
    for typecode, count in HUGE_SIZES:
        with pytest.raises(ValueError, match="MAX_BYTES") as caught:
            make(typecode, count)
        assert type(caught.value) is ValueError


@ways()
def test_numpy_scalars_are_ints_and_floats(make: Callable[..., Any]) -> None:
    # Regression (issue 9): a numpy integer was refused as a size, in every way.
    np = numpy_or_skip()
    ints = make("q", np.int64(N))
    assert len(ints) == N
    ints[np.int64(1)] = np.int64(-5)
    ints[np.uint8(2) : np.int32(4)] = [np.uint16(7), np.int8(-8)]
    ints[-1] = np.uint64(2**63 - 1)
    for bad, error in [
        (np.bool_(True), TypeError),
        (np.float64(1.0), TypeError),
        (np.uint64(2**63), OverflowError),
    ]:
        with pytest.raises(error):
            ints[0] = bad
        with pytest.raises(error):
            ints.write([0] * (N - 1) + [bad])
    assert ints[:] == [0, -5, 7, -8, 0, 0, 0, 2**63 - 1]
    doubles = make("d", 3)
    doubles[0:3] = [np.float32(1.5), np.float64(2.5), np.int64(3)]
    doubles[1] = np.float16(-0.5)
    with pytest.raises(TypeError):
        doubles[2] = np.bool_(False)
    assert doubles[:] == [1.5, -0.5, 3.0]
    with pytest.raises(TypeError):
        make("q", np.bool_(True))
    assert make("B", np.uint8(1))[:] == [0]


class Index:
    """A slice bound that is not an int: anything with ``__index__`` will do."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value

    def __reduce__(self) -> Any:
        raise TypeError("an Index does not pickle")


@ways()
def test_slice_bounds_need_not_pickle(make: Callable[..., Any]) -> None:
    # Regression (issue 9): the slice went to the owner as it was: the
    # Queue's feeder thread dropped a bound it could not pickle and the
    # caller waited out its timeout; ManagerArray raised the pickling error.
    shared = make("q", list(range(N)), timeout=5)
    start = time.monotonic()
    assert shared[Index(1) : Index(7) : Index(2)] == [1, 3, 5]
    shared[Index(-2) :] = [70, 80]
    assert shared[:] == [0, 1, 2, 3, 4, 5, 70, 80]
    assert time.monotonic() - start < 5


@ways(*SHARED_WAYS)
def test_buffer_error_of_close_keeps_the_error_in_flight(make: Callable[..., Any]) -> None:
    # Regression (issue 9): close() at the end of a with block raised
    # BufferError for a live view, and it replaced the block's exception.
    np = numpy_or_skip()
    shared = make("d", 2)
    with pytest.raises(KeyError) as caught, shared:
        view = shared.as_numpy()
        raise KeyError("the block's own error")
    if sys.version_info >= (3, 11):  # add_note() is new in 3.11
        assert "BufferError" in " ".join(caught.value.__notes__)
    view[0] = 1.5  # the array is still open: the view still reads it
    assert shared[0] == 1.5
    assert np.array_equal(view, [1.5, 0.0])
    del view


# Values: checked before anything is written.


@ways()
def test_values_are_checked_for_each_typecode(make: Callable[..., Any]) -> None:
    unsigned = make("B", 3)
    with pytest.raises(OverflowError):
        unsigned[0] = -1
    with pytest.raises(OverflowError):
        unsigned[1:3] = [255, 256]
    unsigned[0:2] = [0, 255]
    assert unsigned[:] == [0, 255, 0]

    single = make("f", 3)
    with pytest.raises(OverflowError):  # ctypes would store inf
        single[0] = 1e39
    with pytest.raises(OverflowError):
        single.write([1.0, 2.0, -1e39])
    single[0:2] = [float("inf"), 3]  # an infinity is a float, an int converts
    assert single[:] == [float("inf"), 3.0, 0.0]

    double = make("d", 2)
    with pytest.raises(TypeError):
        double[0] = "1.5"
    with pytest.raises(OverflowError):
        double[0] = 2**1024
    double[0] = 2**53
    assert double[:] == [2.0**53, 0.0]


@pytest.mark.parametrize("typecode", list(TYPECODES))
def test_range_of_every_typecode(typecode: str) -> None:
    # One way is enough: the checks are shared, and the contract tests above
    # run a few typecodes on every way.
    bits = 8 * array.array(typecode).itemsize
    with CtypesArray(typecode, 2) as shared:
        with pytest.raises(TypeError):
            shared[0] = True
        if typecode in "fd":
            big = 3.4e38 if typecode == "f" else 1.7e308
            shared[0:2] = [-big, big]
            assert shared[:] == pytest.approx([-big, big], rel=1e-6)
            if typecode == "f":
                with pytest.raises(OverflowError):
                    shared[1] = 3.5e38
                assert shared[1] == pytest.approx(big, rel=1e-6)
            return
        low, high = (
            (0, 2**bits - 1) if typecode.isupper() else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        )
        shared[0:2] = [low, high]
        for bad in (low - 1, high + 1):
            with pytest.raises(OverflowError):
                shared[0] = bad
            with pytest.raises(OverflowError):
                shared.write([low, bad])
        with pytest.raises(TypeError):
            shared[0] = 1.0
        assert shared[:] == [low, high]


# Whole-array reads and writes.


@ways()
def test_read_write_and_readinto(way: Array) -> None:
    way.write(range(10, 10 + N))
    snapshot = way.read()
    assert snapshot == array.array("q", range(10, 10 + N))
    way[0] = 0
    assert snapshot[0] == 10  # read() is a copy
    out = array.array("q", bytes(8 * N))
    way.readinto(out)
    assert out.tolist() == [0, *range(11, 10 + N)]
    with pytest.raises(ValueError):
        way.write(range(N + 1))
    with pytest.raises(TypeError):
        way.write(5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        way.readinto(array.array("q", bytes(8 * (N - 1))))
    with pytest.raises(TypeError):
        way.readinto(array.array("d", bytes(8 * N)))  # a float buffer for int items
    with pytest.raises(TypeError):
        way.readinto(bytes(8 * N))  # read-only
    assert way[:] == [0, *range(11, 10 + N)]


@ways()
def test_numpy_arrays_are_written_as_values(make: Callable[..., Any]) -> None:
    np = numpy_or_skip()
    doubles = make("d", 4)
    doubles.write(np.arange(4.0))
    doubles[1:3] = np.array([5.5, 6.5])
    doubles[::2] = np.arange(8.0)[::4]  # a non-contiguous source
    out = np.zeros(4)
    doubles.readinto(out)
    assert out.tolist() == doubles[:] == [0.0, 5.5, 4.0, 3.0]

    ints = make("q", 4)
    ints.write(np.array([1, 2, 3, 4], dtype=np.int32))  # another size: item by item
    with pytest.raises(TypeError):
        ints.write(np.array([1.0, 2.0, 3.0, 4.5]))
    with pytest.raises(TypeError):
        ints.write(np.array([True, False, True, False]))
    with pytest.raises(OverflowError):
        ints.write(np.array([0, 0, 0, 2**64 - 1], dtype=np.uint64))
    with pytest.raises(ValueError):
        ints.write(np.arange(5))
    assert ints[:] == [1, 2, 3, 4]


@ways()
def test_initializer_and_arguments(make: Callable[..., Any]) -> None:
    assert make("h", [1, -2, 3])[:] == [1, -2, 3]
    assert make("d", 2)[:] == [0.0, 0.0]
    assert make("b", b"\x01\x02")[:] == [1, 2]  # bytes are unsigned: taken item by item
    assert make("B", iter([7, 8])).read().tolist() == [7, 8]


# numpy views: only shared memory has them; close() refuses while one lives.


@ways(cannot={**dict.fromkeys(OWNED_WAYS, NO_VIEW), "redis": NO_VIEW_REDIS})
def test_numpy_view_sees_other_processes_writes(way: Array, ctx: BaseContext) -> None:
    numpy_or_skip()
    view = way.as_numpy()
    assert view.tolist() == list(range(N))
    run_children(ctx, fill, way, 3, 2, 6)
    assert view.tolist() == [0, 1, 3, 3, 3, 3, 6, 7]
    view[0] = 42
    assert way[0] == 42
    del view


@ways(*SHARED_WAYS)
def test_close_refuses_while_numpy_views_exist(way: Array) -> None:
    numpy_or_skip()
    view = way.as_numpy()
    derived = view[::2]
    del view
    with pytest.raises(BufferError, match="numpy view"):
        way.close()
    way[0] = 10  # still open, and the derived view still sees the memory
    assert derived[0] == 10
    del derived
    way.close()
    with pytest.raises(ValueError):
        way.as_numpy()


def test_as_numpy_without_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "numpy", None)  # what an install without numpy sees
    with CtypesArray("d", 2) as shared, pytest.raises(ModuleNotFoundError, match="needs numpy"):
        shared.as_numpy()


def test_view_outliving_a_dropped_handle_keeps_the_memory(ctx: BaseContext) -> None:
    np = numpy_or_skip()
    shared = CtypesArray("d", 4, segment=True, ctx=ctx)
    name = shared.name
    view = shared.as_numpy()
    del shared  # never closed: the creator's finalizer unlinks the name...
    assert not os.path.exists(f"/dev/shm/{name}")
    view[:] = 1.5  # ...and the mapping lives as long as the view
    assert np.array_equal(view, [1.5] * 4)
    del view


# Timeouts.


@ways(*SHARED_WAYS)
def test_ctypes_times_out_when_lock_is_held(make: Callable[..., Any]) -> None:
    shared = make("q", list(range(N)), timeout=0.1)
    lock = shared.get_lock()
    lock.acquire()
    try:
        for call in (
            lambda: shared[0],
            lambda: shared.__setitem__(0, 5),
            lambda: shared.__setitem__(slice(0, 2), [5, 5]),
            shared.read,
            lambda: shared.write([5] * N),
        ):
            with pytest.raises(TimeoutError):
                call()
    finally:
        lock.release()
    assert shared[:] == list(range(N))


def test_manager_arrays_share_a_manager(ctx: BaseContext) -> None:
    manager = ArrayManager(ctx=ctx)
    manager.start()
    try:
        with (
            ManagerArray("q", 2, manager=manager) as a,
            ManagerArray("d", 3, manager=manager) as b,
        ):
            a[0] = 1
            b[2] = 2.5
            run_children(ctx, fill, a, 4, 1)
            assert (a[:], b[:]) == ([1, 4], [0.0, 0.0, 2.5])
        # Neither array started the manager, so closing them left it serving.
        with ManagerArray("q", 1, manager=manager) as c:
            assert c[:] == [0]
    finally:
        manager.shutdown()


# Segments: 0600, unlinked once by the creator, no resource_tracker noise.


def test_storage_follows_size() -> None:
    with CtypesArray("B", SEGMENT_BYTES - 1) as small, CtypesArray("B", SEGMENT_BYTES) as large:
        assert small.name is None
        assert large.name is not None and large.name.startswith(SEGMENT_PREFIX)


def test_segment_is_private_and_unlinked_once_by_creator(
    ctx: BaseContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    unlinked: list[str] = []
    real_unlink = shared_memory._posixshmem.shm_unlink  # type: ignore[attr-defined]

    def counting_unlink(name: str) -> None:
        unlinked.append(name)
        real_unlink(name)

    monkeypatch.setattr(shared_memory._posixshmem, "shm_unlink", counting_unlink)  # type: ignore[attr-defined]
    shared = CtypesArray("q", N, segment=True, ctx=ctx)
    name = shared.name
    path = f"/dev/shm/{name}"
    assert os.stat(path).st_mode & 0o777 == 0o600
    run_children(ctx, fill, shared, 9, 0, 4, count=2)  # each child attaches and closes
    assert os.path.exists(path)  # no child unlinked it
    assert shared[:] == [9, 9, 9, 9, 0, 0, 0, 0]
    shared.close()
    shared.close()
    assert not os.path.exists(path)
    assert unlinked == [f"/{name}"]


OWN_CHILDREN = """\
import multiprocessing
import sys

from shmref.arrays import CtypesArray, fill

if __name__ == "__main__":
    ctx = multiprocessing.get_context(sys.argv[1])
    with CtypesArray("q", 8, segment=True, ctx=ctx) as shared:
        workers = [ctx.Process(target=fill, args=(shared, 7, 4 * i, 4 * i + 4)) for i in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        print(shared.name, [worker.exitcode for worker in workers], shared[:])
"""

USUAL_FIX = """\
import multiprocessing
import sys
from multiprocessing import resource_tracker, shared_memory


def attach_and_unregister(name):
    segment = shared_memory.SharedMemory(name)
    resource_tracker.unregister(segment._name, "shared_memory")
    segment.close()


if __name__ == "__main__":
    ctx = multiprocessing.get_context(sys.argv[1])
    segment = shared_memory.SharedMemory(create=True, size=8)
    child = ctx.Process(target=attach_and_unregister, args=(segment.name,))
    child.start()
    child.join(60)
    segment.close()
    segment.unlink()
"""


def run_interpreter(tmp_path: Path, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a fresh interpreter: its resource_tracker writes to our pipe."""
    path = tmp_path / "script.py"
    path.write_text(textwrap.dedent(script))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(path), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_children_attach_without_tracker_warnings(start_method: str, tmp_path: Path) -> None:
    result = run_interpreter(tmp_path, OWN_CHILDREN, start_method)
    assert result.returncode == 0, result.stderr
    name, rest = result.stdout.split(" ", 1)
    assert rest == "[0, 0] [7, 7, 7, 7, 7, 7, 7, 7]\n"
    assert not os.path.exists(f"/dev/shm/{name}")
    # The tracker prints "leaked" for what nobody unlinked, and a KeyError
    # traceback when a name is unregistered twice.
    assert result.stderr == ""


@pytest.mark.skipif(sys.platform != "linux", reason="the tracker's sharing is checked on Linux")
def test_the_usual_unregister_fix_breaks_the_shared_tracker(
    start_method: str, tmp_path: Path
) -> None:
    # Why shmref.segment.attach does not simply unregister: every start method's
    # children share their parent's tracker, and their unregister erases the
    # creator's registration, so the creator's own unlink makes it complain.
    result = run_interpreter(tmp_path, USUAL_FIX, start_method)
    assert result.returncode == 0, result.stderr
    assert "KeyError" in result.stderr


@pytest.mark.parametrize("start_method", ["forkserver"])
def test_queue_owner_outlives_an_idle_second(ctx: BaseContext) -> None:
    # The owner checks every second that its creator lives; under forkserver
    # its parent is the fork server, which must not count as the creator dying.
    with QueueArray("q", 4, ctx=ctx, timeout=5) as shared:
        owner = shared._link._process
        owner.join(1.5)  # idle for longer than one check
        assert owner.is_alive()
        assert shared[0] == 0


# RedisArray: what the server holds, and what it cannot hold.


def test_redis_items_are_little_endian_on_the_server(redis_url: str) -> None:
    with RedisArray("i", [1, -2, 3], url=redis_url) as shared:
        shared[::2] = [7, 9]
        stored = shared._keyspace.command("GET", shared._keyspace.key("items"))
        assert stored == struct.pack("<3i", 7, -2, 9)  # a host of either byte order reads it
        with RedisArray.connect(shared.url, shared.name) as other:
            assert (other.typecode, len(other), other[:]) == ("i", 3, [7, -2, 9])


def test_redis_refuses_more_than_a_redis_string_holds(redis_url: str) -> None:
    with pytest.raises(ValueError, match="Redis string"):
        RedisArray("B", REDIS_BYTES + 1, url=redis_url)
