"""Faults: a process killed inside a call, and interrupts caught inside calls.

A killed process must break nothing for the others: their calls work (a
dead holder's internal lock is taken over, see shmref.holder) and the state
is old or new, never torn. A ``KeyboardInterrupt`` caught around a call
leaves no lock taken. Clauses a way cannot keep yet are strict xfail at the
parameter, with the reason (``CANNOT`` in tests/ways_<primitive>.py).
"""

from __future__ import annotations

import ctypes
import functools
import multiprocessing
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import time
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any

import pytest

from shmref.counter import QueueCounter
from shmref.server import Server
from shmref.table import QueueDict
from tests.clauses import cannot
from tests.conftest import START_METHODS
from tests.fault_loops import LOOPS, link, repeat
from tests.test_lifecycle import PRIMITIVES, SLACK, TIMEOUT, lifecycle

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="take-overs need Linux robust mutexes"
)


def hold_then_wait(primitive: str, way: str, handle: Any, ready: Any) -> None:
    """Process target: hold what ``handle``'s call waits for, say so, and wait to be killed."""
    PRIMITIVES[primitive].stall(way, handle)
    ready.set()
    time.sleep(60)


@lifecycle("holder killed")
def test_a_call_succeeds_after_the_holder_is_killed(
    primitive: str, way: str, ctx: BaseContext
) -> None:
    ways = PRIMITIVES[primitive]
    handle = ways.make(way, ctx, TIMEOUT)
    try:
        ready = ctx.Event()
        child = ctx.Process(target=hold_then_wait, args=(primitive, way, handle, ready))
        child.start()
        assert ready.wait(30), "the child did not start holding"
        os.kill(child.pid, signal.SIGKILL)  # not reaped yet: a zombie, as often in real life
        call = ways.stall(way, handle, hold=False)
        if call is None:
            pytest.skip("no call of this way waits on another process")
        start = time.monotonic()
        call()
        assert time.monotonic() - start < TIMEOUT + SLACK
        child.join()
    finally:
        handle.close()


class _Serving:
    """The threads of a Manager server, one per client connection.

    A server runs a request in the thread of its connection, to its end,
    even when the client is gone: the killed (or interrupted) client's last
    request may be applied after the parent's next call. So before it looks
    at the state, the parent waits until every thread started since it
    began (a killed worker's, a dropped connection's) has ended or waits
    for a request. (Waits, not ended: an interrupt that lands inside
    multiprocessing's ``Connection(sock.detach())`` leaks the descriptor,
    and the server thread of that connection then waits for ever.)
    """

    def __init__(self, name: str, handle: Any) -> None:
        LOOPS[name].values(handle)  # the parent's own connection: here from the start
        server = link(handle)
        assert isinstance(server, Server) and server._manager is not None
        self.tasks = Path(f"/proc/{server._manager._process.pid}/task")
        self.at_rest = self.threads()

    def threads(self) -> set[str]:
        return {task.name for task in self.tasks.iterdir()}

    def busy(self) -> list[str]:
        """The threads started since that neither ended nor wait in a read."""
        busy = []
        for tid in self.threads() - self.at_rest:
            try:
                waits_on = (self.tasks / tid / "wchan").read_text()
            except OSError:  # ended meanwhile
                continue
            if "read" not in waits_on:
                busy.append(tid)
        return busy

    def settle(self) -> None:
        deadline = time.monotonic() + 30
        while self.busy():
            assert time.monotonic() < deadline, "a server thread stayed busy"
            time.sleep(0.001)


# Random kills: a worker loops on a call and records each one it completed;
# it is SIGKILLed at a random moment, 20 times. After each kill the state is
# what the completed calls made, or that plus the call in progress, and the
# next call from another process succeeds.

#: 20, as the issue asks. noxfile.py sets SHMREF_KILLS=10 on the interpreters
#: that run fork only (a check of that interpreter, not the contract's run):
#: a kill that cuts a call costs a take-over's wait, about a second.
KILLS = int(os.environ.get("SHMREF_KILLS", "20"))


#: Fork and spawn, as the issue asks: an inherited handle and a pickled one.
#: Forkserver adds neither (its children get the handle pickled, as under
#: spawn) but would add a third of the suite's longest test.
_KILL_CELLS = [
    pytest.param(n, m, id=f"{n}-{m}")
    for n in LOOPS
    for m in START_METHODS
    if m in ("fork", "spawn")
]


