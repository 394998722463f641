"""The contract of shmref.value, once, for every way and start method.

Each test is one clause of the :class:`~shmref.value.Value` contract. It runs
for every way in :data:`FACTORIES` (or the ways :func:`ways` names) under
every start method; a way that cannot keep a clause is marked at its
parameter with the reason. Targets of child processes are module-level so
that spawn and forkserver children can import them.

The lifecycle clauses (a closed handle refuses calls, ``close()`` twice,
``with``, a child's ``close()``, a dead owner or server) are checked for
every primitive by tests/test_lifecycle.py, from tests/ways_value.py.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import multiprocessing
import multiprocessing.connection
import operator
import os
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from multiprocessing.context import BaseContext
from typing import Any

import pytest

from shmref.lifecycle import OwnerGone
from shmref.value import (
    TYPES,
    CtypesValue,
    ManagerValue,
    QueueValue,
    RedisValue,
    Value,
    ValueManager,
    check,
    update_worker,
)
from tests import redis_server
from tests.apparatus_value import exit_in_fn, raise_unpicklable, wait_then_add
from tests.conftest import JOIN, contract, run_children

#: Processes and updates of the counting test: enough to interleave, small
#: enough that a Manager round trip per update stays well under a second.
P, N = 3, 300

FACTORIES: dict[str, Callable[..., Value[Any]]] = {
    "ctypes": lambda ctx, ctype, *a, **kw: CtypesValue(ctype, *a, ctx=ctx, **kw),
    "queue": lambda ctx, ctype, *a, **kw: QueueValue(ctype, *a, ctx=ctx, **kw),
    "manager": lambda ctx, ctype, *a, **kw: ManagerValue(ctype, *a, ctx=ctx, **kw),
    "redis": lambda ctx, ctype, *a, **kw: RedisValue(ctype, *a, url=redis_server.url(), **kw),
}
OWNED_WAYS = ("queue", "manager")  # ways with an owner process or server

#: Per type: (values and what get() returns after set(value)),
#: (a value the type cannot hold, the error it raises).
CASES: dict[str, tuple[list[tuple[Any, Any]], list[tuple[Any, type[Exception]]]]] = {
    "c_int": (
        [(2**31 - 1, 2**31 - 1), (-(2**31), -(2**31)), (7, 7)],
        [(2**31, OverflowError), (-(2**31) - 1, OverflowError), (1.5, TypeError),
         ("1", TypeError), (True, TypeError), (None, TypeError)],
    ),
    "c_long": (
        [(2 ** (8 * ctypes.sizeof(ctypes.c_long) - 1) - 1,) * 2, (-3, -3)],
        [(2 ** (8 * ctypes.sizeof(ctypes.c_long) - 1), OverflowError), (2.0, TypeError)],
    ),
    "c_longlong": (
        [(2**63 - 1, 2**63 - 1), (-(2**63), -(2**63))],
        [(2**63, OverflowError), (-(2**63) - 1, OverflowError), (1.5, TypeError)],
    ),
    "c_float": (
        [(0.1, 0.10000000149011612), (3, 3.0), (-2.5, -2.5), (math.inf, math.inf)],
        [(3.5e38, OverflowError), (10**400, OverflowError), ("1.0", TypeError),
         (False, TypeError)],
    ),
    "c_double": (
        [(0.1, 0.1), (1e308, 1e308), (2**53, 9007199254740992.0)],
        [(10**400, OverflowError), (b"1", TypeError), (1j, TypeError)],
    ),
    "c_bool": (
        [(True, True), (False, False)],
        [(1, TypeError), ("yes", TypeError), (None, TypeError)],
    ),
    "c_char": (
        [(b"a", b"a"), (b"\x00", b"\x00"), (b"\xff", b"\xff")],
        [("a", TypeError), (b"ab", ValueError), (b"", ValueError), (97, TypeError)],
    ),
}  # fmt: skip

#: Per type: update(fn, *args) from a valid start to a result the type
#: cannot hold, and the error.
BAD_RESULTS: dict[str, tuple[Any, Callable[..., Any], tuple[Any, ...], type[Exception]]] = {
    "c_int": (2**31 - 1, operator.add, (1,), OverflowError),
    "c_long": (
        2 ** (8 * ctypes.sizeof(ctypes.c_long) - 1) - 1, operator.add, (1,), OverflowError
    ),
    "c_longlong": (2**63 - 1, operator.add, (1,), OverflowError),
    "c_float": (3e38, operator.add, (1e38,), OverflowError),
    "c_double": (1.5, str, (), TypeError),
    "c_bool": (True, operator.add, (True,), TypeError),  # 2
    "c_char": (b"a", operator.add, (b"b",), ValueError),  # b"ab"
}  # fmt: skip


def ways(
    *names: str, cannot: dict[str, str] | None = None, skip: dict[str, str] | None = None
) -> pytest.MarkDecorator:
    """Run a contract clause for the ways ``names`` (default: all) x every start method."""
    return contract(names or FACTORIES, cannot=cannot, skip=skip)


@pytest.fixture
def make(way_name: str, ctx: BaseContext) -> Iterator[Callable[..., Any]]:
    """Build values of the way under test; all are closed afterwards."""
    made: list[Value[Any]] = []

    def make(ctype: Any = ctypes.c_longlong, *args: Any, **kwargs: Any) -> Any:
        value = FACTORIES[way_name](ctx, ctype, *args, **kwargs)
        made.append(value)
        return value

    yield make
    for value in made:
        value.close()
    made.clear()


@pytest.fixture
def way(make: Callable[..., Any]) -> Any:
    """A ``c_longlong`` value of the way under test, starting at 0."""
    return make()


# Child process targets.


def report_and_set(value: Value[Any], conn: Any, new: Any) -> None:
    conn.send(value.get())
    conn.close()
    value.set(new)
    value.close()


def read_in_child(ctx: BaseContext, value: Value[Any], new: Any) -> Any:
    """What a child's get() returns; the child then sets ``new``."""
    reader, writer = ctx.Pipe(duplex=False)
    with reader:
        process = ctx.Process(target=report_and_set, args=(value, writer, new))
        process.start()
        writer.close()
        assert reader.poll(JOIN), "the child sent no value"
        seen = reader.recv()
        process.join(JOIN)
    assert process.exitcode == 0
    process.close()
    return seen


