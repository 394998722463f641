"""One lifecycle contract for every way of every primitive, under every start method.

In the style of CPython's ``_test_multiprocessing``: each clause is written
once and installed for primitive x way x start method. What a primitive
supplies is in ``tests/ways_<primitive>.py``: its ways (``WAYS``, ``make``),
every public call with valid arguments (``CALLS``) and with arguments every
way refuses (``BAD_CALLS``), a way to make one call block (``stall``), and
the clauses a way cannot keep (``CANNOT``, strict xfail with the reason),
and the clauses that mean something else for the primitive
(``NOT_APPLICABLE``: clause -> reason; a lock's ``with`` acquires).

The clauses: a closed handle refuses every call with ``ValueError`` (or the
primitive's subclass) before looking at the arguments; ``close()`` twice is
harmless; ``with`` closes and never replaces the exception that ended the
block; a child's ``close()`` detaches only the child; the creator's
``close()`` stops the owner or server (and the leak check sees segments and
children go); with the owner or server dead, every call ends within its
timeout, the reading calls with ``OwnerGone``, and ``close()`` is prompt;
with the owner or server stopped (SIGSTOP), every call whose wait has an end
raises ``TimeoutError`` within that wait and the handle's timeout, and the
handle's connection answers again after SIGCONT; a
thread blocked in a call wakes with the closed error when another thread
closes the handle; an owner or server outlives a SIGINT (Ctrl-C); a
creator killed with SIGKILL leaves no process behind (owner, server, their
resource tracker) within :data:`ORPHAN_GRACE` seconds.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import select
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.context import BaseContext
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from shmref.lifecycle import STOP_WAIT, Closable, OwnerGone, reply_within, run, seconds
from shmref.locks import ReleaseError
from shmref.owner import Owner
from shmref.server import Server
from tests.clauses import PRIMITIVES, applies, cannot
from tests.conftest import JOIN, START_METHODS, run_children
from tests.fault_loops import link
from tests.redis_server import ENV, RedisServer, home

#: The timeout every handle here gets: short, so a dead peer shows quickly.
TIMEOUT = 3.0
#: What a call may take beyond its timeout on a busy machine.
SLACK = 5.0


#: The primitives whose ways go through the stopped-owner clause: all, unless
#: SHMREF_STOPPED names some. noxfile.py names the Counter on the interpreters
#: that run fork only: what varies there is the standard library's handshake,
#: which one Queue and one Manager way go through, and the clause's waits
#: (a stopped peer is waited for on purpose) added a minute to each.
STOPPED = (
    os.environ.get("SHMREF_STOPPED", "").split(",") if "SHMREF_STOPPED" in os.environ else None
)


def lifecycle(clause: str) -> pytest.MarkDecorator:
    """Parametrize ``clause`` (of :data:`tests.clauses.CLAUSES`) over primitive x way x method.

    Only the ways the clause applies to; strict xfail where a way cannot keep it.
    """
    params = []
    for primitive, ways in PRIMITIVES.items():
        if clause == "stopped_owner" and STOPPED is not None and primitive not in STOPPED:
            continue
        for way in ways.WAYS:
            if not applies(clause, primitive, way):
                continue
            reason = cannot(clause, primitive, way)
            marks = [] if reason is None else [pytest.mark.xfail(strict=True, reason=reason)]
            params += [
                pytest.param(primitive, way, method, marks=marks, id=f"{primitive}-{way}-{method}")
                for method in START_METHODS
            ]
    return pytest.mark.parametrize(("primitive", "way", "start_method"), params)


@pytest.fixture
def ways(primitive: str) -> ModuleType:
    return PRIMITIVES[primitive]


@pytest.fixture
def make(ways: ModuleType, way: str, ctx: BaseContext) -> Any:
    made: list[Any] = []

    def make() -> Any:
        handle = ways.make(way, ctx, TIMEOUT)
        made.append(handle)
        return handle

    yield make
    for handle in made:
        handle.close()


def closed_error(call: Callable[[], object]) -> BaseException:
    """The exception ``call`` raises; it must be the closed error."""
    with pytest.raises(ValueError) as caught:
        call()
    assert "closed" in str(caught.value), f"not the closed error: {caught.value!r}"
    return caught.value


def close_in_child(handle: Any) -> None:
    handle.close()


@lifecycle("closed")
def test_closed_handle_refuses_every_call(make: Callable[[], Any], ways: ModuleType) -> None:
    handle = make()
    handle.close()
    for name, call in {**ways.CALLS, **ways.BAD_CALLS}.items():
        error = closed_error(lambda call=call: call(handle))
        assert type(handle).__name__ in str(error), (name, error)


@lifecycle("close_twice")
def test_close_twice(make: Callable[[], Any]) -> None:
    handle = make()
    handle.close()
    handle.close()


@lifecycle("with")
def test_with_closes_and_keeps_the_error_in_flight(
    make: Callable[[], Any], ways: ModuleType
) -> None:
    handle = make()
    with handle as entered:
        assert entered is handle
        for call in ways.CALLS.values():
            call(handle)
    closed_error(lambda: next(iter(ways.CALLS.values()))(handle))

    class Marker(Exception):
        pass

    with pytest.raises(Marker), make():
        raise Marker


@lifecycle("child_close")
def test_child_close_detaches_only_the_child(
    make: Callable[[], Any], ways: ModuleType, ctx: BaseContext
) -> None:
    handle = make()
    run_children(ctx, close_in_child, handle, count=2)
    for call in ways.CALLS.values():
        call(handle)


@lifecycle("creator_close")
def test_creator_close_stops_owner_and_server(make: Callable[[], Any]) -> None:
    before = {p.pid for p in multiprocessing.active_children()}
    handle = make()
    started = {p.pid for p in multiprocessing.active_children()} - before
    assert len(started) == (1 if link(handle) is not None and link(handle)._creator else 0)
    handle.close()
    assert not started & {p.pid for p in multiprocessing.active_children()}


def kill_peer(peer: Owner | Server) -> None:
    process = peer._process if isinstance(peer, Owner) else peer._manager._process
    process.kill()
    process.join(SLACK)


@lifecycle("dead_owner")
def test_dead_owner_or_server_gives_a_clear_error(
    make: Callable[[], Any], ways: ModuleType, way: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if way.startswith("redis"):
        # A redis-server of this test's own: the shared one serves the others.
        server = RedisServer()
        monkeypatch.setenv(ENV, server.url)
        handle = make()
        kill: Callable[[], None] = server.kill
    else:
        server = None
        handle = make()
        peer = link(handle)
        assert peer is not None, "a Queue or Manager way without an owner or server"
        kill = functools.partial(kill_peer, peer)
    try:
        kill()
        outcomes = {}
        for name, call in ways.CALLS.items():
            start = time.monotonic()
            try:
                call(handle)
            except OwnerGone:
                outcomes[name] = "OwnerGone"
            except ReleaseError as error:
                # A Redis lock knows from its own tokens that it holds
                # nothing (its acquire failed), and says so without asking
                # the server; a Queue or Manager lock has to ask.
                if not way.startswith("redis"):
                    pytest.fail(f"{name}: ReleaseError: {error} (want OwnerGone)")
                outcomes[name] = "ReleaseError"
            except BaseException as error:
                pytest.fail(f"{name}: {type(error).__name__}: {error} (want OwnerGone)")
            else:
                outcomes[name] = "returned"  # a message that needs no reply
            assert time.monotonic() - start < TIMEOUT + SLACK, name
        assert "OwnerGone" in outcomes.values(), outcomes
        start = time.monotonic()
        handle.close()
        assert time.monotonic() - start < TIMEOUT + SLACK
        closed_error(lambda: next(iter(ways.CALLS.values()))(handle))
    finally:
        if server is not None:
            server.stop()


#: The handle's timeout in the stopped-owner clause: how long a reply may be late.
STOPPED_TIMEOUT = 1.0
#: The longest wait a call of any ways_<primitive>.CALLS asks for (a channel's 10 s).
LONGEST_CALL = 10.0


def _peer_process(handle: Any) -> tuple[Owner | Server, Any]:
    """The handle's owner client or server handle, and the process it talks to."""
    peer = link(handle)
    assert peer is not None, "a Queue or Manager way without an owner or server"
    return peer, peer._process if isinstance(peer, Owner) else peer._manager._process


