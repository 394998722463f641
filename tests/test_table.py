"""The contract of shmref.table, once, for every way and start method.

Each test is one clause of the :class:`~shmref.table.SharedDict` contract,
run for every way in :data:`FACTORIES` (or the ways :func:`ways` names) under
every start method; a test named ``test_ctypes_*`` (and so on) is about what
one way does inside. :class:`TableMachine` drives each way through random
operation sequences beside a plain ``dict`` (the model, with the table's
limits written out independently here). Targets of child processes are
module-level so that spawn and forkserver children can import them.
"""

from __future__ import annotations

import functools
import gc
import multiprocessing
import os
import random
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from shmref.holder import RecordedLock
from shmref.table import (
    _ORDERED_LOADS,
    CtypesDict,
    DictManager,
    ManagerDict,
    QueueDict,
    RedisDict,
    SharedDict,
    TableFull,
    increment,
    update_worker,
)
from tests import redis_server
from tests.conftest import JOIN, contract, run_children

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

#: Seconds to wait for a child to finish or reply; pytest-timeout is the backstop.
#: Small limits, so that tests reach them: capacity, key and value sizes.
LIMITS = {"capacity": 8, "key_size": 8, "value_size": 16}

#: way id -> callable(ctx, **kwargs) -> a new table of that way.
FACTORIES: dict[str, Callable[..., SharedDict]] = {
    "ctypes": lambda ctx, **kw: CtypesDict(ctx=ctx, **{**LIMITS, **kw}),
    "queue": lambda ctx, **kw: QueueDict(ctx=ctx, **{**LIMITS, **kw}),
    "manager": lambda ctx, **kw: ManagerDict(ctx=ctx, **{**LIMITS, **kw}),
    "redis": lambda ctx, **kw: RedisDict(url=redis_server.url(), **{**LIMITS, **kw}),
}


def ways(*names: str) -> pytest.MarkDecorator:
    """Run a contract clause for the ways ``names`` (default: all) x every start method."""
    return contract(names or FACTORIES)


@pytest.fixture
def make(way_name: str, ctx: BaseContext) -> Iterator[Callable[..., Any]]:
    """Build tables of the way under test; all are closed afterwards."""
    made: list[SharedDict] = []

    def make(**kwargs: Any) -> Any:
        table = FACTORIES[way_name](ctx, **kwargs)
        made.append(table)
        return table

    yield make
    for table in made:
        table.close()
    made.clear()


@pytest.fixture
def way(make: Callable[..., Any]) -> Any:
    """An empty table of the way under test, with :data:`LIMITS`."""
    return make()


def typed(mapping: dict[Any, Any]) -> dict[Any, tuple[type, Any]]:
    """A mapping that compares equal only if every value has the same type too."""
    return {key: (type(value), value) for key, value in mapping.items()}


# Child process targets.


def check_then_put(table: SharedDict, expected: dict[Any, Any], new: dict[Any, Any]) -> None:
    """Look up every expected key by key (so by hash), then store ``new``."""
    for key, value in expected.items():
        assert table[key] == value, (key, table.get(key))
        assert key in table
    for key, value in new.items():
        table[key] = value
    table.close()


def flip_values(table: SharedDict, started: Any, stop: Any) -> None:
    """Store each of FLIPS in turn under "k" until ``stop`` is set."""
    started.set()
    deadline = time.monotonic() + JOIN
    while not stop.is_set() and time.monotonic() < deadline:
        for value in FLIPS:
            table["k"] = value
    table.close()


def add_and_remove(table: SharedDict, started: Any, stop: Any) -> None:
    """Add and remove the key "other" until ``stop`` is set."""
    started.set()
    deadline = time.monotonic() + JOIN
    while not stop.is_set() and time.monotonic() < deadline:
        table["other"] = 0
        del table["other"]
    table.close()


# Values of every type, stored and read back.

ROUND_TRIP: dict[Any, Any] = {
    "int": 7,
    "max": INT64_MAX,
    "min": INT64_MIN,
    "float": -0.0,
    "inf": float("inf"),
    "str": "é€😀\ud800",  # a lone surrogate too: any str round-trips
    "": "",
    "k": "text",
    b"k": b"\x00\xff",  # "k" and b"k" are different keys
    b"": b"",
}


@ways()
def test_values_come_back_with_their_type(make: Callable[..., Any]) -> None:
    table = make(capacity=len(ROUND_TRIP))
    for key, value in ROUND_TRIP.items():
        table[key] = value
    for key, value in ROUND_TRIP.items():
        assert typed({key: table[key]}) == typed({key: value})
        assert typed({key: table.get(key)}) == typed({key: value})
    assert typed(table.snapshot()) == typed(ROUND_TRIP)
    assert typed(dict(table.items())) == typed(ROUND_TRIP)
    assert sorted(table.keys(), key=repr) == sorted(ROUND_TRIP, key=repr)
    assert len(table) == len(ROUND_TRIP)