@pytest.mark.parametrize(("name", "start_method"), _KILL_CELLS)
def test_random_kills_leave_old_or_new_state(name: str, ctx: BaseContext) -> None:
    loop = LOOPS[name]
    handle = loop.make(ctx)
    rng = random.Random(1234)
    cut = 0
    try:
        serving = _Serving(name, handle) if loop.late else None
        done = ctx.RawValue(ctypes.c_int64, 0)
        for _ in range(KILLS):
            started = ctx.Event()
            target = loop.target or functools.partial(repeat, name)
            worker = ctx.Process(target=target, args=(handle, done, started))
            worker.start()
            assert started.wait(30)
            before = done.value
            # Evidence that it loops, then a random moment: no fixed sleep.
            deadline = time.monotonic() + 30
            while done.value < before + 100:
                assert time.monotonic() < deadline, "the worker made no progress"
                time.sleep(0.001)
            time.sleep(rng.uniform(0, 0.005))
            os.kill(worker.pid, signal.SIGKILL)
            worker.join()
            worker.close()
            completed = done.value
            if serving is not None:
                serving.settle()
            cut += loop.cut is not None and loop.cut(handle)
            values = loop.values(handle)  # taking the lock over, or repairing the row
            assert values <= {completed, completed + 1}, (values, completed)
            if loop.one_writer:
                done.value = max(values)  # the next worker goes on from there
            else:
                loop.call(handle, completed + 2)
                assert loop.values(handle) == {completed + 2}
                done.value = completed + 2
        # Some kills must have hit the critical section, or nothing was tested.
        if loop.cut is not None:
            print(f"{cut} of {KILLS} kills cut a call")
    finally:
        handle.close()


# Interrupts: SIGALRM every 300 us raises KeyboardInterrupt wherever the main
# thread is while a call is armed, inside the call included; the loop catches
# it and goes on. (The handler disarms itself, so the except clause that
# counts an interrupt is never interrupted.) After 200 interrupts the lock
# must be free and the state exact up to the interrupted calls.

INTERRUPTS = 200


# An interrupt that lands in a finalizer or a weakref callback is lost there
# ("Exception ignored in"), which is the interpreter's rule, not a lock left
# taken: redis-py's connections disconnect in __del__, and a
# WeakValueDictionary's callback runs whenever a value's last reference goes,
# both in the middle of any call (seen on CI in 3.10, counter-redis). The test
# takes the unraisable hook while it interrupts: a lost KeyboardInterrupt is
# expected, anything else fails it.
@pytest.mark.parametrize("name", list(LOOPS))
def test_caught_interrupts_leave_no_lock_taken(name: str) -> None:
    loop = LOOPS[name]
    handle = loop.make(multiprocessing.get_context())
    armed = [False]

    def interrupt(signum: int, frame: object) -> None:
        if armed[0]:
            armed[0] = False
            raise KeyboardInterrupt

    lost: list[Any] = []
    serving = _Serving(name, handle) if loop.late else None
    completed = interrupted = 0
    hook = sys.unraisablehook
    sys.unraisablehook = lost.append
    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.0003, 0.0003)
    try:
        while interrupted < INTERRUPTS:
            try:
                armed[0] = True
                loop.call(handle, completed + 1)
                armed[0] = False
                completed += 1
            except KeyboardInterrupt:
                interrupted += 1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        sys.unraisablehook = hook
    for unraisable in lost:
        if unraisable.exc_type is not KeyboardInterrupt:
            hook(unraisable)  # pytest reports it as the failure it is
    try:
        if serving is not None:
            serving.settle()
        for lock in loop.locks(handle):
            assert lock.acquire(False), "an interrupt left an internal lock taken"
            lock.release()
        # Each interrupted call happened or did not.
        values = loop.values(handle)
        if name == "counter-ctypes":
            assert completed <= min(values) <= max(values) <= completed + interrupted
        else:
            assert values <= {completed, completed + 1}, (values, completed)
    finally:
        handle.close()


# The owner ways: each client process has a connection of its own, so a
# client that dies mid-message, or floods the owner, costs the others nothing.


