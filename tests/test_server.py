"""Every Manager way reached by address and key (shmref/server.py's ManagerHandle).

Each clause runs for every Manager way in :data:`WAYS` under every start
method (the creator's server is started with it). The process that
connects is an unrelated interpreter (``subprocess``), not a
multiprocessing child: it inherits nothing and is given only the address
and the key, as a process on another host would be.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from multiprocessing.managers import BaseManager
from pathlib import Path
from typing import Any

import pytest

import shmref
from shmref import server as server_module
from shmref.arrays import ManagerArray
from shmref.channel import ManagerChannel
from shmref.counter import CounterManager, ManagerCounter
from shmref.lifecycle import OwnerGone
from shmref.locks import ManagerLock, ManagerRLock, ManagerSemaphore
from shmref.metrics import ManagerMetrics
from shmref.table import ManagerDict
from shmref.value import ManagerValue
from tests.conftest import JOIN, contract

LOOPBACK = ("127.0.0.1", 0)


def seen_when_changed_elsewhere(way_name: str, handle: Any) -> bool:
    """Make the way's change on ``handle`` from another thread; does this one see it?

    The creator checks from its main thread, which for an RLock must not be
    the holder; and the holder's thread stays alive meanwhile: the server
    knows an RLock's holder by the id of the thread serving it, which the
    thread serving a new connection may reuse once the holder's has ended
    (see tests/test_locks.py).
    """
    failed: list[BaseException] = []
    changed, checked = threading.Event(), threading.Event()

    def change() -> None:
        try:
            exec(WAYS[way_name].change, {"h": handle})
        except BaseException as error:
            failed.append(error)
        changed.set()
        checked.wait(JOIN)

    thread = threading.Thread(target=change)
    thread.start()
    try:
        changed.wait(JOIN)
        if failed:
            raise failed[0]
        return WAYS[way_name].seen(handle)
    finally:
        checked.set()
        thread.join(JOIN)


@dataclass(frozen=True)
class Way:
    make: Callable[..., Any]  # (ctx, **kwargs) -> a new handle
    change: str  # Python run on the handle ``h``, in this process or another one
    seen: Callable[[Any], bool]  # run by the creator: is the change there?


#: Every Manager way, with one change and how its creator sees it.
WAYS: dict[str, Way] = {
    "counter": Way(
        lambda ctx, **kw: ManagerCounter(ctx=ctx, **kw), "h.add(5)", lambda h: h.get() == 5
    ),
    "value": Way(
        lambda ctx, **kw: ManagerValue(ctypes.c_int64, 0, ctx=ctx, **kw),
        "h.set(7)",
        lambda h: h.get() == 7,
    ),
    "arrays": Way(
        lambda ctx, **kw: ManagerArray("q", 3, ctx=ctx, **kw),
        "h[1] = 9",
        lambda h: list(h) == [0, 9, 0],
    ),
    "metrics": Way(
        lambda ctx, **kw: ManagerMetrics(2, ctx=ctx, **kw),
        "h.add(1, completed=3)",
        lambda h: h.snapshot()[1]["completed"] == 3,
    ),
    "lock": Way(
        lambda ctx, **kw: ManagerLock(ctx=ctx, **kw),
        "assert h.acquire(timeout=5)",
        lambda h: not h.acquire(False),
    ),
    "rlock": Way(
        lambda ctx, **kw: ManagerRLock(ctx=ctx, **kw),
        "assert h.acquire(timeout=5)",
        lambda h: not h.acquire(False),
    ),
    "semaphore": Way(
        lambda ctx, **kw: ManagerSemaphore(2, ctx=ctx, **kw),
        "assert h.acquire(timeout=5)",
        lambda h: h.acquire(False) and not h.acquire(False),
    ),
    "table": Way(
        lambda ctx, **kw: ManagerDict(capacity=8, ctx=ctx, **kw),
        "h['k'] = 'v'",
        lambda h: h.get("k") == "v",
    ),
    "channel": Way(
        lambda ctx, **kw: ManagerChannel(capacity=4, max_size=16, ctx=ctx, **kw),
        "h.put(b'hi')",
        lambda h: h.get(timeout=5) == b"hi",
    ),
}


def ways() -> pytest.MarkDecorator:
    return contract(WAYS)


@pytest.fixture
def make(way_name: str, ctx: BaseContext) -> Iterator[Callable[..., Any]]:
    """Build handles of the way under test; all are closed afterwards."""
    made: list[Any] = []

    def make(**kwargs: Any) -> Any:
        handle = WAYS[way_name].make(ctx, **kwargs)
        made.append(handle)
        return handle

    yield make
    for handle in made:
        handle.close()


@pytest.fixture
def handle(make: Callable[..., Any]) -> Any:
    """A handle of the way under test, serving over TCP on loopback."""
    return make(address=LOOPBACK)


#: What the unrelated interpreter runs: connect, change, close.
CONNECT = """\
import sys
from {module} import {name}
h = {name}.connect((sys.argv[1], int(sys.argv[2])), bytes.fromhex(sys.argv[3]))
{change}
h.close()
"""


def connect_elsewhere(
    handle: Any, change: str, authkey: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``change`` on ``connect(handle.address, authkey)`` in a fresh interpreter."""
    host, port = handle.address
    key = handle.authkey if authkey is None else authkey
    source = CONNECT.format(
        module=type(handle).__module__, name=type(handle).__name__, change=change
    )
    # Only shmref's own directory: the interpreter must not see the tests.
    package_root = str(Path(shmref.__file__).resolve().parent.parent)
    return subprocess.run(
        [sys.executable, "-c", source, host, str(port), key.hex()],
        env={**os.environ, "PYTHONPATH": package_root},
        capture_output=True,
        text=True,
        timeout=JOIN,
    )