#: The longest a call of the stopped-owner test waits for a reply: the longest
#: call's own wait and the handle's timeout, with the margin every call gets.
STOPPED_BUDGET = reply_within(STOPPED_TIMEOUT, LONGEST_CALL) or 0.0


@lifecycle("stopped_owner")
def test_stopped_owner_or_server_is_a_timeout(
    ways: ModuleType, way: str, ctx: BaseContext
) -> None:
    # Regression: a Manager server stopped (SIGSTOP) or hung, alive but not
    # answering, held every call of every Manager way for ever, timeout= or
    # not; a Queue way's waiting calls (acquire, put, get) too.
    handle = ways.make(way, ctx, STOPPED_TIMEOUT)
    try:
        peer, process = _peer_process(handle)
        calls = {n: c for n, c in ways.CALLS.items() if n not in getattr(ways, "ENDLESS", ())}
        outcomes: dict[str, str] = {}

        def make_call(name: str, call: Callable[[Any], object]) -> None:
            try:
                call(handle)
            except TimeoutError:
                outcomes[name] = "TimeoutError"
            except BaseException as error:
                outcomes[name] = f"{type(error).__name__}: {error}"
            else:
                outcomes[name] = "returned"  # a message that needs no reply

        os.kill(process.pid, signal.SIGSTOP)
        try:
            start = time.monotonic()
            # The first call on this thread's connection, open since make();
            # the others at once, each in a thread (on a connection of its
            # own for a Manager way, made while the server is stopped).
            first, *others = calls.items()
            threads = [
                threading.Thread(target=make_call, args=item, daemon=True) for item in others
            ]
            for thread in threads:
                thread.start()
            make_call(*first)
            for thread in threads:
                thread.join(STOPPED_BUDGET + SLACK)
            took = time.monotonic() - start
        finally:
            os.kill(process.pid, signal.SIGCONT)
        assert took < STOPPED_BUDGET + SLACK, f"{took:.1f} s: {outcomes}"
        assert set(outcomes) == set(calls), f"calls still waiting: {set(calls) - set(outcomes)}"
        assert set(outcomes.values()) <= {"TimeoutError", "returned"}, outcomes
        assert "TimeoutError" in outcomes.values(), outcomes
        # Answered (refused) on this thread's connection: a late reply to a
        # call that timed out is never read as this one's.
        with pytest.raises(ValueError, match="unknown request"):
            peer.call_guarded("_probe")
        start = time.monotonic()
        handle.close()
        assert time.monotonic() - start < STOPPED_TIMEOUT + SLACK
    finally:
        handle.close()


