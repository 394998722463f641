"""The contract of shmref.value, once, for every way and start method.

Each test is one clause of the :class:`~shmref.value.Value` contract. It runs
for every way in :data:`FACTORIES` (or the ways :func:`ways` names) under
every start method; a way that cannot keep a clause is marked at its
parameter with the reason. Targets of child processes are module-level so
that spawn and forkserver children can import them.
"""

from __future__ import annotations

import ctypes
import math
import multiprocessing
import operator
import sys
import time
import types
from collections.abc import Callable, Iterator
from multiprocessing.context import BaseContext
from typing import Any

import pytest

from shmref.value import (
    TYPES,
    CtypesValue,
    ManagerValue,
    QueueValue,
    Value,
    ValueManager,
    check,
    update_worker,
)
from tests.conftest import JOIN, contract, run_children

#: Seconds to wait for a child to finish or reply; pytest-timeout is the backstop.
#: Processes and updates of the counting test: enough to interleave, small
#: enough that a Manager round trip per update stays well under a second.
P, N = 3, 300

FACTORIES: dict[str, Callable[..., Value[Any]]] = {
    "ctypes": lambda ctx, ctype, *a, **kw: CtypesValue(ctype, *a, ctx=ctx, **kw),
    "queue": lambda ctx, ctype, *a, **kw: QueueValue(ctype, *a, ctx=ctx, **kw),
    "manager": lambda ctx, ctype, *a, **kw: ManagerValue(ctype, *a, ctx=ctx, **kw),
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


@ways(skip={"queue": "not guaranteed: the child's get can overtake the parent's set"})
def test_child_reads_unconfirmed_set(way: Value[int], ctx: BaseContext) -> None:
    way.set(5)
    assert read_in_child(ctx, way, 6) == 5


@ways()
def test_child_close_keeps_value_open(way: Value[int], ctx: BaseContext) -> None:
    run_children(ctx, update_worker, way, 10)  # update_worker closes the child's handle
    assert way.update(operator.add, 1) == 11


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


@ways()
def test_update_fn_that_raises_leaves_value(way: Value[int]) -> None:
    way.set(3)
    with pytest.raises(KeyError, match="fn failed"):
        way.update(fail)
    assert way.get() == 3


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


def test_unsupported_type_is_refused(ctx: BaseContext) -> None:
    for way in FACTORIES.values():
        with pytest.raises(TypeError, match="unsupported type"):
            way(ctx, ctypes.c_uint)


def test_check_is_what_ctypes_stores() -> None:
    # Every good value is stored by ctypes as check() says.
    for type_name, (good, _) in CASES.items():
        for stored, expected in good:
            assert check(TYPES[type_name], stored) == expected
            assert TYPES[type_name](stored).value == expected
    # ...and ctypes wraps what check() refuses.
    assert ctypes.c_int(2**31).value == -(2**31)


# close() and the context-manager protocol.


@ways()
def test_closed_value_refuses_calls(way: Value[int]) -> None:
    way.set(1)
    way.close()
    with pytest.raises(ValueError, match="closed"):
        way.get()
    with pytest.raises(ValueError, match="closed"):
        way.set(2)
    with pytest.raises(ValueError, match="closed"):
        way.update(operator.add, 1)
    way.close()


@ways()
def test_context_manager_closes(make: Callable[..., Any]) -> None:
    value = make()
    assert isinstance(value, Value)
    with value as entered:
        assert entered is value
        value.set(2)
        assert value.get() == 2
    with pytest.raises(ValueError):
        value.get()


@ways(*OWNED_WAYS)
def test_creator_close_stops_owner(make: Callable[..., Any]) -> None:
    before = {process.pid for process in multiprocessing.active_children()}
    value = make()
    started = {process.pid for process in multiprocessing.active_children()} - before
    assert len(started) == 1
    value.close()
    assert not started & {process.pid for process in multiprocessing.active_children()}


# Timeouts.


def test_queue_calls_time_out_when_owner_is_dead(ctx: BaseContext) -> None:
    value = QueueValue(ctypes.c_int, 1, ctx=ctx, timeout=0.5)
    value._owner.kill()
    value._owner.join(JOIN)
    for call in (value.get, lambda: value.update(operator.add, 1)):
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            call()
        assert 0.45 <= time.monotonic() - start < 10
    value.close()  # cannot stop a dead owner; still releases everything
    with pytest.raises(ValueError):
        value.get()


@pytest.mark.parametrize("start_method", ["forkserver"])
def test_queue_owner_outlives_an_idle_second(ctx: BaseContext) -> None:
    # The owner checks every second that its creator lives; under forkserver
    # its parent is the fork server, which must not count as the creator dying
    # (the other start methods make the creator the parent: nothing to test).
    with QueueValue(ctypes.c_int, 1, ctx=ctx, timeout=5) as value:
        value._owner.join(1.5)  # idle for longer than one check
        assert value._owner.is_alive()
        assert value.get() == 1


def test_ctypes_times_out_when_lock_is_held(ctx: BaseContext) -> None:
    with CtypesValue(ctypes.c_int, 1, ctx=ctx, timeout=0.2) as value:
        value._lock.acquire()
        try:
            for call in (value.get, lambda: value.set(2), lambda: value.update(operator.add, 1)):
                with pytest.raises(TimeoutError):
                    call()
        finally:
            value._lock.release()
        assert value.get() == 1


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
