"""The contract of shmref.channel, once, for every way and start method.

Each test is one clause of the :class:`~shmref.channel.Channel` contract. It
runs for every way in :data:`FACTORIES` (or the ways :func:`ways` names) under
every start method; a way that cannot keep a clause is marked at its
parameter with the reason. Targets of child processes are module-level so
that spawn and forkserver children can import them.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import pickle
import queue
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shmref.channel import (
    Channel,
    ChannelClosed,
    CtypesChannel,
    ManagerChannel,
    PickleChannel,
    QueueChannel,
    RedisChannel,
    numbered,
    receive_worker,
    send_worker,
)
from shmref.lifecycle import OwnerGone
from tests import redis_server
from tests.conftest import JOIN, contract

#: Seconds to wait for a child to finish or report; pytest-timeout is the backstop.
#: Seconds within which close() must have woken a waiting child.
WAKE = 10.0
#: A wait that only close() can end: longer than any test, shorter than for ever.
LONG = 3600.0

#: way id -> callable(ctx, **kwargs) -> a new channel of that way.
FACTORIES: dict[str, Callable[..., Channel]] = {
    "ctypes": lambda ctx, **kw: CtypesChannel(ctx=ctx, **kw),
    "queue": lambda ctx, **kw: QueueChannel(ctx=ctx, **kw),
    "manager": lambda ctx, **kw: ManagerChannel(ctx=ctx, **kw),
    "redis": lambda ctx, **kw: RedisChannel(url=redis_server.url(), **kw),
}

NO_DRAIN = "the messages live in the owner or server process, which the creator's close() stops"
REDIS_NO_DRAIN = "the messages are keys on the server, which the creator's close() deletes"


def ways(*names: str, cannot: dict[str, str] | None = None) -> pytest.MarkDecorator:
    """Run a contract clause for the ways ``names`` (default: all) x every start method."""
    return contract(names or FACTORIES, cannot=cannot)


@pytest.fixture
def make(way_name: str, ctx: BaseContext) -> Iterator[Callable[..., Any]]:
    """Build channels of the way under test; all are closed afterwards."""
    made: list[Channel] = []

    def make(**kwargs: Any) -> Any:
        channel = FACTORIES[way_name](ctx, **kwargs)
        made.append(channel)
        return channel

    yield make
    for channel in made:
        channel.close()
    made.clear()


@pytest.fixture
def way(make: Callable[..., Any]) -> Any:
    """A channel of the way under test: 4 messages of up to 32 bytes."""
    return make(capacity=4, max_size=32)


def start(ctx: BaseContext, target: Callable[..., None], *args: Any) -> Any:
    process = ctx.Process(target=target, args=args)  # type: ignore[attr-defined]
    process.start()
    return process


def join(*processes: Any) -> None:
    for process in processes:
        process.join(JOIN)
    assert [process.exitcode for process in processes] == [0] * len(processes)
    for process in processes:
        process.close()


def receive(conn: Any, timeout: float = JOIN) -> Any:
    assert conn.poll(timeout), f"no report from the child within {timeout} s"
    return conn.recv()


class Waiter:
    """A thread running ``call``; ``wait_inside()`` returns once it is in ``method``.

    A short poll of the thread's stack, not a sleep: the call has begun (a
    frame of shmref/channel.py named ``method``) and the thread is alive, so
    it waits, or is about to. Whether close() finds it already waiting or
    just before its wait, it must end the same way.
    """

    def __init__(self, call: Callable[[], object], method: str) -> None:
        self.method = method
        self.outcome: list[tuple[bool, object]] = []
        self.thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self.thread.start()

    def _run(self, call: Callable[[], object]) -> None:
        try:
            self.outcome.append((True, call()))
        except BaseException as error:
            self.outcome.append((False, error))

    def _inside(self) -> bool:
        frame = sys._current_frames().get(self.thread.ident or -1)
        while frame is not None:
            code = frame.f_code
            if code.co_name == self.method and code.co_filename.endswith("channel.py"):
                return True
            frame = frame.f_back
        return False

    def wait_inside(self, timeout: float = JOIN) -> None:
        deadline = time.monotonic() + timeout
        while not self._inside():
            assert self.thread.is_alive() and not self.outcome, self.outcome
            assert time.monotonic() < deadline, f"the thread never entered {self.method}()"
            time.sleep(0.001)

    def result(self, timeout: float) -> object:
        """What the call returned, or raise what it raised; fail if it still waits."""
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"{self.method}() still waits after {timeout} s"
        ok, value = self.outcome[0]
        if not ok:
            raise value  # type: ignore[misc]
        return value


# Child process targets.


def _outcome(call: Callable[[], object]) -> str:
    try:
        value = call()
    except ChannelClosed as exc:
        return f"ChannelClosed: {exc}"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return f"returned {value!r}"


def wait_in_get(channel: Channel, conn: Any) -> None:
    """Report ready, wait in get() until the channel closes, then try to put."""
    conn.send("ready")
    got = _outcome(lambda: channel.get(LONG))
    conn.send((got, _outcome(lambda: channel.put(b"late", JOIN))))
    conn.close()
    channel.close()


def wait_in_put(channel: Channel, conn: Any) -> None:
    """Report ready, wait in put() on a full channel until it closes."""
    conn.send("ready")
    conn.send(_outcome(lambda: channel.put(b"late", LONG)))
    conn.close()
    channel.close()


def drain_after_go(channel: Channel, conn: Any) -> None:
    """Report ready, wait for "go", then get until the channel says it is closed."""
    conn.send("ready")
    assert conn.poll(JOIN)
    conn.recv()
    got = []
    while True:
        try:
            got.append(channel.get(JOIN))
        except ChannelClosed:
            break
    conn.send(got)
    conn.close()
    channel.close()


def attach_and_exit(channel: Channel) -> None:
    """Unpickle (attach to) the channel and exit without closing it."""


# Moving messages between processes.


TOPOLOGIES = [(1, 1, 1), (2, 2, 1), (4, 1, 1), (2, 2, 4)]
TOPOLOGY_IDS = ["1x1", "2x2", "4x1", "2x2-batch4"]
MESSAGES = 1200  # in all, shared among the producers


@pytest.mark.parametrize(("producers", "consumers", "batch"), TOPOLOGIES, ids=TOPOLOGY_IDS)
@ways()
def test_messages_arrive_once_in_producer_order(
    make: Callable[..., Any], ctx: BaseContext, producers: int, consumers: int, batch: int
) -> None:
    # A small capacity makes producers wait for room and consumers for
    # messages, so the processes interleave.
    channel = make(capacity=8, max_size=32)
    each = MESSAGES // producers
    pipes = [ctx.Pipe(duplex=False) for _ in range(consumers)]  # type: ignore[attr-defined]
    workers = [
        start(ctx, send_worker, channel, p, each, 24, batch, consumers) for p in range(producers)
    ]
    workers += [start(ctx, receive_worker, channel, producers, w, batch) for _, w in pipes]
    for _, writer in pipes:
        writer.close()
    seen = [receive(reader) for reader, _ in pipes]
    join(*workers)

    every = [tuple(pair) for got in seen for pair in got]
    assert len(every) == producers * each  # none lost, none duplicated ...
    assert set(every) == {(p, i) for p in range(producers) for i in range(each)}  # ... exactly
    for got in seen:
        for p in range(producers):
            sequence = [i for producer, i in got if producer == p]
            assert sequence == sorted(sequence), f"producer {p}'s messages out of order"


def put_batches(channel: Channel, producer: int, batches: int, size: int) -> None:
    for b in range(batches):
        channel.put_many([numbered(producer, b * size + i) for i in range(size)], JOIN)
    channel.close()


def take(channel: Channel, n: int) -> list[bytes]:
    """``n`` messages through get_many: a Queue's get_many returns what has arrived."""
    got: list[bytes] = []
    while len(got) < n:
        got += channel.get_many(n - len(got), JOIN)
    return got