def _close_in_thread(handle: Any, wait: float) -> tuple[threading.Thread, float]:
    """``handle.close()`` in a thread waited for up to ``wait``: the thread, and the time taken."""
    start = time.monotonic()
    closing = threading.Thread(target=handle.close, daemon=True)
    closing.start()
    closing.join(wait)
    return closing, time.monotonic() - start


@lifecycle("stopped_owner")
def test_close_kills_an_owner_or_server_left_stopped(
    ways: ModuleType, way: str, ctx: BaseContext
) -> None:
    # Regression: the creator's close() of a Manager way waited for ever on a
    # stopped server (the standard library's shutdown handshakes with it first).
    handle = ways.make(way, ctx, STOPPED_TIMEOUT)
    try:
        peer, process = _peer_process(handle)
        pid = process.pid
        # A Manager way's handle that did not start the server: its close()
        # releases its reference there, which waited for ever on a stopped one.
        other = None
        if isinstance(peer, Server):
            other = type(handle).connect(handle.address, handle.authkey, timeout=JOIN)
        os.kill(pid, signal.SIGSTOP)
        if other is not None:
            closing, took = _close_in_thread(other, STOPPED_BUDGET + SLACK)
            assert not closing.is_alive(), "close() of a connected handle waits on"
            assert took < (reply_within(STOPPED_TIMEOUT) or 0.0) + SLACK, f"{took:.1f} s"
        closing, took = _close_in_thread(handle, STOP_WAIT + SLACK)
        if closing.is_alive():
            os.kill(pid, signal.SIGCONT)
            closing.join()
        assert took < STOP_WAIT + SLACK, f"close() of a stopped peer took {took:.1f} s"
        with pytest.raises(ProcessLookupError):  # killed and reaped: no process left
            os.kill(pid, 0)
    finally:
        handle.close()