@ways()
def test_mapping_api(way: SharedDict) -> None:
    assert isinstance(way, SharedDict)
    assert len(way) == 0 and way.snapshot() == {} and way.keys() == [] and way.items() == []
    assert way.get("a") is None and way.get("a", 5) == 5 and "a" not in way
    with pytest.raises(KeyError):
        way["a"]
    way["a"] = 1
    way["a"] = 2  # overwriting does not add a key
    way[b"a"] = 3
    assert (way["a"], way[b"a"], len(way)) == (2, 3, 2)
    assert "a" in way and b"a" in way and "b" not in way
    assert way.pop("a") == 2
    assert way.pop("a", None) is None
    with pytest.raises(KeyError):
        way.pop("a")
    del way[b"a"]
    with pytest.raises(KeyError):
        del way[b"a"]
    assert len(way) == 0 and way.snapshot() == {}


@ways()
def test_update_applies_fn_to_value_or_default(way: SharedDict) -> None:
    assert way.update("n", increment, 0) == 1
    assert way.update("n", increment, 0) == 2
    assert way.update("x", increment, 1.5) == 2.5
    way["s"] = "ab"
    assert way.update("s", str.upper, "") == "AB"
    assert way.snapshot() == {"n": 2, "x": 2.5, "s": "AB"}


@ways()
def test_update_result_refused_changes_nothing(way: SharedDict) -> None:
    way["n"] = INT64_MAX
    way["s"] = "x" * 16  # value_size
    before = typed(way.snapshot())
    for key, fn, error in [
        ("s", increment, TypeError),  # fn raises
        ("n", increment, OverflowError),  # fn's result leaves the 64-bit range
        ("s", repr, ValueError),  # fn's result is over value_size
        ("s", bool, TypeError),  # fn's result is of a refused type
        ("new", increment, TypeError),  # fn(default) raises
    ]:
        with pytest.raises(error):
            way.update(key, fn, None)
        assert typed(way.snapshot()) == before, (key, fn)


@ways("queue", "manager")
def test_update_with_unpicklable_fn_raises_and_changes_nothing(way: SharedDict) -> None:
    # Regression (issue 9): QueueDict gave a raw PicklingError, ManagerDict a
    # PicklingError or AttributeError; both now say what fn must be.
    way["n"] = 1
    with pytest.raises(TypeError, match="module-level function"):
        way.update("n", lambda n: n + 1, 0)
    assert way.snapshot() == {"n": 1}
    assert way.update("n", increment, 0) == 2  # and the table still works


@ways("queue", "manager")
def test_update_with_unpicklable_default_raises_at_once(
    make: Callable[..., Any], ctx: BaseContext
) -> None:
    # Regression (issue 9): QueueDict's feeder thread dropped the request and
    # the caller waited its whole timeout; ManagerDict raised RuntimeError.
    way = make(timeout=10)
    way["n"] = 1
    start = time.monotonic()
    with pytest.raises(TypeError, match="default"):
        way.update("n", increment, ctx.Lock())
    assert time.monotonic() - start < 5
    assert way.snapshot() == {"n": 1}
    assert way.update("n", increment, 0) == 2


def test_ctypes_update_runs_any_callable() -> None:
    # The documented difference: fn and default stay in the caller.
    with CtypesDict(**LIMITS) as table:
        assert table.update("n", lambda n: n + 1, 0) == 1
        assert table.update("n", increment, multiprocessing.Lock()) == 2


@ways()
def test_any_object_is_a_default_of_get_and_pop(
    make: Callable[..., Any], ctx: BaseContext
) -> None:
    # Regression (issue 9): QueueDict.get(key, lock) sent the lock, which its
    # feeder thread could not pickle, and waited its whole timeout. A default
    # never leaves the caller, as with a dict.
    way = make(timeout=10)
    lock = ctx.Lock()
    start = time.monotonic()
    assert way.get("a", lock) is lock
    assert way.pop("a", lock) is lock
    assert time.monotonic() - start < 5
    way["a"] = 1
    assert (way.get("a", lock), way.pop("a", lock)) == (1, 1)


class Unpicklable(Exception):
    def __reduce__(self) -> Any:
        raise TypeError("this exception stays in the process that raised it")


def exit_now(value: Any) -> Any:
    raise SystemExit(3)


def raise_unpicklable(value: Any) -> Any:
    raise Unpicklable(value)


#: update() calls every way refuses with the same exception (fn raising
#: anything is re-raised in the caller; one that cannot be pickled as a
#: RuntimeError, in the ctypes way too), leaving the table unchanged.
BAD_UPDATES: list[tuple[str, tuple[Any, Any, Any], type[BaseException]]] = [
    ("fn raises SystemExit", ("a", exit_now, 0), SystemExit),
    ("fn raises an unpicklable exception", ("a", raise_unpicklable, 0), RuntimeError),
    ("fn is not callable", ("a", 5, 0), TypeError),
    ("fn(default) raises", ("new", increment, "x"), TypeError),
    ("fn returns a bool", ("a", bool, 0), TypeError),
    ("a key of another type", (1, increment, 0), TypeError),
    ("a key over key_size", ("k" * 9, increment, 0), ValueError),
]

#: Constructor arguments every way refuses with the same exception, before
#: it starts anything.
BAD_ARGUMENTS: list[tuple[dict[str, Any], type[Exception]]] = [
    ({"capacity": 0}, ValueError),
    ({"capacity": 2**40}, ValueError),  # issue 9: ctypes could not hold it
    ({"capacity": True}, ValueError),
    ({"capacity": 8.0}, ValueError),
    ({"key_size": -1}, ValueError),
    ({"value_size": 2**31}, ValueError),
    # Each under 2**31, but a segment no process can map.
    ({"capacity": 2**30, "key_size": 2**30, "value_size": 2**30}, ValueError),
    ({"timeout": True}, TypeError),  # issue 9: taken as 1 s
    ({"timeout": "1"}, TypeError),
    ({"timeout": -1}, ValueError),
    ({"timeout": float("nan")}, ValueError),
]