def _half_request(address: str, size: int) -> None:
    """Process target: connect to an owner, write half of a ``size``-byte request, die."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(address)
        sock.sendall(struct.pack("!i", size) + b"\x80" * (size // 2))
    os._exit(0)  # as a SIGKILL would: the other half never comes


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_a_half_written_request_breaks_nobody(ctx: BaseContext) -> None:
    # Half of a 1 MiB message left on the owner's socket: with one shared
    # pipe, the owner (or the next reader) would wait for the rest for ever.
    with QueueDict(capacity=8, ctx=ctx, timeout=TIMEOUT) as table:
        table["k"] = 1
        child = ctx.Process(target=_half_request, args=(table._link._address, 1 << 20))
        child.start()
        child.join()
        start = time.monotonic()
        table["k"] = 2
        assert table["k"] == 2
        assert time.monotonic() - start < TIMEOUT


def _flood(counter: QueueCounter, stop: Any, sent: Any) -> None:
    n = 0
    while not stop.is_set():
        counter.add(1)
        n += 1
    sent.value = n


@pytest.mark.parametrize("start_method", ["fork"])
def test_writers_faster_than_the_owner_wait_for_room(ctx: BaseContext) -> None:
    # Four processes adding as fast as they can: each add waits for room
    # once the owner is behind, so a get is answered within its timeout
    # (with one unbounded queue, 10 s of adds took minutes to apply), and
    # when the writers stop, the total is exact.
    with QueueCounter(ctx=ctx, timeout=TIMEOUT) as counter:
        stop = ctx.Event()
        sent = [ctx.RawValue(ctypes.c_int64, -1) for _ in range(4)]
        writers = [ctx.Process(target=_flood, args=(counter, stop, s)) for s in sent]
        for writer in writers:
            writer.start()
        try:
            # Evidence of a flood: the total grows between gets.
            first = counter.get()
            deadline = time.monotonic() + 30
            while counter.get() < first + 10_000:
                assert time.monotonic() < deadline, "the writers made no progress"
            for _ in range(5):
                start = time.monotonic()
                counter.get()
                assert time.monotonic() - start < TIMEOUT, "a get waited behind the flood"
        finally:
            stop.set()
            for writer in writers:
                writer.join(60)
        assert [w.exitcode for w in writers] == [0] * 4
        assert counter.get() == sum(s.value for s in sent)


# Channels: a producer killed inside put. A CtypesChannel's producers' lock
# is taken over; a QueueChannel's owner drops the half message the killed
# producer wrote on its connection.


def _die_in_put(way: str, handle: Any, ready: Any) -> None:
    """Process target: be a producer killed inside put (holding what put holds)."""
    if way == "ctypes":
        handle._put_holder.enter(None, "the producers' lock")  # as inside put()
    elif way == "queue":
        handle.put(b"before", timeout=TIMEOUT)  # connected, then half a put:
        link = handle._owner._connection(waiting=True)
        link.sock.sendall(struct.pack("!Q", 1000) + b"\x80" * 100)
    else:
        handle.put(b"before", timeout=TIMEOUT)
    ready.set()
    time.sleep(60)


@pytest.mark.parametrize(
    ("way", "start_method"),
    [
        pytest.param(
            way,
            method,
            marks=[pytest.mark.xfail(strict=True, reason=reason)]
            if (reason := cannot("producer killed", "channel", way))
            else [],
            id=f"{way}-{method}",
        )
        for way in ("ctypes", "queue", "manager", "redis")
        for method in ("fork", "spawn")
    ],
)
def test_a_producer_killed_inside_put_leaves_the_channel_usable(
    way: str, start_method: str
) -> None:
    # In an interpreter of its own: where the fault breaks the channel, its
    # Queue's feeder thread and semaphores can never be cleaned up, and the
    # resource tracker of that interpreter, not of the suite, reports them.
    script = f"""
import multiprocessing, os, signal, sys
from tests.ways_channel import make
from tests.test_faults import _die_in_put
ctx = multiprocessing.get_context({start_method!r})
handle = make({way!r}, ctx, {TIMEOUT})
ready = ctx.Event()
child = ctx.Process(target=_die_in_put, args=({way!r}, handle, ready))
child.start()
assert ready.wait(30), "the producer did not start"
os.kill(child.pid, signal.SIGKILL)
child.join()
try:
    handle.put(b"after", timeout={TIMEOUT})
    got = {{handle.get(timeout={TIMEOUT})}}
    if {way!r} != "ctypes":
        got.add(handle.get(timeout={TIMEOUT}))
    print("usable" if b"after" in got else f"lost: {{got}}", flush=True)
except Exception as error:
    print(f"broken: {{type(error).__name__}}: {{error}}", flush=True)
os._exit(0)  # a broken Queue's feeder would hang the exit
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).parent.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.strip() == "usable", (done.stdout, done.stderr[-2000:])