def ids(msg: bytes) -> tuple[int, int]:
    return int.from_bytes(msg[:4], "little"), int.from_bytes(msg[4:8], "little")


@ways()
def test_batches_arrive_whole(make: Callable[..., Any], ctx: BaseContext) -> None:
    channel = make(capacity=8, max_size=16)
    size, batches = 4, 50
    writers = [start(ctx, put_batches, channel, p, batches, size) for p in range(2)]
    got = [ids(channel.get(JOIN)) for _ in range(2 * batches * size)]
    join(*writers)
    for at in range(0, len(got), size):
        producer, first = got[at]
        assert first % size == 0
        assert got[at : at + size] == [(producer, first + i) for i in range(size)], (
            "a batch arrived split or mixed with another producer's messages"
        )


@ways()
def test_fifo_in_one_process(way: Any) -> None:
    assert isinstance(way, Channel)
    way.put(b"a")
    way.put_many([b"b", b"c"])
    way.put(bytearray(b"d"))
    assert way.get(JOIN) == b"a"
    assert take(way, 3) == [b"b", b"c", b"d"]


@ways()
def test_get_and_get_many_share_a_batch(way: Any) -> None:
    way.put_many([b"1", b"2", b"3"])
    way.put(b"4")
    assert way.get(JOIN) == b"1"
    assert take(way, 3) == [b"2", b"3", b"4"]