@ways()
def test_bad_input_raises_the_same_error_in_every_way(make: Callable[..., Any]) -> None:
    way = make()
    way["a"] = 1
    for name, args, error in BAD_UPDATES:
        with pytest.raises(error):
            way.update(*args)
        assert way.snapshot() == {"a": 1}, name
    assert way.update("a", increment, 0) == 2  # the owner or server still serves
    before = multiprocessing.active_children()
    for arguments, error in BAD_ARGUMENTS:
        with pytest.raises(error):
            make(**arguments)
    assert multiprocessing.active_children() == before


@ways()
def test_numpy_scalars_are_ints_and_floats(make: Callable[..., Any]) -> None:
    numpy = pytest.importorskip("numpy", reason="pip install numpy")
    way = make(capacity=numpy.int64(4), timeout=numpy.float64(5.0))
    way["i"] = numpy.int64(3)
    way["f"] = numpy.float32(1.5)
    assert way.update("u", increment, numpy.uint8(1)) == 2
    assert typed(way.snapshot()) == typed({"i": 3, "f": 1.5, "u": 2})
    for value, error in [(numpy.bool_(True), TypeError), (numpy.uint64(2**63), OverflowError)]:
        with pytest.raises(error):
            way["x"] = value
    assert len(way) == 3


# Bad input and limits: a clear error, and the table unchanged.

BAD_WRITES: list[tuple[Any, Any, type[Exception]]] = [
    (1, 1, TypeError),  # key type
    (None, 1, TypeError),
    (bytearray(b"a"), 1, TypeError),
    ("k" * 9, 1, ValueError),  # key over key_size
    ("é" * 5, 1, ValueError),  # 5 characters, 10 bytes
    ("a", None, TypeError),  # value type
    ("a", True, TypeError),  # a bool is an int, but it would come back as 1
    ("a", [1], TypeError),
    ("a", bytearray(b"x"), TypeError),
    ("a", INT64_MAX + 1, OverflowError),
    ("a", INT64_MIN - 1, OverflowError),
    ("a", "x" * 17, ValueError),  # value over value_size
    ("a", "é" * 9, ValueError),  # 9 characters, 18 bytes
    ("a", b"x" * 17, ValueError),
]


@ways()
def test_bad_write_changes_nothing(way: SharedDict) -> None:
    way["a"] = "old"  # an existing key keeps its value
    way["b"] = 2
    before = typed(way.snapshot())
    for key, value, error in BAD_WRITES:
        with pytest.raises(error):
            way[key] = value
        assert typed(way.snapshot()) == before, (key, value)
        if not isinstance(key, (str, bytes)) or len(key) > 8:
            with pytest.raises(error):
                way.update(key, increment, 0)
            assert typed(way.snapshot()) == before, (key, "update")
    assert len(way) == 2


@ways()
def test_lookups_check_the_key_type_and_ignore_its_size(way: SharedDict) -> None:
    way["a"] = 1
    for bad in (1, None, bytearray(b"a")):
        for lookup in (way.get, way.__getitem__, way.__contains__, way.pop, way.__delitem__):
            with pytest.raises(TypeError):
                lookup(bad)
    long = "k" * 100  # cannot be in the table, so it is absent
    assert way.get(long) is None and long not in way and way.pop(long, 0) == 0
    with pytest.raises(KeyError):
        way[long]
    assert way.snapshot() == {"a": 1}


@ways()
def test_full_table_changes_nothing(way: SharedDict) -> None:
    for i in range(LIMITS["capacity"]):
        way[f"k{i}"] = i
    before = typed(way.snapshot())
    with pytest.raises(TableFull):
        way["new"] = 1
    with pytest.raises(TableFull):
        way.update("new", increment, 0)
    assert typed(way.snapshot()) == before
    way["k0"] = "changed"  # existing keys can still change
    assert way.update("k1", increment, 0) == 2
    assert len(way) == LIMITS["capacity"]
    del way["k0"]
    way["new"] = 1  # a freed place is used
    assert len(way) == LIMITS["capacity"] and way["new"] == 1


@ways()
def test_deleted_places_are_reused(way: SharedDict) -> None:
    # Far more distinct keys than the capacity, never more than 4 at a time.
    capacity = LIMITS["capacity"]
    live: list[str] = []
    for i in range(25 * capacity):
        key = f"c{i}"
        way[key] = i
        live.append(key)
        if len(live) > 4:
            assert way.pop(live.pop(0)) == i - 4
    assert way.snapshot() == {key: int(key[1:]) for key in live}
    for i in range(capacity - len(live)):
        way[f"f{i}"] = i
    with pytest.raises(TableFull):
        way["one-more"] = 0
    assert len(way) == capacity