# Serving over TCP.


@ways()
def test_tcp_handle_round_trip(handle: Any, way_name: str) -> None:
    host, port = handle.address
    assert (host, type(port)) == ("127.0.0.1", int) and 0 < port < 65536
    assert type(handle.authkey) is bytes and len(handle.authkey) == 32
    assert seen_when_changed_elsewhere(way_name, handle)


@ways()
def test_unrelated_interpreter_connects_and_its_change_is_seen(handle: Any, way_name: str) -> None:
    done = connect_elsewhere(handle, WAYS[way_name].change)
    assert done.returncode == 0, done.stderr
    assert WAYS[way_name].seen(handle)


@ways()
def test_wrong_or_missing_key_is_refused(handle: Any, way_name: str) -> None:
    cls = type(handle)
    # Not the key cut short: HMAC pads a short key with zero bytes, so a key
    # whose last byte is 0 (1 in 256) and its prefix are the same key.
    near = handle.authkey[:-1] + bytes([handle.authkey[-1] ^ 1])
    for wrong in (secrets.token_bytes(32), b"", near):
        with pytest.raises(multiprocessing.AuthenticationError):
            cls.connect(handle.address, wrong)
    # A client that brings no key of its own knocks with its process's key.
    stranger = BaseManager(address=handle.address)
    with pytest.raises(multiprocessing.AuthenticationError):
        stranger.connect()
    # And from an interpreter that got the address but another key.
    done = connect_elsewhere(handle, WAYS[way_name].change, secrets.token_bytes(32))
    assert done.returncode != 0 and "AuthenticationError" in done.stderr, done.stderr


@ways()
def test_closing_a_connected_handle_leaves_the_creator_working(handle: Any, way_name: str) -> None:
    connected = type(handle).connect(handle.address, handle.authkey)
    assert (connected.address, connected.authkey) == (handle.address, handle.authkey)
    connected.close()
    with pytest.raises(ValueError, match="closed"):
        exec(WAYS[way_name].change, {"h": connected})
    assert seen_when_changed_elsewhere(way_name, handle)


@ways()
def test_connected_handle_raises_owner_gone_once_the_creator_closes(
    handle: Any, way_name: str
) -> None:
    connected = type(handle).connect(handle.address, handle.authkey)
    handle.close()
    with pytest.raises(OwnerGone):
        exec(WAYS[way_name].change, {"h": connected})
    connected.close()


# The default: a private Unix socket, and a random key.


def test_default_is_a_unix_socket_that_connect_reaches_too(ctx: BaseContext) -> None:
    with ManagerCounter(ctx=ctx) as counter, ManagerCounter(ctx=ctx) as other:
        assert isinstance(counter.address, str)
        assert len(counter.authkey) == 32 and counter.authkey != other.authkey
        with ManagerCounter.connect(counter.address, counter.authkey) as connected:
            connected.add(3)
        assert counter.get() == 3


def test_an_application_default_socket_timeout_changes_nothing(ctx: BaseContext) -> None:
    # Regression: shmref made its connections with a socket that
    # socket.setdefaulttimeout() turned non-blocking, so the first call raised
    # TimeoutError at once ("took no connection").
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(5.0)
    try:
        with ManagerCounter(ctx=ctx) as counter:
            counter.add(2)
            with ManagerCounter.connect(counter.address, counter.authkey) as connected:
                connected.add(3)
            assert counter.get() == 5
    finally:
        socket.setdefaulttimeout(before)


def test_a_given_key_is_the_key(ctx: BaseContext) -> None:
    with ManagerCounter(ctx=ctx, address=LOOPBACK, authkey=b"not random") as counter:
        assert counter.authkey == b"not random"
        done = connect_elsewhere(counter, "h.add(2)")
        assert done.returncode == 0, done.stderr
        assert counter.get() == 2


def _add_what_arrives(reader: Any) -> None:
    counter = reader.recv()
    counter.add(4)
    counter.close()


def test_a_handle_sent_through_a_pipe_carries_its_key(ctx: BaseContext) -> None:
    # Not a Process argument: the child is running when the handle arrives,
    # and its process key is not the server's.
    reader, writer = ctx.Pipe(duplex=False)
    with reader, writer, ManagerCounter(ctx=ctx, address=LOOPBACK) as counter:
        process = ctx.Process(target=_add_what_arrives, args=(reader,))
        process.start()
        writer.send(counter)
        process.join(JOIN)
        assert process.exitcode == 0
        process.close()
        assert counter.get() == 4