@ways()
def test_messages_of_every_size_round_trip(make: Callable[..., Any]) -> None:
    channel = make(capacity=8, max_size=130)
    sizes = [0, 1, 7, 8, 63, 64, 65, 130]
    sent = [bytes(i % 251 for i in range(n)) for n in sizes]
    channel.put_many(sent[:4])
    for msg in sent[4:]:
        channel.put(memoryview(msg))
    got = [channel.get(JOIN) for _ in sizes]
    assert got == sent
    assert all(type(msg) is bytes for msg in got)


# Full, empty and the timeouts.


@ways()
def test_full_raises_after_timeout_and_changes_nothing(way: Any) -> None:
    for i in range(4):
        way.put(bytes([i]))
    began = time.monotonic()
    with pytest.raises(queue.Full):
        way.put(b"x", timeout=0.2)
    assert time.monotonic() - began >= 0.19
    with pytest.raises(queue.Full):
        way.put(b"x", timeout=0)
    assert way.get(JOIN) == b"\0"
    with pytest.raises(queue.Full):  # one slot is free, the batch needs two
        way.put_many([b"y", b"z"], timeout=0.1)
    way.put(b"w", timeout=0)
    assert [way.get(JOIN) for _ in range(4)] == [b"\1", b"\2", b"\3", b"w"]


@ways()
def test_empty_raises_after_timeout(way: Any) -> None:
    began = time.monotonic()
    with pytest.raises(queue.Empty):
        way.get(timeout=0.2)
    assert time.monotonic() - began >= 0.19
    with pytest.raises(queue.Empty):
        way.get_many(3, timeout=0)
    way.put(b"a")
    assert way.get(JOIN) == b"a"


# Bad input: one table, every way, the same exception type.

NAN = float("nan")

#: (call, the exception every way raises), on a channel of 4 messages of up
#: to 32 bytes; a closed handle would raise ChannelClosed first.
BAD_CALLS: dict[str, tuple[Callable[[Any], object], type[Exception]]] = {
    "put('text')": (lambda c: c.put("text"), TypeError),
    "put(7)": (lambda c: c.put(7), TypeError),
    "put(None)": (lambda c: c.put(None), TypeError),
    "put([b'a'])": (lambda c: c.put([b"a"]), TypeError),
    "put(33 bytes)": (lambda c: c.put(b"x" * 33), ValueError),
    "put(timeout=-1)": (lambda c: c.put(b"ok", timeout=-1), ValueError),
    "put(timeout=nan)": (lambda c: c.put(b"ok", timeout=NAN), ValueError),
    "put(timeout=True)": (lambda c: c.put(b"ok", timeout=True), TypeError),
    "put(timeout='1')": (lambda c: c.put(b"ok", timeout="1"), TypeError),
    "put_many(33 bytes)": (lambda c: c.put_many([b"ok", b"x" * 33]), ValueError),
    "put_many(str item)": (lambda c: c.put_many([b"ok", "text"]), TypeError),
    "put_many(one message)": (lambda c: c.put_many(b"one message"), TypeError),
    "put_many(5 > capacity)": (lambda c: c.put_many([b"a"] * 5), ValueError),
    "put_many(timeout=nan)": (lambda c: c.put_many([b"ok"], timeout=NAN), ValueError),
    "put_many(timeout=True)": (lambda c: c.put_many([b"ok"], timeout=True), TypeError),
    "get(timeout=-1)": (lambda c: c.get(timeout=-1), ValueError),
    "get(timeout=nan)": (lambda c: c.get(timeout=NAN), ValueError),
    "get(timeout=True)": (lambda c: c.get(timeout=True), TypeError),
    "get_many(0)": (lambda c: c.get_many(0), ValueError),
    "get_many(-1)": (lambda c: c.get_many(-1), ValueError),
    "get_many(True)": (lambda c: c.get_many(True), ValueError),
    "get_many(1.5)": (lambda c: c.get_many(1.5), ValueError),
    "get_many(2**40)": (lambda c: c.get_many(2**40), ValueError),
    "get_many(timeout=nan)": (lambda c: c.get_many(1, timeout=NAN), ValueError),
}

