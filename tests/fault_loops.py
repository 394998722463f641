"""What the fault suite's workers do: one loop of calls per primitive x way.

``tests/test_faults.py`` kills a worker running a loop at random moments and
interrupts the loop in the main thread; ``docs/guarantees.md`` lists the
ways these cover. No test framework here, so the docs build can read it.
Keys are ``primitive-way``, as in ``tests/ways_<primitive>.py``.
"""

from __future__ import annotations

import array
import ctypes
import functools
import queue
from collections.abc import Callable
from multiprocessing.context import BaseContext
from typing import Any, NamedTuple

from shmref.arrays import CtypesArray, ManagerArray, QueueArray, RedisArray
from shmref.channel import CtypesChannel, ManagerChannel, QueueChannel, RedisChannel
from shmref.counter import (
    CtypesCounter,
    ManagerCounter,
    QueueCounter,
    RedisCounter,
    SlotCounter,
)
from shmref.metrics import CtypesMetrics, ManagerMetrics, QueueMetrics, RedisMetrics
from shmref.owner import Owner
from shmref.server import Server
from shmref.table import CtypesDict, ManagerDict, QueueDict, RedisDict
from shmref.value import CtypesValue, ManagerValue, QueueValue, RedisValue
from tests import redis_server

#: The timeout of every handle made here.
TIMEOUT = 3.0


def link(handle: Any) -> Owner | Server | None:
    """The handle's owner client or server handle, if it has one."""
    for value in vars(handle).values():
        if isinstance(value, (Owner, Server)):
            return value
    return None


def _counter_loop(counter: CtypesCounter, done: Any, started: Any) -> None:
    started.set()
    while True:
        counter.add(1)
        done.value += 1  # only this process writes it


def repeat(name: str, handle: Any, done: Any, started: Any) -> None:
    """Make the state 1, 2, 3, ... with ``LOOPS[name].call``; ``done`` is the last one made."""
    call = LOOPS[name].call
    started.set()
    n = done.value
    while True:
        n += 1
        call(handle, n)
        done.value = n


#: Items of the array the array loop rewrites whole: a copy (512 KiB) about
#: as long as making its payload, so that kills often cut it.
ITEMS = 1 << 16


def _items(n: int) -> array.array[int]:
    return array.array("q", [n]) * ITEMS


def _array(ctx: BaseContext, segment: bool) -> CtypesArray:
    return CtypesArray("q", ITEMS, segment=segment, ctx=ctx, timeout=TIMEOUT)


def _board(ctx: BaseContext, sync: str) -> CtypesMetrics:
    return CtypesMetrics(1, ("completed", "errors"), sync=sync, ctx=ctx, timeout=TIMEOUT)


def _table_values(table: Any) -> set[int]:
    entries = table.snapshot()
    assert set(entries) <= {"k", "tmp"}, entries
    # Lookups agree: CtypesDict answers them from this process's read cache,
    # in which a take-over's repair must leave nothing stale.
    looked_up = {key: table.get(key) for key in ("k", "tmp")}
    assert looked_up == {key: entries.get(key) for key in ("k", "tmp")}, (looked_up, entries)
    if isinstance(table, CtypesDict):
        # The table's own bookkeeping must agree with what it holds. (A
        # Manager server may still be running a killed client's last
        # request, in a thread of its own, between two calls: len() is not
        # compared with a snapshot taken by another call.)
        assert len(table) == len(entries) == table._occupied(), entries
    return set(entries.values())


def _table_call(table: Any, n: int) -> None:
    table["tmp"] = n  # a new entry,
    table["k"] = n  # a store over an entry,
    del table["tmp"]  # a removal


class Loop(NamedTuple):
    """A worker's loop of calls, and how the parent looks at and moves the state."""

    make: Callable[[BaseContext], Any]
    values: Callable[[Any], set[int]]  # the distinct values the state holds
    call: Callable[[Any, int], None]  # one call that makes the state n
    #: The worker (handle, done, started), where not :func:`repeat` of ``call``.
    target: Callable[..., None] | None = None
    #: A metrics row has one writer process: after a kill the parent only
    #: reads, and the next worker claims the row.
    one_writer: bool = False
    #: The internal locks, which an interrupt must not leave taken.
    locks: Callable[[Any], list[Any]] = lambda handle: [handle._holder.lock]
    #: Whether the killed worker was inside a call (its lock's record names
    #: it); None where nothing in the parent can tell.
    cut: Callable[[Any], bool] | None = lambda handle: handle._holder.record[0] != 0
    #: A Manager server may apply the killed worker's last request (sent
    #: whole) after the parent's next call, in the thread that served it:
    #: the parent waits until that thread has ended or waits in a read
    #: (tests/test_faults.py, _Serving) before it looks.
    late: bool = False