def test_ctypes_deletion_leaves_no_tombstones() -> None:
    # Every slot in use holds a live key, and lookups still find them all,
    # after thousands of inserts and deletions in a table of 8 slots.
    rng = random.Random(6)
    model: dict[str, int] = {}
    with CtypesDict(capacity=6, key_size=8, value_size=8) as table:
        assert table._mask + 1 == 8
        for step in range(4000):
            key = f"k{rng.randrange(12)}"
            if key in model or len(model) == 6:
                victim = key if key in model else rng.choice(list(model))
                assert table.pop(victim) == model.pop(victim)
            else:
                table[key] = model[key] = step
            assert table._occupied() == len(table) == len(model)
            assert all(table[k] == v for k, v in model.items())


# Across processes.


@ways()
def test_key_lands_in_same_slot_in_every_process(way: SharedDict, ctx: BaseContext) -> None:
    # Spawn and forkserver children hash str differently from the parent:
    # each process looks up the other's keys by key.
    parents = {f"p{i}": i for i in range(3)} | {b"pb": "bytes"}
    for key, value in parents.items():
        way[key] = value
    children = {f"c{i}": -i for i in range(3)} | {"é": 1.5}
    run_children(ctx, check_then_put, way, parents, children)
    # A second child finds the first one's keys: its close() only detached.
    run_children(ctx, check_then_put, way, {**parents, **children}, {"c0": 100})
    for key, value in {**parents, **children, "c0": 100}.items():
        assert way[key] == value and key in way


#: update()s per process and key in the totals test, per way (round trips cost).
UPDATES = {"ctypes": 3000, "queue": 300, "manager": 300, "redis": 300}