#: Constructor arguments every way refuses, with the exception type.
BAD_MAKES: dict[str, tuple[dict[str, Any], type[Exception]]] = {
    **{
        f"{name}={value!r}": ({name: value}, ValueError)
        for name in ("capacity", "max_size")
        for value in (0, -1, 1.5, True, "4", None, 2**31)
    },
    # Regression (issue 9): "Python int too large to convert to C long" in the
    # ctypes way, while ManagerChannel accepted them.
    "max_size=2**62": ({"max_size": 2**62}, ValueError),
    "capacity=2**40": ({"capacity": 2**40}, ValueError),
    "timeout=True": ({"timeout": True}, TypeError),
    "timeout=nan": ({"timeout": NAN}, ValueError),
    "timeout=-1": ({"timeout": -1}, ValueError),
}


def error_of(call: Callable[..., object], *args: Any, **kwargs: Any) -> type[Exception] | None:
    """The type of what ``call(*args, **kwargs)`` raised, or None."""
    try:
        call(*args, **kwargs)
    except Exception as error:
        return type(error)
    return None


@ways()
def test_bad_input_raises_the_same_error_and_changes_nothing(way: Any) -> None:
    raised = {name: error_of(call, way) for name, (call, _) in BAD_CALLS.items()}
    assert raised == {name: error for name, (_, error) in BAD_CALLS.items()}
    way.put(b"first")  # had anything been put, it would come out before this
    assert way.get(JOIN) == b"first"
    with pytest.raises(queue.Empty):
        way.get(timeout=0.1)
    assert (way.capacity, way.max_size) == (4, 32)


@ways()
def test_bad_constructor_arguments_raise_the_same_error(make: Callable[..., Any]) -> None:
    raised = {name: error_of(make, **kwargs) for name, (kwargs, _) in BAD_MAKES.items()}
    assert raised == {name: error for name, (_, error) in BAD_MAKES.items()}


@ways()
def test_numpy_numbers_are_ints_and_floats(make: Callable[..., Any]) -> None:
    channel = make(capacity=np.int64(4), max_size=np.int32(16), timeout=np.float64(5))
    assert (channel.capacity, channel.max_size) == (4, 16)
    assert type(channel.capacity) is int
    channel.put(b"a", timeout=np.float32(1))
    channel.put_many([b"b", b"c"], timeout=np.int64(1))
    assert channel.get(timeout=np.float64(JOIN)) == b"a"
    assert take(channel, np.int64(2)) == [b"b", b"c"]


@ways()
def test_endless_timeouts_wait_as_long_as_it_takes(way: Any) -> None:
    # Regression (issue 9): inf and 1e9 raised OverflowError or OSError in
    # some ways; now, like None, they wait (in slices) for what comes.
    for timeout in (math.inf, 1e9, 3e6):
        getter = Waiter(functools.partial(way.get, timeout), "get")
        getter.wait_inside()
        way.put(b"late", timeout=timeout)
        assert getter.result(WAKE) == b"late"
    way.put_many([b"1", b"2", b"3", b"4"], timeout=math.inf)
    putter = Waiter(lambda: way.put(b"5", timeout=1e9), "put")
    putter.wait_inside()
    assert way.get(timeout=math.inf) == b"1"
    putter.result(WAKE)
    assert take(way, 4) == [b"2", b"3", b"4", b"5"]


# close().