#: Items of the Queue and Manager ways' arrays: 64 KiB a message, which a
#: kill can cut in the middle of its write.
REMOTE_ITEMS = 1 << 13


def _connection_locks(handle: Any) -> list[Any]:
    """The locks of this process's connections to a Queue way's owner (none for a Manager)."""
    peer = link(handle)
    if not isinstance(peer, Owner):
        return []
    return [link.lock for link in [peer._link, *peer._waiting_links] if link is not None]


def _remote_loops(way: str) -> dict[str, Loop]:
    """The Queue or Manager ways: a killed client loses its own connection, nothing else."""
    counter, value, shared, table, board = {
        "queue": (QueueCounter, QueueValue, QueueArray, QueueDict, QueueMetrics),
        "manager": (ManagerCounter, ManagerValue, ManagerArray, ManagerDict, ManagerMetrics),
    }[way]
    remote = functools.partial(Loop, locks=_connection_locks, cut=None, late=way == "manager")
    return {
        f"counter-{way}": remote(
            lambda ctx: counter(ctx=ctx, timeout=TIMEOUT),
            lambda c: {c.get()},
            lambda c, n: c.add(n - c.get()),
        ),
        f"value-{way}": remote(
            lambda ctx: value(ctypes.c_int64, 0, ctx=ctx, timeout=TIMEOUT),
            lambda v: {v.get()},
            lambda v, n: v.set(n),
        ),
        f"arrays-{way}": remote(
            lambda ctx: shared("q", REMOTE_ITEMS, ctx=ctx, timeout=TIMEOUT),
            lambda a: set(a.read()),
            lambda a, n: a.write(array.array("q", [n]) * REMOTE_ITEMS),
        ),
        f"table-{way}": remote(
            lambda ctx: table(capacity=8, ctx=ctx, timeout=TIMEOUT),
            _table_values,
            _table_call,
        ),
        f"metrics-{way}": remote(
            lambda ctx: board(1, ("completed", "errors"), ctx=ctx, timeout=TIMEOUT),
            lambda b: set(b.snapshot()[0].values()),
            lambda b, n: b.set(0, completed=n, errors=n),
        ),
    }


def _taken(channel: Any) -> list[bytes]:
    """Every message the channel holds, taken out (none: an empty list)."""
    try:
        return list(channel.get_many(channel.capacity, timeout=0.0))
    except queue.Empty:
        return []


def _channel_values(channel: Any) -> set[int]:
    """The messages the channel holds (left in it), once every other slot is shown free.

    A slot lost to a killed or interrupted call would make the fill raise
    ``queue.Full``.
    """
    held = _taken(channel)
    fill = held + [b"-1"] * (channel.capacity - len(held))
    channel.put_many(fill, timeout=TIMEOUT)
    assert _taken(channel) == fill
    if held:
        channel.put_many(held, timeout=TIMEOUT)
    return {int(m) for m in held}


def _channel_call(channel: Any, n: int) -> None:
    _taken(channel)  # what the last call put: a get,
    channel.put(b"%d" % n, timeout=TIMEOUT)  # and a put


def _channel(kind: Any, ctx: BaseContext) -> Any:
    return kind(capacity=4, max_size=64, ctx=ctx, timeout=TIMEOUT)


def _channel_loops() -> dict[str, Loop]:
    """A get and a put per call: the channel holds the last call's message.

    The Queue way's owner applies what a dead client sent whole before it
    answers anyone's next request; a Manager server may apply it later, in
    the thread that serves the dead client (``late``).
    """
    return {
        **{
            f"channel-{way}": Loop(
                functools.partial(_channel, kind),
                _channel_values,
                _channel_call,
                locks=_connection_locks,
                cut=None,
                late=way == "manager",
            )
            for way, kind in (("queue", QueueChannel), ("manager", ManagerChannel))
        },
        # A message a killed getter's request had taken is gone with it: the
        # channel then holds none, which the invariant allows.
        "channel-redis": Loop(
            lambda ctx: RedisChannel(4, 64, url=redis_server.url(), timeout=TIMEOUT),
            _channel_values,
            _channel_call,
            locks=lambda channel: [],
            cut=None,
        ),
        "channel-ctypes": Loop(
            functools.partial(_channel, CtypesChannel),
            _channel_values,
            _channel_call,
            locks=lambda channel: [channel._put_holder.lock, channel._get_holder.lock],
            cut=lambda channel: any(
                h.record[0] != 0 for h in (channel._put_holder, channel._get_holder)
            ),
        ),
    }