def fail(current: Any) -> Any:
    raise KeyError("fn failed")


def yielding_add(current: int, n: int) -> int:
    """``current + n``, letting other threads run in between (GIL released)."""
    time.sleep(0)
    return current + n


def yielding_updates(value: Value[int], n: int, barrier: Any) -> None:
    barrier.wait(JOIN)
    for _ in range(n):
        value.update(yielding_add, 1)
    value.close()


# Sharing between processes.


@ways()
def test_updates_from_processes_are_atomic(way: Value[int], ctx: BaseContext) -> None:
    barrier = ctx.Barrier(P + 1)
    processes = [ctx.Process(target=update_worker, args=(way, N, barrier)) for _ in range(P)]
    for process in processes:
        process.start()
    barrier.wait(JOIN)
    for _ in range(N):
        way.update(operator.add, 1)
    barrier.wait(JOIN)
    for process in processes:
        process.join(JOIN)
    assert [process.exitcode for process in processes] == [0] * P
    for process in processes:
        process.close()
    assert way.get() == (P + 1) * N


@ways()
def test_update_is_atomic_while_fn_lets_others_run(way: Value[int], ctx: BaseContext) -> None:
    # A Manager serves each connection in a thread: without a lock around
    # fn, another process's update could run between fn's read and store.
    n = 100
    barrier = ctx.Barrier(P)
    run_children(ctx, yielding_updates, way, n, barrier, count=P)
    assert way.get() == P * n


@ways()
def test_child_reads_confirmed_set_and_parent_reads_child_set(
    make: Callable[..., Any], ctx: BaseContext
) -> None:
    value = make(ctypes.c_double)
    value.set(2.5)
    assert value.get() == 2.5
    assert read_in_child(ctx, value, 4.25) == 2.5
    assert value.get() == 4.25