# What connect() refuses.


def test_connect_to_another_way_is_refused(ctx: BaseContext) -> None:
    with ManagerCounter(ctx=ctx, address=LOOPBACK) as counter:
        with pytest.raises(TypeError, match="serves a ManagerCounter, not a ManagerValue"):
            ManagerValue.connect(counter.address, counter.authkey)
        assert counter.get() == 0


def test_connect_to_a_shared_manager_is_refused(ctx: BaseContext) -> None:
    # A manager passed as manager= may hold many states: connect() would not
    # know which one; it attaches only to a server a handle started.
    manager = CounterManager(address=LOOPBACK, authkey=b"shared", ctx=ctx)
    manager.start()
    try:
        with ManagerCounter(1, manager=manager) as counter:
            assert counter.address == manager.address and counter.authkey == b"shared"
            with pytest.raises(LookupError, match="manager="):
                ManagerCounter.connect(manager.address, b"shared")
            assert counter.get() == 1
    finally:
        manager.shutdown()


def _sends_at_once(fd: int) -> bool:
    with socket.socket(fileno=os.dup(fd)) as sock:
        return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


def test_tcp_connections_send_at_once(ctx: BaseContext) -> None:
    # Without TCP_NODELAY a message over 16 KiB (header and body sent apart)
    # waits for a delayed acknowledgement: about 45 ms per 32 KiB call.
    with ManagerCounter(ctx=ctx, address=LOOPBACK) as counter:
        counter.add(1)  # this thread's connection is open
        assert _sends_at_once(counter._server.proxy._tls.connection.fileno())
    # The server's end: accepted from a listening socket that has it.
    server = server_module._Server({}, LOOPBACK, b"key", "pickle")
    try:
        assert _sends_at_once(server.listener._listener._socket.fileno())
    finally:
        server.listener.close()


def test_connect_gives_up_at_its_timeout_where_nothing_takes_the_connection() -> None:
    # A host that drops packets, played by a listener whose queue is full:
    # the kernel neither accepts nor refuses a new connection, it retries.
    # Without a timeout of connect()'s own, the standard library's client
    # would wait for the kernel to give up, about two minutes.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        queued = []
        try:
            while True:  # until one connection is neither taken nor refused
                knock = socket.socket()
                queued.append(knock)
                knock.settimeout(0.2)
                try:
                    knock.connect(listener.getsockname())
                except TimeoutError:
                    break
            began = time.monotonic()
            with pytest.raises(OwnerGone, match=r"within 0\.5 s"):
                ManagerCounter.connect(listener.getsockname(), b"key", timeout=0.5)
            assert time.monotonic() - began < 0.5 + JOIN
        finally:
            for knock in queued:
                knock.close()


def test_connect_gives_up_at_its_timeout_where_the_server_never_speaks() -> None:
    # A server that takes the connection and then says nothing (stopped,
    # hung, or not a Manager at all): the standard library's client waits
    # for its challenge for ever. connect()'s timeout covers the handshake too.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # the kernel takes the connection; nobody answers
        began = time.monotonic()
        with pytest.raises(OwnerGone, match=r"did not answer within 0\.5 s"):
            ManagerCounter.connect(listener.getsockname(), b"key", timeout=0.5)
        assert time.monotonic() - began < 0.5 + JOIN


def test_connect_to_a_closed_port_raises_owner_gone() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        address = unused.getsockname()  # bound, not listening: refused
        with pytest.raises(OwnerGone, match="Connection refused"):
            ManagerCounter.connect(address, b"key", timeout=5)


@pytest.mark.parametrize(
    ("kwargs", "error", "says"),
    [
        ({"address": "127.0.0.1:0"}, TypeError, "a \\(host, port\\) pair"),
        ({"address": ("127.0.0.1",)}, TypeError, "a \\(host, port\\) pair"),
        ({"address": ("127.0.0.1", "80")}, TypeError, "a \\(host, port\\) pair"),
        ({"address": ("127.0.0.1", 70000)}, ValueError, "from 0 to 65535"),
        ({"authkey": "text"}, TypeError, "authkey must be bytes"),
        ({"authkey": b""}, ValueError, "must not be empty"),
    ],
    ids=repr,
)
def test_bad_address_or_key_is_refused_before_anything_starts(
    kwargs: dict[str, Any], error: type[Exception], says: str
) -> None:
    with pytest.raises(error, match=says):
        ManagerCounter(**kwargs)


def test_address_with_a_shared_manager_is_refused(ctx: BaseContext) -> None:
    manager = CounterManager(ctx=ctx)
    manager.start()
    try:
        with pytest.raises(ValueError, match="belong to the manager"):
            ManagerCounter(manager=manager, address=LOOPBACK)
    finally:
        manager.shutdown()