@ways()
def test_updates_from_many_processes_give_exact_totals(
    way: SharedDict, way_name: str, ctx: BaseContext
) -> None:
    processes, n = 3, UPDATES[way_name]
    barrier = ctx.Barrier(processes + 1)  # the parent updates too
    workers = [
        ctx.Process(target=update_worker, args=(way, ["a", "b"], n, barrier))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    barrier.wait(JOIN)
    for _ in range(n):
        way.update("a", increment, 0)
    barrier.wait(JOIN)
    for worker in workers:
        worker.join(JOIN)
    assert [worker.exitcode for worker in workers] == [0] * processes
    for worker in workers:
        worker.close()
    assert way.snapshot() == {"a": (processes + 1) * n, "b": processes * n}


def slow_increment(value: int) -> int:
    """``value + 1`` after a pause: the read and the write of an update are far apart."""
    time.sleep(0.002)
    return value + 1


def slow_updates(table: SharedDict, n: int, barrier: Any) -> None:
    barrier.wait(JOIN)
    for _ in range(n):
        table.update("a", slow_increment, 0)
    table.close()


@ways()
def test_update_is_atomic_while_fn_runs(way: SharedDict, ctx: BaseContext) -> None:
    # Without a lock around fn, every pause would let another update in.
    processes, n = 3, 10
    run_children(ctx, slow_updates, way, n, ctx.Barrier(processes), count=processes)
    assert way["a"] == processes * n


#: Values a writer flips between: different types and lengths, so that a read
#: mixing two writes (a tag of one with the bytes of the other) shows.
FLIPS = ["a" * 16, 7, b"bb", -1.5, "c"]
#: Reads per test at least, per way.
READS = {"ctypes": 100_000, "queue": 2_000, "manager": 2_000, "redis": 2_000}


def read_while_writing(
    way: SharedDict,
    way_name: str,
    ctx: BaseContext,
    write: Callable[..., None],
    read: Callable[[], object],
    allowed: Any,
) -> None:
    """Call ``read`` while a child runs ``write``; each result must be in ``allowed``."""
    started, stop = ctx.Event(), ctx.Event()
    writer = ctx.Process(target=write, args=(way, started, stop))
    writer.start()
    try:
        assert started.wait(JOIN)
        seen = set()
        reads, deadline = 0, time.monotonic() + JOIN
        # Then on until the reads did overlap the writes: on a busy machine
        # the writer may not have had its turn yet (issue 9: a fixed count
        # made this test fail under forkserver).
        while reads < READS[way_name] or (
            len(seen) < 2 and writer.is_alive() and time.monotonic() < deadline
        ):
            value = read()
            assert (type(value), value) in allowed, value
            seen.add(repr(value))
            reads += 1
    finally:
        stop.set()
        writer.join(JOIN)
    assert writer.exitcode == 0
    writer.close()
    assert len(seen) > 1  # the reads did overlap the writes


@ways()
def test_readers_never_see_torn_values(way: SharedDict, way_name: str, ctx: BaseContext) -> None:
    way["k"] = FLIPS[0]
    allowed = typed(dict(enumerate(FLIPS))).values()
    get = way.get
    read_while_writing(way, way_name, ctx, flip_values, lambda: get("k"), allowed)


@ways()
def test_len_is_always_a_count_the_table_had(
    way: SharedDict, way_name: str, ctx: BaseContext
) -> None:
    # Found when a lock-free reader of CtypesDict saw the count, written with
    # struct.pack_into (which zeroes a field before writing it), as 0.
    way["k"] = 1
    allowed = {(int, 1), (int, 2)}
    read_while_writing(way, way_name, ctx, add_and_remove, way.__len__, allowed)


# A read after another process's write returned sees it, every time, though
# CtypesDict answers repeated reads from a cache in each process.

#: What the table holds before the writes below.
BEFORE: dict[Any, Any] = {"a": 1, "n": 0, b"a": b"x"}
#: Writes, as (call, key, value): each kind of change, to each kind of entry.
WRITES_SEEN: list[tuple[str, Any, Any]] = [
    ("set", "a", 2),  # a store over an entry
    ("set", "new", "x" * 16),  # a new entry, where a lookup found none
    ("del", "a", None),  # a removal
    ("set", "a", 3.5),  # back, with another type
    ("update", "n", None),
    ("update", "n", None),
    ("pop", "new", None),
    ("set", b"a", b"y"),  # a bytes key, beside the str key "a"
]
#: Every key the writes touch, and one they never do.
LOOKED_UP = [*BEFORE, "new", "never"]


def write(table: SharedDict, call: str, key: Any, value: Any) -> None:
    if call == "set":
        table[key] = value
    elif call == "del":
        del table[key]
    elif call == "update":
        table.update(key, increment, 0)
    else:
        table.pop(key)


def after(model: dict[Any, Any], call: str, key: Any, value: Any) -> None:
    """Make the same change to ``model``, a plain dict."""
    if call == "set":
        model[key] = value
    elif call == "update":
        model[key] = model.get(key, 0) + 1
    else:
        del model[key]


def seen(table: SharedDict) -> dict[Any, Any]:
    """Each key of LOOKED_UP as get, in and [] see it, all typed."""
    view = {}
    for key in LOOKED_UP:
        value = table.get(key)  # first: a lookup that may fill the cache
        view[key] = (type(value), value, key in table, value is not None and table[key] == value)
    return view


def expected(model: dict[Any, Any]) -> dict[Any, Any]:
    return {
        key: (type(model.get(key)), model.get(key), key in model, key in model)
        for key in LOOKED_UP
    }


def write_on_request(table: SharedDict, requests: Any) -> None:
    """Process target: make each write received on ``requests``, then say it returned."""
    while requests.poll(JOIN) and (request := requests.recv()) is not None:
        write(table, *request)
        requests.send(request)
    table.close()


@ways()
def test_a_read_after_another_process_wrote_sees_it(way: SharedDict, ctx: BaseContext) -> None:
    model = dict(BEFORE)
    for key, value in model.items():
        way[key] = value
    ours, theirs = ctx.Pipe()
    writer = ctx.Process(target=write_on_request, args=(way, theirs))
    writer.start()
    try:
        for request in WRITES_SEEN:
            # Twice: the second time, CtypesDict answers from its cache.
            assert seen(way) == seen(way) == expected(model)
            ours.send(request)
            assert ours.poll(JOIN) and ours.recv() == request  # the write returned
            after(model, *request)
            assert seen(way) == expected(model), request
    finally:
        ours.send(None)
        writer.join(JOIN)
    assert writer.exitcode == 0
    writer.close()


def read_after_each_write(table: SharedDict, requests: Any) -> None:
    """Process target: read every key, ask for a write, read again: as the parent does."""
    model = dict(BEFORE)
    try:
        for request in WRITES_SEEN:
            assert seen(table) == seen(table) == expected(model)
            requests.send(request)
            assert requests.poll(JOIN) and requests.recv() == request
            after(model, *request)
            assert seen(table) == expected(model), request
    finally:
        requests.send(None)
        table.close()


@ways()
def test_a_child_reads_what_its_parent_wrote(way: SharedDict, ctx: BaseContext) -> None:
    # The child starts with the parent's cache under fork, an empty one
    # under spawn and forkserver: either way it must follow the writes.
    for key, value in BEFORE.items():
        way[key] = value
    assert seen(way) == seen(way) == expected(BEFORE)  # a warm cache, to inherit
    ours, theirs = ctx.Pipe()
    reader = ctx.Process(target=read_after_each_write, args=(way, theirs))
    reader.start()
    while ours.poll(JOIN) and (request := ours.recv()) is not None:
        write(way, *request)
        ours.send(request)
    reader.join(JOIN)
    assert reader.exitcode == 0
    reader.close()


def cached(table: CtypesDict) -> tuple[int, int]:
    """Entries in ``table``'s read cache: for str keys, for bytes keys."""
    return len(table._texts), len(table._blobs)


def test_ctypes_read_cache_holds_at_most_its_limit() -> None:
    # By default twice the capacity for each key type: every key the table
    # can hold and as many absent ones; past the limit it starts again.
    capacity = LIMITS["capacity"]
    keys = [f"k{n}" for n in range(capacity)]
    with CtypesDict(**LIMITS) as table:
        for n, key in enumerate(keys):
            table[key] = n
        # The first lookup after a write files nothing (a table written
        # between lookups costs no cache work); the next ones do.
        assert table.get("y") is None and cached(table) == (0, 0)
        looked_up = [*keys, *(f"x{n}" for n in range(capacity))]  # x...: absent
        assert [table.get(key) for key in looked_up] == [*range(capacity), *[None] * capacity]
        assert [table.get(key.encode()) for key in keys] == [None] * capacity
        assert cached(table) == (2 * capacity, capacity)
        assert table.get("y") is None and cached(table) == (1, capacity)
    with CtypesDict(**LIMITS, cache=3) as table:
        for n, key in enumerate(keys):
            table[key] = n
        for _ in range(2):
            assert [table.get(key) for key in keys] == list(range(capacity))
            assert 0 < cached(table)[0] <= 3
    with CtypesDict(**LIMITS, cache=0) as table:  # no cache
        table["a"] = 1
        assert (table.get("a"), table.get("a"), cached(table)) == (1, 1, (0, 0))
    for bad in (-1, 1.5, True, "8"):
        with pytest.raises(ValueError, match="cache must be an int from 0"):
            CtypesDict(**LIMITS, cache=bad)


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="segments are listed in /dev/shm")
def test_ctypes_segment_goes_with_the_creator_handle() -> None:
    table = CtypesDict(**LIMITS)
    path = f"/dev/shm/{table._segment.name}"
    del table
    gc.collect()
    assert not os.path.exists(path)