LOOPS: dict[str, Loop] = {
    "counter-ctypes": Loop(
        lambda ctx: CtypesCounter(ctx=ctx, timeout=TIMEOUT),
        lambda counter: {counter.get()},
        lambda counter, n: counter.add(n - counter.get()),
        target=_counter_loop,  # add(1), as counters are used
    ),
    # Lock-free adds: a killed writer's slot keeps what it added. (A
    # process killed while it claims its slot leaves the claim lock to be
    # taken over: not hit here, where each worker claims before it counts.)
    "counter-slot": Loop(
        lambda ctx: SlotCounter(ctx=ctx, timeout=TIMEOUT),
        lambda counter: {counter.get()},
        lambda counter, n: counter.add(n - counter.get()),
        target=_counter_loop,
        locks=lambda counter: [counter._claims.lock],
        cut=None,
    ),
    "value-ctypes": Loop(
        lambda ctx: CtypesValue(ctypes.c_int64, 0, ctx=ctx, timeout=TIMEOUT),
        lambda value: {value.get()},
        lambda value, n: value.set(n),
    ),
    # The items the killed writer was copying may be part old, part new
    # (no undo record): each item must still be old or new.
    **{
        f"arrays-{way}": Loop(
            functools.partial(_array, segment=way == "segment"),
            lambda shared: set(shared.read()),
            lambda shared, n: shared.write(_items(n)),
        )
        for way in ("ctypes", "segment")
    },
    # The journal undoes a cut store and finishes a cut removal.
    "table-ctypes": Loop(
        lambda ctx: CtypesDict(capacity=8, ctx=ctx, timeout=TIMEOUT),
        _table_values,
        _table_call,
    ),
    # Each field of the cut update: old or new.
    **{
        "metrics-ctypes" if sync == "seqlock" else "metrics-ctypes-lock": Loop(
            functools.partial(_board, sync=sync),
            lambda board: set(board.snapshot()[0].values()),
            lambda board, n: board.set(0, completed=n, errors=n),
            one_writer=True,
            locks=lambda board: [h.lock for h in [board._claims, *(board._row_holders or [])]],
            cut=(
                (lambda board: board._cells[0] & 1 == 1)  # mid-update
                if sync == "seqlock"
                else (lambda board: board._row_holders[0].record[0] != 0)
            ),
        )
        for sync in ("seqlock", "lock")
    },
    # A Redis server applies a request whole or not at all, and a killed
    # client's socket is closed by the kernel: nothing of it is left to hold.
    "counter-redis": Loop(
        lambda ctx: RedisCounter(url=redis_server.url(), timeout=TIMEOUT),
        lambda counter: {counter.get()},
        lambda counter, n: counter.add(n - counter.get()),
        locks=lambda counter: [],
        cut=None,
    ),
    # As the counter: each call is one script, applied whole or not at all.
    "value-redis": Loop(
        lambda ctx: RedisValue(ctypes.c_int64, 0, url=redis_server.url(), timeout=TIMEOUT),
        lambda value: {value.get()},
        lambda value, n: value.set(n),
        locks=lambda value: [],
        cut=None,
    ),
    "arrays-redis": Loop(
        lambda ctx: RedisArray("q", REMOTE_ITEMS, url=redis_server.url(), timeout=TIMEOUT),
        lambda shared: set(shared.read()),
        lambda shared, n: shared.write(array.array("q", [n]) * REMOTE_ITEMS),
        locks=lambda shared: [],
        cut=None,
    ),
    "metrics-redis": Loop(
        lambda ctx: RedisMetrics(
            1, ("completed", "errors"), url=redis_server.url(), timeout=TIMEOUT
        ),
        lambda board: set(board.snapshot()[0].values()),
        lambda board, n: board.set(0, completed=n, errors=n),
        locks=lambda board: [],
        cut=None,
    ),
    "table-redis": Loop(
        lambda ctx: RedisDict(capacity=8, url=redis_server.url(), timeout=TIMEOUT),
        _table_values,
        _table_call,
        locks=lambda table: [],
        cut=None,
    ),
    **_remote_loops("queue"),
    **_remote_loops("manager"),
    **_channel_loops(),
}