@ways()
def test_child_reads_unconfirmed_set(way: Value[int], ctx: BaseContext) -> None:
    way.set(5)
    assert read_in_child(ctx, way, 6) == 5


# Types: what each holds, and what it refuses with the value unchanged.


@pytest.mark.parametrize("type_name", list(CASES))
@ways()
def test_type_holds_its_values_and_refuses_others(
    make: Callable[..., Any], type_name: str
) -> None:
    ctype = TYPES[type_name]
    good, bad = CASES[type_name]
    value = make(ctype)
    assert value.get() == ctype().value  # the default is the type's zero
    for stored, expected in good:
        value.set(stored)
        got = value.get()
        assert (got, type(got)) == (expected, type(expected))
    last = good[-1][1]
    for wrong, error in bad:
        with pytest.raises(error):
            value.set(wrong)
        assert value.get() == last
        if wrong is not None:  # None asks for the default
            with pytest.raises(error):
                make(ctype, wrong)  # nor as the initial value
    # Nor as the result of update(fn).
    start, fn, args, error = BAD_RESULTS[type_name]
    value.set(start)
    before = value.get()
    with pytest.raises(error):
        value.update(fn, *args)
    assert value.get() == before


@ways()
def test_update_returns_the_stored_value(make: Callable[..., Any]) -> None:
    value = make(ctypes.c_float, 1.0)
    assert value.update(operator.add, 0.1) == 1.100000023841858
    assert value.get() == 1.100000023841858
    flag = make(ctypes.c_bool)
    assert flag.update(operator.not_) is True
    assert flag.get() is True


@ways(*OWNED_WAYS)
def test_update_fn_must_be_importable_by_the_owner(way: Value[int]) -> None:
    way.set(3)
    with pytest.raises(TypeError, match="module-level function"):
        way.update(lambda current: current + 1)
    with pytest.raises(TypeError):
        way.update(3)  # type: ignore[arg-type]
    # Found in this process, missing in the owner, which started before it existed.
    module = types.ModuleType("shmref_test_not_in_owner")
    exec("def bump(current):\n    return current + 1\n", module.__dict__)
    sys.modules[module.__name__] = module
    try:
        with pytest.raises(TypeError, match="cannot import"):
            way.update(module.bump)
    finally:
        del sys.modules[module.__name__]
    assert way.get() == 3
    assert way.update(operator.add, 1) == 4  # the owner is still serving


def test_ctypes_update_runs_fn_in_the_caller(ctx: BaseContext) -> None:
    with CtypesValue(ctypes.c_int, 3, ctx=ctx) as value:
        assert value.update(lambda current: current * 2) == 6


def test_check_is_what_ctypes_stores() -> None:
    # Every good value is stored by ctypes as check() says.
    for type_name, (good, _) in CASES.items():
        for stored, expected in good:
            assert check(TYPES[type_name], stored) == expected
            assert TYPES[type_name](stored).value == expected
    # ...and ctypes wraps what check() refuses.
    assert ctypes.c_int(2**31).value == -(2**31)


# One exception contract: the same bad input, the same error, nothing changed.

#: Calls on a c_longlong holding 7, and the error every way raises for them.
BAD_CALLS: dict[str, tuple[Callable[[Value[Any]], object], type[BaseException]]] = {
    "set('7')": (lambda v: v.set("7"), TypeError),
    "set(1.5)": (lambda v: v.set(1.5), TypeError),
    "set(True)": (lambda v: v.set(True), TypeError),
    "set(None)": (lambda v: v.set(None), TypeError),
    "set(2**63)": (lambda v: v.set(2**63), OverflowError),
    "update(3)": (lambda v: v.update(3), TypeError),  # type: ignore[arg-type]
    "update(add)": (lambda v: v.update(operator.add), TypeError),  # fn's own TypeError
    "update(add, 2**63)": (lambda v: v.update(operator.add, 2**63), OverflowError),
    "update(str)": (lambda v: v.update(str), TypeError),  # "7" is no int
    "update(fail)": (lambda v: v.update(fail), KeyError),
    "update(raise_unpicklable)": (lambda v: v.update(raise_unpicklable), RuntimeError),
    "update(exit_in_fn)": (lambda v: v.update(exit_in_fn), SystemExit),
}