@ways()
def test_close_wakes_waiting_getters(way: Any, ctx: BaseContext) -> None:
    # Each child reports "ready" just before get(); whether it is already
    # waiting when close() runs or calls get() after, it must end the same.
    pipes = [ctx.Pipe(duplex=False) for _ in range(2)]  # type: ignore[attr-defined]
    getters = [start(ctx, wait_in_get, way, writer) for _, writer in pipes]
    for reader, writer in pipes:
        writer.close()
        assert receive(reader) == "ready"
    way.close()
    for reader, _ in pipes:
        got, put = receive(reader, WAKE)
        assert got.startswith("ChannelClosed") and "closed by its creator" in got, got
        assert put.startswith("ChannelClosed"), put
    join(*getters)


@ways()
def test_close_wakes_waiting_putters(way: Any, ctx: BaseContext) -> None:
    way.put_many([b"1", b"2", b"3", b"4"])
    reader, writer = ctx.Pipe(duplex=False)  # type: ignore[attr-defined]
    putter = start(ctx, wait_in_put, way, writer)
    writer.close()
    assert receive(reader) == "ready"
    way.close()
    outcome = receive(reader, WAKE)
    assert outcome.startswith("ChannelClosed"), outcome
    join(putter)


@ways(cannot={"queue": NO_DRAIN, "manager": NO_DRAIN, "redis": REDIS_NO_DRAIN})
def test_getters_drain_a_closed_channel(way: Any, ctx: BaseContext) -> None:
    here, there = ctx.Pipe()  # type: ignore[attr-defined]
    getter = start(ctx, drain_after_go, way, there)
    # Under spawn and forkserver a child attaches when it unpickles its
    # arguments, after start() returns: the creator closes only after that.
    assert receive(here) == "ready"
    producer = start(ctx, send_worker, way, 7, 3, 8, 1, 0)  # 3 messages, no end mark
    join(producer)  # its messages are in the channel (a Queue's feeder has flushed)
    way.put(numbered(0, 0))
    way.close()
    here.send("go")
    got = receive(here, WAKE)
    join(getter)
    assert sorted(got) == sorted([numbered(7, i) for i in range(3)] + [numbered(0, 0)])
    assert [m for m in got if m[:1] == b"\7"] == [numbered(7, i) for i in range(3)]


# A call waiting while another thread closes the handle (issue 9, bug 5).


#: Seconds within which a waiting thread must have noticed that its handle closed.
THREAD_WAKE = 3.0
#: Tries of a race that the old code lost in some tries only; a manager is slow to start.
ATTEMPTS = {"ctypes": 10, "queue": 10, "manager": 3, "redis": 10}


def wait_and_close(channel: Channel, method: str, timeout: float | None) -> Waiter:
    """Start a thread waiting in ``method`` of ``channel``; close it from this thread."""
    if method == "put":
        channel.put_many([b"full"] * channel.capacity)
    call = channel.get if method == "get" else lambda t: channel.put(b"late", t)
    waiter = Waiter(lambda: call(timeout), method)
    waiter.wait_inside()
    channel.close()
    return waiter


@pytest.mark.parametrize("timeout", [None, 1e9], ids=["timeout=None", "timeout=1e9"])
@pytest.mark.parametrize("method", ["get", "put"])
@ways()
def test_close_in_another_thread_wakes_a_waiting_call(
    make: Callable[..., Any], way_name: str, method: str, timeout: float | None
) -> None:
    # Regression (issue 9, bug 5): CtypesChannel raised AttributeError
    # ('NoneType' object has no attribute 'acquire'), QueueChannel OSError
    # or TypeError, in some of the tries (or waited for ever).
    for _ in range(ATTEMPTS[way_name]):
        waiter = wait_and_close(make(capacity=2, max_size=8), method, timeout)
        with pytest.raises(ChannelClosed):
            waiter.result(THREAD_WAKE)


def close_under_a_waiting_thread(channel: Channel, conn: Any) -> None:
    """In a child: a thread waits in get(), the main thread closes this handle."""
    waiter = wait_and_close(channel, "get", None)
    conn.send(_outcome(lambda: waiter.result(THREAD_WAKE)))
    conn.close()


@ways()
def test_child_close_in_another_thread_wakes_a_waiting_call(way: Any, ctx: BaseContext) -> None:
    # The child's close() only detaches its handle: no token, no closing
    # mark, no stopped server wakes its thread; only the sliced wait does.
    # (Before issue 9 the thread waited for ever in every way.)
    reader, writer = ctx.Pipe(duplex=False)  # type: ignore[attr-defined]
    child = start(ctx, close_under_a_waiting_thread, way, writer)
    writer.close()
    assert receive(reader) == f"ChannelClosed: {type(way).__name__} is closed"
    join(child)
    way.put(b"still open")  # the creator's handle is not the child's
    assert way.get(JOIN) == b"still open"