@lifecycle("owner_sigint")
def test_owner_or_server_outlives_ctrl_c(make: Callable[[], Any], ways: ModuleType) -> None:
    # Regression (issue 10): Ctrl-C reaches every process of the group, and
    # killed every Queue way's owner, with its state.
    handle = make()
    peer = link(handle)
    if peer is None:
        pytest.skip("this way has no owner process or server")
    if isinstance(peer, Owner):
        # Answered (refused): the owner is serving, so past its start-up.
        with pytest.raises(ValueError, match="unknown request"):
            peer.call("_probe")
        process = peer._process
    else:
        process = peer._manager._process  # serving once the proxy exists
    os.kill(process.pid, signal.SIGINT)
    for call in ways.CALLS.values():
        call(handle)
    assert process.is_alive()


@lifecycle("stalled_close")
def test_close_wakes_a_blocked_call(make: Callable[[], Any], ways: ModuleType, way: str) -> None:
    handle = make()
    blocked = ways.stall(way, handle)
    if blocked is None:
        pytest.skip("no call of this way can block")
    outcome: list[BaseException | None] = []

    def call() -> None:
        try:
            blocked()
        except BaseException as error:
            outcome.append(error)
        else:
            outcome.append(None)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(0.5)  # long enough to be inside the call; it must not return
    assert thread.is_alive(), f"the stalled call did not block: {outcome}"
    handle.close()
    thread.join(TIMEOUT + SLACK)
    assert not thread.is_alive(), "close() did not wake the blocked call"
    assert isinstance(outcome[0], ValueError) and "closed" in str(outcome[0]), outcome


#: What a waiter may raise once the creator is gone or closed: the closed
#: error (a ValueError saying "closed") or, for a stopped server, OwnerGone.
WOKEN = (ValueError, OwnerGone)


def wait_in_child(primitive: str, handle: Any, ready: Any, wait: float) -> None:
    """Process target: wait (timeout=None) on what only the creator ends; exit 0 if woken right."""
    # Connected before the creator may be killed: see ways_locks.connect_in_child.
    getattr(PRIMITIVES[primitive], "connect_in_child", lambda handle: None)(handle)
    ready.set()
    start = time.monotonic()
    try:
        PRIMITIVES[primitive].wait_in_child(handle)
    except WOKEN as error:
        took = time.monotonic() - start
        right = isinstance(error, OwnerGone) or "closed" in str(error)
        print(f"woken after {took:.2f} s: {type(error).__name__}: {error}", flush=True)
        sys.exit(0 if right and took < wait else 1)
    # Only the creator's death can have ended it: a way that takes over
    # from a dead holder (TAKES_OVER) returns; any other must not.
    print(f"returned after {time.monotonic() - start:.2f} s", flush=True)
    sys.exit(1)


@lifecycle("creator_close_wakes")
def test_creator_close_wakes_waiters_in_other_processes(
    primitive: str, way: str, make: Callable[[], Any], ways: ModuleType, ctx: BaseContext
) -> None:
    # Regression (issue 10): a child's acquire() or get() with timeout=None
    # waited for ever once the creator had closed the lock or the channel.
    handle = make()
    ways.hold_for_child(way, handle)
    ready = ctx.Event()
    child = ctx.Process(target=wait_in_child, args=(primitive, handle, ready, 1.0 + SLACK))
    child.start()
    assert ready.wait(SLACK * 4), "the child did not start"
    handle.close()
    child.join(1.0 + SLACK * 2)
    assert child.exitcode == 0, f"the child's wait did not end as it should ({child.exitcode})"