# Timeouts and dead peers.


def test_ctypes_readers_time_out_when_a_live_writer_stalls_mid_write(ctx: BaseContext) -> None:
    with CtypesDict(ctx=ctx, timeout=0.3, **LIMITS) as table:
        table["a"] = 1
        # A writer stopped during a write, alive: the lock held, the
        # generation odd. (One killed there is taken over: tests/test_faults.py.)
        lock = RecordedLock(table._holder, None, "table lock")
        assert lock.acquire()
        generation = table._begin()
        try:
            start = time.monotonic()
            with pytest.raises(TimeoutError):
                table.get("a")
            assert 0.25 <= time.monotonic() - start < 10
            with pytest.raises(TimeoutError):
                table["a"] = 2
            with pytest.raises(TimeoutError):
                table.snapshot()
        finally:
            table._end(generation)
            lock.release()
        assert table.snapshot() == {"a": 1}


@pytest.mark.skipif(not _ORDERED_LOADS, reason="readers take the lock where loads may reorder")
def test_ctypes_readers_do_not_wait_for_the_writer_lock(ctx: BaseContext) -> None:
    with CtypesDict(ctx=ctx, timeout=0.3, **LIMITS) as table:
        table["a"] = 1
        lock = RecordedLock(table._holder, None, "table lock")
        assert lock.acquire()  # a writer between two writes
        try:
            assert (table.get("a"), table["a"], "a" in table, len(table)) == (1, 1, True, 1)
            assert table.snapshot() == {"a": 1}
        finally:
            lock.release()


# A write cut short at every line: the repair (the same one a take-over from a
# killed writer runs) must leave the table as it was or as the write made it.

#: The functions a write runs under the lock, whose lines a cut may fall between.
WRITE_STEPS = {"_store", "_remove", "_shift_back", "_begin", "_end"}


def _same_home(table: CtypesDict, count: int) -> list[str]:
    """``count`` keys whose probe starts at one slot: removals then shift entries back."""
    found: dict[int, list[str]] = {}
    for n in range(100_000):
        key = f"c{n}"
        keys = found.setdefault(zlib.crc32(key.encode(), 1) & table._mask, [])
        keys.append(key)
        if len(keys) == count:
            return keys
    raise AssertionError("no colliding keys found")


def _cut_at(step: int, write: Callable[[], object]) -> bool:
    """Run ``write``, raising KeyboardInterrupt at its ``step``-th line under the lock.

    True if the cut happened, False if the write ended first.
    """
    lines = [0]

    def local(frame: Any, event: str, arg: object) -> Any:
        if event == "line":
            lines[0] += 1
            if lines[0] == step:
                raise KeyboardInterrupt
        return local

    def calls(frame: Any, event: str, arg: object) -> Any:
        return local if frame.f_code.co_name in WRITE_STEPS else None

    sys.settrace(calls)
    try:
        write()
    except KeyboardInterrupt:
        return True
    finally:
        sys.settrace(None)
    return False


WRITES: dict[str, Callable[[CtypesDict, list[str]], object]] = {
    "new entry": lambda table, keys: table.__setitem__("new", "x" * 16),
    "store over an entry": lambda table, keys: table.__setitem__(keys[0], "y" * 16),
    "removal that shifts entries back": lambda table, keys: table.__delitem__(keys[0]),
    "update": lambda table, keys: table.update(keys[1], lambda v: v + "z", ""),
}


@pytest.mark.parametrize("write", list(WRITES))
def test_a_write_cut_at_any_line_leaves_the_table_old_or_new(write: str) -> None:
    def filled() -> tuple[CtypesDict, list[str]]:
        table = CtypesDict(**LIMITS)
        keys = _same_home(table, 3)
        for n, key in enumerate(keys):
            table[key] = str(n)
        return table, keys

    with filled()[0] as twin:  # the same table, written without a cut
        WRITES[write](twin, _same_home(twin, 3))
        done = twin.snapshot()
    cuts = 0
    for step in range(1, 1000):
        table, keys = filled()
        with table:
            before = table.snapshot()
            # Read every key, absent "new" too, so that CtypesDict's cache
            # holds them: the repair must leave it no entry to answer from.
            looked_up = [*keys, "new"]
            assert [table.get(key) for key in looked_up] == [before.get(k) for k in looked_up]
            if not _cut_at(step, functools.partial(WRITES[write], table, keys)):
                break
            cuts += 1
            after = table.snapshot()
            assert [table.get(key) for key in looked_up] == [after.get(k) for k in looked_up]
            assert table._holder.lock.acquire(False), "the cut write left the lock taken"
            table._holder.lock.release()
            assert not table._words[0] & 1, "the generation stayed odd"
            assert len(table) == table._occupied() == len(after), (step, after)
            assert all(table[key] == value for key, value in after.items()), (step, after)
            assert after in (before, done), (step, before, after, done)
    assert cuts > 5  # the write was cut at each of its lines