#: Constructor arguments every way refuses, before it starts anything.
BAD_ARGUMENTS: dict[str, tuple[tuple[Any, ...], dict[str, Any], type[Exception]]] = {
    "ctype c_uint": ((ctypes.c_uint,), {}, TypeError),
    "ctype 'c_int'": (("c_int",), {}, TypeError),
    "value 2**63": ((ctypes.c_longlong, 2**63), {}, OverflowError),
    "value '1'": ((ctypes.c_longlong, "1"), {}, TypeError),
    "timeout True": ((ctypes.c_longlong,), {"timeout": True}, TypeError),
    "timeout '1'": ((ctypes.c_longlong,), {"timeout": "1"}, TypeError),
    "timeout nan": ((ctypes.c_longlong,), {"timeout": math.nan}, ValueError),
    "timeout -1": ((ctypes.c_longlong,), {"timeout": -1}, ValueError),
}


@ways()
def test_bad_calls_raise_the_same_error_and_change_nothing(make: Callable[..., Any]) -> None:
    value = make(ctypes.c_longlong, 7)
    raised: dict[str, type[BaseException] | None] = {}
    for name, (call, _) in BAD_CALLS.items():
        try:
            call(value)
        except BaseException as error:  # SystemExit too: fn's, raised here
            raised[name] = type(error)
        else:
            raised[name] = None
        assert value.get() == 7, name
    assert raised == {name: error for name, (_, error) in BAD_CALLS.items()}
    assert value.update(operator.add, 1) == 8  # the owner or server still serves


@ways()
def test_bad_arguments_raise_the_same_error_and_start_nothing(
    make: Callable[..., Any],
) -> None:
    before = multiprocessing.active_children()
    raised: dict[str, type[Exception] | None] = {}
    for name, (args, kwargs, _) in BAD_ARGUMENTS.items():
        try:
            make(*args, **kwargs)
        except Exception as error:
            raised[name] = type(error)
        else:
            raised[name] = None
    assert raised == {name: error for name, (_, _, error) in BAD_ARGUMENTS.items()}
    assert multiprocessing.active_children() == before


@pytest.mark.parametrize("timeout", [None, math.inf, 1e9], ids=["None", "inf", "1e9"])
@ways()
def test_long_timeouts_mean_as_long_as_it_takes(make: Callable[..., Any], timeout: Any) -> None:
    # Regression (issue 9): inf and 1e9 raised OverflowError in the Queue way.
    value = make(ctypes.c_longlong, 1, timeout=timeout)
    value.set(2)
    assert value.update(operator.add, 1) == 3
    assert value.get() == 3


@ways()
def test_numpy_scalars_are_ints_floats_and_bools(make: Callable[..., Any]) -> None:
    numpy = pytest.importorskip("numpy", reason="pip install numpy")
    whole = make(ctypes.c_longlong, numpy.int64(5))
    assert whole.get() == 5
    whole.set(numpy.int32(-3))
    result = whole.update(operator.add, numpy.int64(2))
    assert (result, type(result)) == (-1, int)
    for wrong, error in (
        (numpy.float64(1.0), TypeError),
        (numpy.bool_(True), TypeError),
        (numpy.uint64(2**64 - 1), OverflowError),
    ):
        with pytest.raises(error):
            whole.set(wrong)
    got = whole.get()
    assert (got, type(got)) == (-1, int)
    real = make(ctypes.c_double, numpy.float32(0.5))
    real.set(numpy.int16(3))
    assert real.get() == 3.0
    real.set(numpy.float64(2.25))
    got = real.get()
    assert (got, type(got)) == (2.25, float)
    flag = make(ctypes.c_bool, numpy.bool_(True))
    flag.set(numpy.bool_(False))
    got = flag.get()
    assert (got, type(got)) == (False, bool)
    with pytest.raises(TypeError):
        flag.set(numpy.int64(1))