@ways("queue", "manager")
def test_dead_owner_or_server_is_a_closed_channel(way: Any) -> None:
    # To a child, an owner or server stopped by the creator and one that
    # died look the same: both except clauses catch the error.
    way.put(b"lost")
    process = way._owner._process if hasattr(way, "_owner") else way._server._manager._process
    process.kill()
    process.join(JOIN)
    began = time.monotonic()
    calls: list[Callable[[], object]] = [way.get, lambda: way.put(b"x"), lambda: way.get_many(2)]
    for call in calls:
        with pytest.raises(ChannelClosed, match="has stopped") as caught:
            call()
        assert isinstance(caught.value, OwnerGone)
    way.close()
    assert time.monotonic() - began < WAKE


# The ctypes way's segment, its locks and the resource tracker.


def test_segment_is_unlinked_once_by_its_creator(ctx: BaseContext) -> None:
    channel = CtypesChannel(capacity=4, max_size=16, ctx=ctx)
    path = Path("/dev/shm") / channel.name
    assert path.exists()
    join(start(ctx, send_worker, channel, 1, 2, 8, 1, 0), start(ctx, attach_and_exit, channel))
    assert path.exists(), "a child's close() or exit unlinked the segment"
    assert [channel.get(JOIN) for _ in range(2)] == [numbered(1, 0), numbered(1, 1)]
    channel.close()
    assert not path.exists()
    channel.close()


TRACKER_SCRIPT = textwrap.dedent(
    """\
    import multiprocessing
    from shmref.channel import CtypesChannel, receive_worker, send_worker

    if __name__ == "__main__":
        for method in ("fork", "forkserver", "spawn"):
            ctx = multiprocessing.get_context(method)
            with CtypesChannel(capacity=4, max_size=16, ctx=ctx) as channel:
                reader, writer = ctx.Pipe(duplex=False)
                workers = [
                    ctx.Process(target=send_worker, args=(channel, 0, 20)),
                    ctx.Process(target=receive_worker, args=(channel, 1, writer)),
                    ctx.Process(target=id, args=(channel,)),  # attaches, exits, no close
                ]
                for worker in workers:
                    worker.start()
                writer.close()
                print(method, len(reader.recv()))
                for worker in workers:
                    worker.join(60)
    """
)