def owner_process(table: QueueDict) -> Any:
    return table._owner._process


def kill_owner(table: QueueDict) -> None:
    process = owner_process(table)
    process.kill()
    process.join(JOIN)


@ways("queue")
def test_queue_close_returns_at_once_when_the_owner_is_dead(make: Callable[..., Any]) -> None:
    # Regression (issue 9): close() waited its whole timeout for the dead
    # owner, then raised TimeoutError, which replaced the error of a with block.
    table = make(timeout=10)
    table["a"] = 1
    kill_owner(table)
    start = time.monotonic()
    table.close()
    assert time.monotonic() - start < 5
    with pytest.raises(KeyError, match="ended the block"), make(timeout=10) as table:
        kill_owner(table)
        raise KeyError("the error that ended the block")


@ways("queue")
def test_queue_owner_outlives_idle_periods(make: Callable[..., Any]) -> None:
    # The owner checks for its creator's death each second it is idle; a
    # forkserver child's parent process is the forkserver, not the creator.
    table = make()
    table["a"] = 1
    owner_process(table).join(1.5)  # returns after 1.5 s: the owner is still there
    assert owner_process(table).is_alive()
    assert table["a"] == 1


def test_manager_tables_share_a_manager(ctx: BaseContext) -> None:
    manager = DictManager(ctx=ctx)
    manager.start()
    try:
        with ManagerDict(manager=manager) as a, ManagerDict(manager=manager) as b:
            a["k"] = 1
            b["k"] = 2
            run_children(ctx, update_worker, a, ["k"], 5)
            assert (a["k"], b["k"]) == (6, 2)
            names = manager.list(["the manager serves its other types too"])
            assert len(names) == 1
            del names
        with ManagerDict(manager=manager) as c:  # closing a and b left it serving
            c["k"] = 3
            assert c.snapshot() == {"k": 3}
    finally:
        manager.shutdown()


# Random operation sequences against a plain dict.

KEY_SIZE, VALUE_SIZE, CAPACITY = LIMITS["key_size"], LIMITS["value_size"], LIMITS["capacity"]
POOL: list[Any] = ["a", "b", "c", "d", "e", "f", "g", "h", "i", b"a", b"b", "é", ""]
KEYS = st.one_of(
    st.sampled_from(POOL),  # few enough to meet again, more than the capacity
    st.text(max_size=KEY_SIZE + 1),
    st.binary(max_size=KEY_SIZE + 1),
)
BAD_KEYS = st.sampled_from([1, None, 1.5, bytearray(b"a")])
VALUES = st.one_of(
    st.integers(),  # some outside the 64-bit range
    st.floats(allow_nan=False),  # NaN != NaN: a dict would not compare either
    st.text(max_size=VALUE_SIZE + 2),
    st.binary(max_size=VALUE_SIZE + 2),
    st.sampled_from([None, True, [1], bytearray(b"x")]),
)
#: fns for update: module-level, so the Queue and Manager ways can pickle them.
FNS = st.sampled_from([increment, str, abs, repr])


def size_of(text: str | bytes) -> int:
    return len(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)


def key_error(key: Any) -> type[Exception] | None:
    """What the contract says a write at ``key`` raises for the key itself."""
    if not isinstance(key, (str, bytes)):
        return TypeError
    if size_of(key) > KEY_SIZE:
        return ValueError
    return None


def write_error(key: Any, value: Any, model: dict[Any, Any]) -> type[Exception] | None:
    """What the contract says a write of ``value`` at ``key`` raises, if anything."""
    error = key_error(key)
    if error is not None:
        return error
    if isinstance(value, bool) or not isinstance(value, (int, float, str, bytes)):
        return TypeError
    if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
        return OverflowError
    if isinstance(value, (str, bytes)) and size_of(value) > VALUE_SIZE:
        return ValueError
    if key not in model and len(model) >= CAPACITY:
        return TableFull
    return None