@lifecycle("timeout_rule")
def test_constructor_timeout_follows_one_rule(
    ways: ModuleType, way: str, ctx: BaseContext
) -> None:
    # Regression (issue 9): True was taken as 1 s, and inf, nan, 1e9 raised
    # OSError, OverflowError or ValueError in some ways and waited in others.
    for bad, error in (
        (True, TypeError),
        ("1", TypeError),
        (float("nan"), ValueError),
        (-1, ValueError),
    ):
        with pytest.raises(error):
            ways.make(way, ctx, bad)
    for endless in (float("inf"), 1e9, None):
        handle = ways.make(way, ctx, endless)
        try:
            for call in ways.CALLS.values():
                call(handle)
        finally:
            handle.close()


#: Seconds within which an owner or server outlives its SIGKILLed creator (issue 10).
ORPHAN_GRACE = 2.0

#: A creator in an interpreter of its own (its own resource tracker, its
#: children not ours): it makes a handle, uses it, prints the pids of every
#: process it started, and waits to be killed.
CREATOR = """
import multiprocessing, os, sys, time
from pathlib import Path
import tests.ways_{primitive} as ways


def descendants(pid):
    found = []
    for task in Path(f"/proc/{{pid}}/task").iterdir():
        for child in (task / "children").read_text().split():
            found += [int(child), *descendants(int(child))]
    return found


if __name__ == "__main__":
    ctx = multiprocessing.get_context({method!r})
    handle = ways.make({way!r}, ctx, 3.0)
    for call in () if {waiter!r} else ways.CALLS.values():  # a lock's leave it held
        call(handle)
    if {waiter!r}:  # a child that waits on this creator, reporting on our stdout
        from tests.test_lifecycle import wait_in_child
        ready = ctx.Event()
        ways.hold_for_child({way!r}, handle)
        waiter = ctx.Process(target=wait_in_child, args=({primitive!r}, handle, ready, 1e9))
        waiter.start()
        ready.wait(60)
    print("started", *descendants(os.getpid()), flush=True)
    time.sleep(600)
"""