def test_check_keeps_numpy_values_to_the_range() -> None:
    numpy = pytest.importorskip("numpy", reason="pip install numpy")
    assert check(ctypes.c_int, numpy.int64(2**31 - 1)) == 2**31 - 1
    for ctype, wrong in (
        (ctypes.c_int, numpy.int64(2**31)),
        (ctypes.c_longlong, numpy.uint64(2**63)),
        (ctypes.c_float, numpy.float64(3.5e38)),
    ):
        with pytest.raises(OverflowError):
            check(ctype, wrong)


@ways()
def test_update_fn_raising_system_exit_is_raised_in_the_caller(
    make: Callable[..., Any],
) -> None:
    # Regression (issue 9): the Queue owner exited (every later call timed
    # out), and the Manager handle got EOFError, then BrokenPipeError.
    value = make(ctypes.c_longlong, 3, timeout=5)
    with pytest.raises(SystemExit):
        value.update(exit_in_fn)
    assert value.get() == 3
    assert value.update(operator.add, 1) == 4


@ways()
def test_unpicklable_error_of_fn_is_one_runtime_error(way: Value[int]) -> None:
    # Regression (issue 9): ctypes raised the original, Manager RemoteError.
    with pytest.raises(RuntimeError, match="Unpicklable: no copy"):
        way.update(raise_unpicklable)
    assert way.get() == 0


# Timeouts.


def test_ctypes_times_out_when_lock_is_held(ctx: BaseContext) -> None:
    with CtypesValue(ctypes.c_int, 1, ctx=ctx, timeout=0.2) as value:
        # As if another, live, process held it (another thread: not this one).
        holder = threading.Thread(target=value._lock.acquire)
        holder.start()
        holder.join()
        value._record[0] = os.getpid()
        try:
            for call in (lambda: value.set(2), lambda: value.update(operator.add, 1)):
                with pytest.raises(TimeoutError):
                    call()
            assert value.get() == 1  # get takes no lock
        finally:
            value._record[0] = 0
            value._lock.release()
        assert value.get() == 1


def test_manager_set_waits_for_a_running_update_at_most_timeout(ctx: BaseContext) -> None:
    with ctx.Manager() as events, ManagerValue(ctypes.c_int, 0, ctx=ctx, timeout=0.3) as value:
        entered, release = events.Event(), events.Event()
        updater = threading.Thread(target=value.update, args=(wait_then_add, 1, entered, release))
        updater.start()
        try:
            assert entered.wait(JOIN), "update never ran fn"
            start = time.monotonic()
            with pytest.raises(TimeoutError, match="lock"):
                value.set(100)
            assert 0.25 <= time.monotonic() - start < 10
        finally:
            release.set()
            updater.join(JOIN)
        assert value.get() == 1  # the set that timed out changed nothing


@ways("queue")
def test_queue_owner_outlives_an_idle_creator(way: Any) -> None:
    # An idle owner checks once a second that its creator lives; under
    # forkserver its parent process is the fork server, not the creator.
    sentinel = way._owner._process.sentinel
    assert not multiprocessing.connection.wait([sentinel], timeout=1.5)
    way.set(2)
    assert way.get() == 2


def test_manager_values_share_a_manager(ctx: BaseContext) -> None:
    manager = ValueManager(ctx=ctx)
    manager.start()
    try:
        a = ManagerValue(ctypes.c_int, 1, manager=manager)
        b = ManagerValue(ctypes.c_char, b"b", manager=manager)
        run_children(ctx, update_worker, a, 5)
        assert (a.get(), b.get()) == (6, b"b")
        a.close()
        assert b.get() == b"b"  # closing a value it did not start left the server up
        b.close()
    finally:
        manager.shutdown()


# Regressions of issue 9.


def sets_then_close(start_method: str, conn: Any) -> None:
    """In a child: kill a QueueValue's owner, set 20000 times, report how long close() took."""
    value = QueueValue(ctypes.c_double, 0.0, ctx=multiprocessing.get_context(start_method))
    owner = value._owner._process
    owner.kill()
    owner.join(JOIN)
    for i in range(20_000):  # far more than a pipe holds (the feeder of old blocked)
        with contextlib.suppress(OwnerGone):  # the owner is gone: the set says so
            value.set(float(i))
    start = time.monotonic()
    value.close()
    conn.send(time.monotonic() - start)
    conn.close()