class TableMachine(RuleBasedStateMachine):
    """One table of one way beside a dict; ``table`` is set by the test."""

    table: SharedDict

    def __init__(self) -> None:
        super().__init__()
        self.model: dict[Any, Any] = {}

    @initialize()
    def empty(self) -> None:
        # One table serves every example: starting an owner or a server per
        # example would cost more than the example.
        keys = self.table.keys()  # a list: the tables have no __iter__
        for key in keys:
            del self.table[key]

    def expect(self, call: Callable[[], Any], error: type[Exception] | None) -> Any:
        if error is None:
            return call()
        with pytest.raises(error):
            call()
        return None

    @rule(key=KEYS, value=VALUES)
    def store(self, key: Any, value: Any) -> None:
        error = write_error(key, value, self.model)
        event("store", "ok" if error is None else error.__name__)
        self.expect(lambda: self.table.__setitem__(key, value), error)
        if error is None:
            self.model[key] = value

    @rule(keys=st.lists(st.sampled_from(POOL), max_size=CAPACITY + 2), value=st.integers())
    def store_many(self, keys: list[Any], value: Any) -> None:
        """Valid writes in a row: the table fills up, and refuses new keys."""
        for key in keys:
            self.store(key, value % 1000)

    @rule(key=KEYS)
    def get_or_default(self, key: Any) -> None:
        got = self.table.get(key, "default")
        assert typed({0: got}) == typed({0: self.model.get(key, "default")})

    @rule(key=KEYS)
    def getitem(self, key: Any) -> None:
        got = self.expect(lambda: self.table[key], None if key in self.model else KeyError)
        if key in self.model:
            assert typed({0: got}) == typed({0: self.model[key]})

    @rule(key=KEYS)
    def contains(self, key: Any) -> None:
        assert (key in self.table) == (key in self.model)

    @rule(key=KEYS)
    def delete(self, key: Any) -> None:
        self.expect(lambda: self.table.__delitem__(key), None if key in self.model else KeyError)
        self.model.pop(key, None)

    @rule(key=KEYS, with_default=st.booleans())
    def pop_key(self, key: Any, with_default: bool) -> None:
        if with_default:
            got = self.table.pop(key, "default")
            assert typed({0: got}) == typed({0: self.model.pop(key, "default")})
        else:
            error = None if key in self.model else KeyError
            got = self.expect(lambda: self.table.pop(key), error)
            if error is None:
                assert typed({0: got}) == typed({0: self.model.pop(key)})

    @rule(key=st.one_of(KEYS, BAD_KEYS), fn=FNS, default=VALUES)
    def update(self, key: Any, fn: Callable[[Any], Any], default: Any) -> None:
        error = key_error(key)  # the key is checked first, then fn runs
        if error is None:
            try:
                new = fn(self.model.get(key, default))
            except Exception as raised:
                error = type(raised)
            else:
                error = write_error(key, new, self.model)
        event("update", "ok" if error is None else error.__name__)
        got = self.expect(lambda: self.table.update(key, fn, default), error)
        if error is None:
            self.model[key] = new
            assert typed({0: got}) == typed({0: new})

    @rule(key=BAD_KEYS)
    def bad_key_lookup(self, key: Any) -> None:
        with pytest.raises(TypeError):
            self.table.get(key)

    @invariant()
    def same_contents(self) -> None:
        assert typed(self.table.snapshot()) == typed(self.model)
        assert len(self.table) == len(self.model)

    def teardown(self) -> None:
        assert sorted(self.table.keys(), key=repr) == sorted(self.model, key=repr)
        assert typed(dict(self.table.items())) == typed(self.model)


#: Examples per way; each runs up to STEPS operations.
EXAMPLES = {"ctypes": 100, "queue": 50, "manager": 50, "redis": 50}
STEPS = 40


@ways()
def test_behaves_like_a_dict(way: SharedDict, way_name: str) -> None:
    # Hypothesis caches the rules of each machine class for good: a class
    # made per test would keep its table alive (and leak its semaphores).
    TableMachine.table = way
    try:
        run_state_machine_as_test(
            TableMachine,
            settings=settings(
                max_examples=EXAMPLES[way_name],
                stateful_step_count=STEPS,
                deadline=None,
                database=None,  # no .hypothesis/ directory in the work tree
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    finally:
        del TableMachine.table


# RedisDict: update is a compare-and-set, retried; from anywhere.

#: ``argv[1]`` updates of "a" in the RedisDict named by SHMREF_TABLE (url, name).
CONNECTED_UPDATES = """
import os, sys
from shmref.table import RedisDict, increment
url, name = os.environ["SHMREF_TABLE"].split(" ")
with RedisDict.connect(url, name, timeout=60) as table:
    for _ in range(int(sys.argv[1])):
        table.update("a", increment, 0)
"""


def test_redis_updates_exact_from_spawned_children_and_a_connected_interpreter(
    redis_url: str,
) -> None:
    n = 500
    ctx = multiprocessing.get_context("spawn")
    with RedisDict(url=redis_url, **LIMITS) as table:
        # The URL holds the password: in the environment, not on a command line.
        other = subprocess.Popen(
            [sys.executable, "-c", CONNECTED_UPDATES, str(n)],
            cwd=Path(__file__).parent.parent,
            env={**os.environ, "SHMREF_TABLE": f"{table.url} {table.name}"},
        )
        try:
            run_children(ctx, update_worker, table, ["a"], n, count=2)
        finally:
            assert other.wait(JOIN) == 0
        assert table.snapshot() == {"a": 3 * n}


def test_redis_update_runs_fn_again_after_another_write(redis_url: str) -> None:
    with RedisDict(url=redis_url, timeout=0.3, **LIMITS) as table:
        other = RedisDict.connect(table.url, table.name)
        given: list[int] = []

        def interfere_once(value: int) -> int:
            given.append(value)
            if len(given) == 1:
                other["n"] = 10  # written between update's read and its write
            return value + 1

        assert table.update("n", interfere_once, 0) == 11
        assert given == [0, 10]  # fn saw the value the write left, and ran again

        def always_interfere(value: int) -> int:
            other["n"] = value + 100
            return value + 1

        start = time.monotonic()
        with pytest.raises(TimeoutError):
            table.update("n", always_interfere, 0)
        assert time.monotonic() - start < 5
        assert table["n"] % 100 == 11  # the other handle's writes only
        other.close()


def test_redis_any_callable_and_default_stay_in_the_caller(redis_url: str) -> None:
    with RedisDict(url=redis_url, **LIMITS) as table:
        # As in the ctypes way: fn runs here, and default is never sent.
        assert table.update("n", lambda n: n + 1, 0) == 1
        assert table.update("n", increment, multiprocessing.Lock()) == 2