def test_resource_tracker_stays_silent() -> None:
    # A fresh interpreter with a tracker of its own, whose stderr we read:
    # a child that attached must neither make it unlink nor complain.
    result = subprocess.run(
        [sys.executable, "-c", TRACKER_SCRIPT],
        cwd=Path(__file__).parent.parent,
        env={k: v for k, v in os.environ.items() if not k.startswith("PYTHON")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.stdout == "fork 20\nforkserver 20\nspawn 20\n", result.stderr
    assert result.stderr == ""


@contextlib.contextmanager
def held_by_another_thread(lock: Any) -> Iterator[None]:
    """Hold ``lock`` in another thread (alive, unrecorded) for the ``with`` block.

    Not in this thread: a call that fails gives back a lock its own thread
    holds (shmref.holder), as it must for an interrupt inside the call.
    """
    taken, done = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            taken.set()
            done.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    assert taken.wait(30)
    try:
        yield
    finally:
        done.set()
        holder.join()


def test_ctypes_times_out_when_a_lock_is_held(ctx: BaseContext) -> None:
    # The timeout is shorter than a take-over's wait (holder.STALE), and the
    # holder lives: the calls time out, with nothing taken or written.
    with CtypesChannel(capacity=2, max_size=8, ctx=ctx, timeout=0.2) as channel:
        with held_by_another_thread(channel._put_holder.lock):
            with pytest.raises(TimeoutError):
                channel.put(b"a")
            with pytest.raises(TimeoutError):
                channel.put_many([b"a", b"b"])
        channel.put_many([b"a", b"b"])  # both slots are free
        with held_by_another_thread(channel._get_holder.lock):
            with pytest.raises(TimeoutError):
                channel.get()
            with pytest.raises(TimeoutError):
                channel.get_many(2)
        assert channel.get_many(2, JOIN) == [b"a", b"b"]  # both messages were left


# PickleChannel.


def put_objects(channel: PickleChannel) -> None:
    channel.put({"from": "child", "pid": os.getpid()}, JOIN)
    channel.put_many([(1, 2.5), None], JOIN)
    channel.close()


@ways()
def test_pickle_channel_carries_objects(make: Callable[..., Any], ctx: BaseContext) -> None:
    channel = PickleChannel(make(capacity=4, max_size=256))
    join(start(ctx, put_objects, channel))
    first = channel.get(JOIN)
    assert first["from"] == "child" and first["pid"] != os.getpid()
    assert take(channel, 2) == [(1, 2.5), None]  # type: ignore[arg-type]


@ways()
def test_pickle_channel_refuses_in_the_caller(make: Callable[..., Any]) -> None:
    with PickleChannel(make(capacity=4, max_size=64)) as channel:
        with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
            channel.put(lambda: None)
        with pytest.raises(ValueError, match="over max_size=64"):
            channel.put("x" * 100)
        with pytest.raises(ValueError):
            channel.put_many([1, "x" * 100])
        channel.put("fits")
        assert channel.get(JOIN) == "fits"
        assert (channel.capacity, channel.max_size) == (4, 64)


# RedisChannel: its server.


@pytest.mark.parametrize("method", ["get", "put"])
def test_redis_server_gone_wakes_a_waiting_call(method: str) -> None:
    # Issue 10's rule: with timeout=None, a call waiting on a server that
    # goes wakes with the closed error, which is also OwnerGone.
    with redis_server.RedisServer() as server:
        channel = RedisChannel(capacity=2, max_size=8, url=server.url, timeout=WAKE)
        if method == "put":
            channel.put_many([b"1", b"2"])
            waiter = Waiter(lambda: channel.put(b"3", None), "_blocking")
        else:
            waiter = Waiter(lambda: channel.get(None), "_blocking")
        waiter.wait_inside()  # it found no room (no message): it waits on the server
        server.kill()
        with pytest.raises(ChannelClosed, match="has stopped") as caught:
            waiter.result(THREAD_WAKE)
        assert isinstance(caught.value, OwnerGone)
        with pytest.raises(ChannelClosed, match="has stopped"):
            channel.put(b"x", timeout=0)
        channel.close()


@pytest.mark.parametrize("method", ["get", "put"])
def test_redis_waiters_are_woken_not_polled(
    redis_url: str, method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With slices of an hour, only a wake-up can end these waits: a put
    # wakes a waiting get (BLMPOP), a get a waiting put (a token).
    monkeypatch.setattr("shmref.channel._REDIS_SLICE", LONG)
    with RedisChannel(capacity=1, max_size=8, url=redis_url) as channel:
        if method == "put":
            channel.put(b"1")
            waiter = Waiter(lambda: channel.put(b"2", None), "_blocking")
            waiter.wait_inside()  # it found no room: it waits on the server
            assert channel.get(JOIN) == b"1"
            waiter.result(WAKE)
            assert channel.get(JOIN) == b"2"
        else:
            waiter = Waiter(lambda: channel.get(None), "_blocking")
            waiter.wait_inside()  # it found no message: it waits on the server
            channel.put(b"1")
            assert waiter.result(WAKE) == b"1"


@pytest.mark.parametrize("method", ["get", "put"])
def test_redis_creator_close_wakes_a_waiter_within_a_slice(redis_url: str, method: str) -> None:
    # A connect()ed handle's call already waiting on the server: only its
    # sliced wait (it looks again between slices) can see the creator's
    # close, which deletes the keys and wakes nobody.
    creator = RedisChannel(capacity=1, max_size=8, url=redis_url)
    other = RedisChannel.connect(creator.url, creator.name)
    if method == "put":
        creator.put(b"1")
        waiter = Waiter(lambda: other.put(b"2", None), "_blocking")
    else:
        waiter = Waiter(lambda: other.get(None), "_blocking")
    waiter.wait_inside()
    creator.close()
    with pytest.raises(ChannelClosed, match="closed by its creator"):
        waiter.result(THREAD_WAKE)
    other.close()