def test_queue_close_returns_when_owner_died_after_many_sets(
    ctx: BaseContext, start_method: str
) -> None:
    # close() used to join the feeder thread, blocked for ever on the full
    # pipe of a dead owner. In a child, so that a hang cannot hang pytest.
    reader, writer = ctx.Pipe(duplex=False)
    child = ctx.Process(target=sets_then_close, args=(start_method, writer))
    child.start()
    writer.close()
    try:
        assert reader.poll(JOIN), "close() did not return"
        assert reader.recv() < 5
        child.join(JOIN)
        assert child.exitcode == 0
    finally:
        if child.is_alive():
            child.kill()
            child.join()
        child.close()
        reader.close()


@ways()
def test_set_that_returned_is_not_lost_to_a_running_update(
    way: Value[int], ctx: BaseContext
) -> None:
    # ManagerValue.set took no lock: set(100) returned while update's fn ran,
    # then update stored fn's result, computed from the value before the set.
    with ctx.Manager() as events:
        entered, release = events.Event(), events.Event()
        returned = threading.Event()
        errors: list[BaseException] = []

        def update() -> None:
            try:
                way.update(wait_then_add, 1, entered, release)
            except BaseException as error:
                errors.append(error)

        def set_100() -> None:
            try:
                way.set(100)
            except BaseException as error:
                errors.append(error)
            returned.set()
            release.set()  # fn returns only after this set has returned

        updater = threading.Thread(target=update)
        updater.start()
        assert entered.wait(JOIN), "update never ran fn"
        setter = threading.Thread(target=set_100)
        setter.start()
        # The ctypes and Manager ways' set waits for the update in progress,
        # so it cannot return before fn does: release fn after a while.
        returned.wait(0.5)
        release.set()
        updater.join(JOIN)
        setter.join(JOIN)
        assert not errors
        # Lost, the set would leave 1. The ctypes, Queue and Manager ways'
        # set waits for the update, then stores 100; RedisValue's set goes
        # first and the update, finding the version changed, runs fn again
        # on 100.
        assert way.get() in (100, 101)


# RedisValue's update: optimistic, fn in the caller, retried when the value changed.


def test_redis_update_runs_fn_again_when_the_value_changed_under_it(redis_url: str) -> None:
    with RedisValue(ctypes.c_longlong, 1, url=redis_url) as value:
        other: RedisValue[int] = RedisValue.connect(value.url, value.name)
        seen: list[int] = []

        def double(current: int) -> int:  # a closure: fn runs in the caller
            seen.append(current)
            if len(seen) == 1:
                other.set(10)  # another handle stores while fn runs
            return current * 2

        assert value.update(double) == 20
        assert seen == [1, 10]
        assert value.get() == 20
        other.close()


def test_redis_update_gives_up_after_its_timeout(redis_url: str) -> None:
    with RedisValue(ctypes.c_int, 1, url=redis_url, timeout=0.3) as value:
        other: RedisValue[int] = RedisValue.connect(value.url, value.name)
        calls = 0

        def always_overtaken(current: int) -> int:
            nonlocal calls
            calls += 1
            other.set(100 + calls)  # every try finds the value changed
            return -1

        start = time.monotonic()
        with pytest.raises(TimeoutError, match="changed under fn"):
            value.update(always_overtaken)
        assert 0.3 <= time.monotonic() - start < 10
        assert value.get() == 100 + calls  # never -1
        other.close()


def test_redis_connect_gives_the_type_and_value(redis_url: str) -> None:
    with RedisValue(ctypes.c_char, b"\xff", url=redis_url) as value:
        with RedisValue.connect(value.url, value.name) as other:
            assert (other.ctype, other.get()) == (ctypes.c_char, b"\xff")
            other.set(b"\x00")
        assert value.get() == b"\x00"