def running(pid: int) -> bool:
    """True if ``pid`` is a process that has not exited (a zombie has)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def kill_creator(primitive: str, way: str, method: str, waiter: bool) -> tuple[list[int], Any]:
    """Run :data:`CREATOR`, SIGKILL it once it has reported; its pids and its stdout."""
    if not Path("/proc/self/task").exists():
        pytest.skip("needs Linux's /proc to find the creator's children")
    script = CREATOR.format(primitive=primitive, way=way, method=method, waiter=waiter)
    # A Redis way's server is this process's (started here if need be), not
    # one the creator would start and take with it when it is killed.
    home(way, None)
    root = str(Path(__file__).parent.parent)
    creator = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": root},
    )
    assert creator.stdout is not None
    try:
        report = read_line(creator.stdout, 60).split()
    finally:
        creator.kill()
        creator.wait()
    assert report[:1] == ["started"], "the creator failed before its report"
    return [int(pid) for pid in report[1:]], creator.stdout


def read_line(output: Any, wait: float) -> str:
    """The next line of ``output``, or "" if none comes within ``wait`` seconds."""
    ready, _, _ = select.select([output], [], [], wait)
    return str(output.readline()) if ready else ""


def outlived(started: list[int], grace: float) -> list[int]:
    """The processes of ``started`` still running ``grace`` seconds from now (then killed)."""
    deadline = time.monotonic() + grace
    while any(map(running, started)) and time.monotonic() < deadline:
        time.sleep(0.05)  # polled: these processes are not ours to wait for
    left = [pid for pid in started if running(pid)]
    # Do not let them outlive the test. SIGTERM first: a waiter that never
    # woke (a clause a way cannot keep) ends, and the creator's resource
    # tracker, which ignores it, then unlinks what the creator left.
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + SLACK
    while any(map(running, left)) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return left


@lifecycle("creator_killed")
def test_creator_killed_leaves_no_process(primitive: str, way: str, start_method: str) -> None:
    # Regression (issue 10): a Manager server whose creator was SIGKILLed ran
    # for ever (and, under spawn, its resource tracker with it).
    started, output = kill_creator(primitive, way, start_method, waiter=False)
    output.close()
    left = outlived(started, ORPHAN_GRACE + SLACK)
    assert not left, f"processes {left} still running after the creator died"


#: Seconds within which a waiter notices that its creator died (issue 10: "about 1 s").
NOTICE = 1.0


@lifecycle("creator_killed_wakes")
def test_creator_killed_wakes_waiters(primitive: str, way: str, start_method: str) -> None:
    # Regression (issue 10): with timeout=None, a child's get() or acquire()
    # never returned once the creator had died.
    started, output = kill_creator(primitive, way, start_method, waiter=True)
    line = ""
    try:
        killed = time.monotonic()
        # The waiter writes one line to the creator's stdout, which it shares.
        line = read_line(output, NOTICE + SLACK * 2)
        took = time.monotonic() - killed
    finally:
        output.close()
        # A waiter that never woke still runs: the test fails on its line
        # below, and its processes need no grace to be found running.
        left = outlived(started, ORPHAN_GRACE + SLACK if line else 0.0)
    if way in getattr(PRIMITIVES[primitive], "TAKES_OVER", {}):
        assert line.startswith("returned after"), f"the waiter said {line!r}"
    else:
        assert line.startswith("woken after"), f"the waiter said {line!r}"
        assert "closed" in line or "OwnerGone" in line, line
    assert took < NOTICE + SLACK, f"the waiter woke {took:.1f} s after its creator died"
    assert not left, f"processes {left} still running after the creator died"


# The rules themselves, once.


@pytest.mark.parametrize(
    ("timeout", "expected"),
    [(0, 0.0), (2.5, 2.5), (None, None), (float("inf"), None), (1e9, None), (3e6, None)],
)
def test_seconds_accepts(timeout: object, expected: float | None) -> None:
    assert seconds(timeout) == expected


@pytest.mark.parametrize(
    ("timeout", "error"),
    [(True, TypeError), ("1", TypeError), (float("nan"), ValueError), (-0.5, ValueError)],
)
def test_seconds_refuses(timeout: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="timeout"):
        seconds(timeout)


def test_with_keeps_the_error_when_close_fails() -> None:
    class Failing(Closable):
        def _release(self) -> None:
            raise OSError("cannot release")

    with pytest.raises(KeyError) as caught, Failing():
        raise KeyError("the real problem")
    if sys.version_info >= (3, 11):
        assert "close() failed: OSError: cannot release" in caught.value.__notes__[0]
    with pytest.raises(OSError), Failing():
        pass


def test_unpicklable_error_becomes_the_same_runtime_error() -> None:
    class Local(Exception):  # a class pickle cannot find by name
        pass

    ok, error = run(lambda: (_ for _ in ()).throw(Local("boom")))
    assert not ok and type(error) is RuntimeError and "Local: boom" in str(error)
    ok, error = run(sys.exit, 3)
    assert not ok and type(error) is SystemExit and error.code == 3


PRIVATE_SHM = (
    "unshare -m --propagation private sh -c "
    '\'mount -t tmpfs -o size=1m tmpfs /dev/shm && exec "$0" -c "$1"\''
)


def test_full_dev_shm_is_an_error_not_a_sigbus() -> None:
    # A segment larger than /dev/shm used to be created fine and kill the
    # first process to write its last page with SIGBUS.
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare (util-linux) for a private 1 MiB /dev/shm")
    code = (
        "from shmref import segment\n"
        "try:\n"
        "    segment.create(8 << 20)\n"
        "except OSError as error:\n"
        "    print('refused:', error)\n"
    )
    done = subprocess.run(
        [*shlex.split(PRIVATE_SHM), sys.executable, code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
    )
    if "mount" in done.stderr and done.returncode:
        pytest.skip(f"cannot mount a private /dev/shm here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    assert "refused: " in done.stdout and "/dev/shm" in done.stdout
