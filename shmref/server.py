"""The Manager ways' server: one state object per handle, reached through a proxy.

Each primitive registers its state class, a subclass of :class:`Served`,
with a ``BaseManager`` subclass of its own (``CounterManager`` and so on);
every public method of the state is a request. :meth:`Server.call` sends one
and reads the reply itself, on the proxy's connection, so that it can tell
the server's answer (a result, or the state's own exception, raised here)
from the transport failing (the request cannot be pickled: ``TypeError``;
the server is gone: one named error, :class:`~shmref.lifecycle.OwnerGone`;
the server alive but silent, stopped or hung: ``TimeoutError``, as from an
owner process, once the handle's ``timeout`` is over).

The server thread that runs a request catches ``Exception`` only: a
``SystemExit`` raised by a user's function would end that thread and leave
its caller waiting. A request that runs the user's code therefore goes
through :meth:`Server.call_guarded`, to :meth:`Served.serve`, which answers
``(ok, result)`` whatever ``fn`` raised, ``BaseException`` included. The
other requests skip that envelope: it cost a Manager call about a tenth of
its time (measured against the hand-written ways, same run).

A server serves on a private Unix socket, or over TCP at an explicit
``(host, port)``, and refuses every client that does not hold its key (32
random bytes unless the creator gives one). A server started for a handle
holds that handle's published description (:meth:`Server.publish`), so that
:meth:`Server.connect` can rebuild the handle in any process that knows the
address and the key: :class:`ManagerHandle` gives every Manager way its
``address``, ``authkey`` and ``connect()``.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import secrets
import socket
import struct
import threading
import time
from collections.abc import Callable
from multiprocessing import connection, current_process, managers
from multiprocessing.managers import BaseManager, RebuildProxy  # type: ignore[attr-defined]
from typing import Any, Protocol, TypeVar

from shmref.lifecycle import (
    DEFAULT_TIMEOUT,
    SLICE,
    STOP_WAIT,
    Closable,
    Lifeline,
    OwnerGone,
    context,
    lifeline,
    reply_within,
    run,
    seconds,
)

#: Where a server listens: a Unix socket's path, or a TCP ``(host, port)``.
Address = str | tuple[str, int]

#: The typeid, registered by :func:`register_state`, that a connecting
#: client asks for: it returns the state the server's creator published.
ROOT = "published"

#: In a server process: ``(pid, state, handle)``, what the creator published.
#: The pid tells a server forked from another server that the slot it
#: inherited is not its own.
_published: tuple[int, Any, bytes] | None = None


class Served:
    """Base of a state object living in a Manager server.

    Register it with ``exposed`` left out: its public methods are the
    requests, :meth:`serve` among them.
    """

    def serve(self, method: str, args: tuple[Any, ...]) -> tuple[bool, Any]:
        """``method(*args)`` as data: ``(True, result)`` or ``(False, error)``."""
        if method.startswith("_"):
            return False, ValueError(f"unknown request {method!r}")
        return run(getattr(self, method), *args)

    def publish(self, handle: bytes) -> None:
        """Make this the state that :meth:`Server.connect` reaches; once per server.

        ``handle`` is what a connecting process rebuilds its handle from.
        """
        global _published
        if _published is not None and _published[0] == os.getpid():
            raise RuntimeError("this server already holds a published state")
        _published = (os.getpid(), self, handle)

    def handle(self) -> bytes:
        """What :meth:`publish` was given."""
        if _published is None or _published[0] != os.getpid() or _published[1] is not self:
            raise LookupError(
                "this server holds no published state: connect() reaches only a server "
                "that a handle started itself (not a manager passed as manager=)"
            )
        return _published[2]


def _published_state() -> Served:
    """The callable of :data:`ROOT`, run in the server: the published state.

    If there is none, a bare :class:`Served`, whose :meth:`~Served.handle`
    says so: an error raised here would reach the client as a traceback's
    text (``RemoteError``), an error raised by a request as itself.
    """
    if _published is None or _published[0] != os.getpid():
        return Served()
    return _published[1]  # type: ignore[no-any-return]


def _send_at_once(connection: Any) -> None:
    """TCP_NODELAY on a TCP connection of ``multiprocessing.connection``; others are left as is.

    The standard library sets none. A message over 16 KiB goes out as two
    writes, its length then its body, and Nagle's algorithm holds the body
    until the length is acknowledged, which the receiver delays: a Manager
    call moving 32 KiB over TCP took about 47 ms instead of a fraction of a
    millisecond (tests/benchmarks/test_bench_hosts.py, test_nagle).
    """
    with socket.socket(fileno=connection.fileno()) as sock:
        try:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        finally:
            sock.detach()  # the connection keeps its descriptor


def _answers_within(sock: socket.socket, budget: float | None) -> None:
    """Make a connect, read or write of ``sock`` that waits longer than ``budget`` seconds fail.

    For a request, the budget is :func:`~shmref.lifecycle.reply_within` the
    handle's ``timeout``, for a request that waits one :data:`SLICE` in the
    server at most (the waits of a lock's acquire and of a channel's get and
    put are made of slices, one request each): see :func:`_reply_budget`.
    Past it, ``connect``, ``os.read`` or ``os.write`` fails with
    ``BlockingIOError`` (EINPROGRESS, EAGAIN), and :meth:`Server.call` says
    ``TimeoutError``: the server is alive (a dead one closes the connection)
    but stopped or hung, or still running the request. Set once per
    connection, by the kernel: no system call per request.
    """
    if budget is None:
        return  # as long as it takes: a dead server still ends the wait (end of file)
    whole, part = divmod(budget, 1.0)
    limit = struct.pack("@ll", int(whole), int(part * 1_000_000))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, limit)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, limit)


def _reply_budget(timeout: float | None) -> float | None:
    """How long a request of a handle with ``timeout`` may wait for its reply."""
    return reply_within(timeout, SLICE)


def _client(address: Any, authkey: bytes, budget: float | None) -> Any:
    """``multiprocessing.connection.Client(address, authkey=authkey)``, no wait past ``budget``.

    Written out so that the connect and the key's handshake are bounded
    (:func:`_answers_within`): the standard library's wait for a stopped
    server's answers for ever. No thread: a Ctrl-C that lands here is a
    KeyboardInterrupt, nothing else, and the half-made connection is closed.
    """
    family = connection.address_type(address)  # type: ignore[attr-defined]
    with socket.socket(getattr(socket, family)) as sock:
        # Blocking, as the standard library's: a socket.setdefaulttimeout()
        # of the application's would make it non-blocking.
        sock.setblocking(True)
        _answers_within(sock, budget)
        sock.connect(address)
        conn = connection.Connection(sock.detach())
    try:
        connection.answer_challenge(conn, authkey)
        connection.deliver_challenge(conn, authkey)
    except BaseException:
        conn.close()
        raise
    return conn


def _accepted(proxy: Any, name: str, timeout: float | None) -> Any:
    """A new connection to ``proxy``'s server, accepted as ``name``'s (``BaseProxy._connect``)."""
    conn = _client(proxy._token.address, proxy._authkey, _reply_budget(timeout))
    try:
        managers.dispatch(conn, None, "accept_connection", (name,))  # type: ignore[attr-defined]
    except BaseException:
        conn.close()
        raise
    return conn


class _Server(managers.Server):
    """The standard Manager server, whose TCP connections send at once.

    TCP_NODELAY is set on the listening socket: Linux and the BSDs give it
    to every connection accepted from it. (The clients set theirs in
    :meth:`Server.call`.)
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        listening = getattr(self.listener, "_listener", None)  # type: ignore[attr-defined]
        if listening is not None and hasattr(listening, "_socket"):
            sock = listening._socket
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def register_state(manager_type: type[BaseManager], typeid: str, state_type: type[Served]) -> None:
    """Register ``state_type`` as ``manager_type``'s ``typeid``, and :data:`ROOT` beside it.

    The server ``manager_type`` starts is :class:`_Server` (TCP_NODELAY).
    """
    manager_type._Server = _Server  # type: ignore[attr-defined]
    manager_type.register(typeid, state_type)
    manager_type.register(ROOT, _published_state)


class _Client(BaseManager):
    """The manager a connecting process uses: it asks only for :data:`ROOT`."""


_Client.register(ROOT)


def _reach(address: tuple[str, int], timeout: float | None, what: str) -> None:
    """Raise :class:`OwnerGone` unless ``address`` takes a TCP connection within ``timeout``.

    ``multiprocessing.connection.Client`` connects with no timeout of its
    own: to a host that drops packets it waits for the kernel to give up
    (about two minutes on Linux). A connection of our own, closed at once,
    tells first; the server takes it as a client that left before its
    challenge, and goes on serving.
    """
    try:
        socket.create_connection(address, timeout=timeout).close()
    except TimeoutError:
        raise OwnerGone(
            f"no Manager server of {what} answered at {address!r} within {timeout} s"
        ) from None
    except OSError as error:
        raise OwnerGone(f"no Manager server of {what} at {address!r}: {error}") from None


def _within(
    wait: float | None,
    connect: Callable[[], tuple[Server, type[Any], dict[str, Any]]],
    gone: str,
) -> tuple[Server, type[Any], dict[str, Any]]:
    """``connect()``, or :class:`OwnerGone` saying ``gone`` if it takes longer than ``wait``.

    The standard library's client waits for the server's challenge, and for
    each answer after it, with no timeout: a server that took the connection
    and then stopped (SIGSTOP, a hang, not a Manager at all) would hold the
    caller for ever. The handshakes run in a thread of their own, which the
    caller stops waiting for; a link it makes after that is closed there.
    """
    if wait is None:
        return connect()
    outcome: list[Any] = []
    given_up = [False]
    decided = threading.Lock()

    def run() -> None:
        try:
            result: Any = connect()
        except BaseException as error:  # given to the caller, raised there
            result = error
        with decided:
            if not given_up[0]:
                outcome.append(result)
                return
        if not isinstance(result, BaseException):
            result[0].close()

    thread = threading.Thread(target=run, name="shmref-connect", daemon=True)
    thread.start()
    try:
        thread.join(wait)
    finally:
        with decided:
            given_up[0] = not outcome
    if not outcome:
        raise OwnerGone(gone)
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]  # type: ignore[no-any-return]


def _shut_down(manager: Any) -> None:
    """What ``manager.shutdown()`` does, with the server killed if it has not stopped in STOP_WAIT.

    The standard library's shutdown connects to the server and waits for its
    handshake with no timeout: a server stopped (SIGSTOP) or hung would hold
    the creator's close() for ever. This sends the same request on a
    bounded connection, in this thread, then runs the standard shutdown,
    which finds the server stopped and only marks the manager so.
    """
    process = manager._process
    asked = False
    with contextlib.suppress(Exception):  # a server stopped, hung or gone: killed below
        conn = _client(manager._address, manager._authkey, STOP_WAIT)
        try:
            managers.dispatch(conn, None, "shutdown")  # type: ignore[attr-defined]
            asked = True
        finally:
            conn.close()
    if asked:
        process.join(STOP_WAIT)
    if process.is_alive():
        process.kill()
        process.join()
    manager.shutdown()


class _LinkPlaceholder:
    """Stands for the handle's :class:`Server` in its published description."""


def _address(address: object) -> Address | None:
    """A checked ``address``: None (a private Unix socket) or a TCP ``(host, port)``."""
    if address is None:
        return None
    if (
        not isinstance(address, tuple)
        or len(address) != 2
        or not isinstance(address[0], str)
        or isinstance(address[1], bool)
        or not isinstance(address[1], int)
    ):
        raise TypeError(f"address must be None or a (host, port) pair, not {address!r}")
    if not 0 <= address[1] <= 65535:
        raise ValueError(f"the port must be from 0 to 65535, not {address[1]}")
    return address


def _key(authkey: object) -> bytes:
    """A checked key, to knock with: bytes, as ``multiprocessing.connection`` takes it."""
    if not isinstance(authkey, bytes):
        raise TypeError(f"authkey must be bytes, not {type(authkey).__name__}")
    return authkey


def _server_key(authkey: object) -> bytes:
    """The key of a new server: ``authkey``, never empty, or 32 fresh random bytes for None."""
    if authkey is None:
        return secrets.token_bytes(32)
    key = _key(authkey)
    if not key:
        raise ValueError("authkey must not be empty: anyone could connect")
    return key


_NO_KEYWORDS: dict[str, Any] = {}


def _drop(proxy: Any) -> None:
    """Close this thread's connection to the server, left mid-message by an interrupt.

    Half a request, or a reply nobody read: kept, the next call would read
    this one's reply as its own. The next call opens a new connection (and
    the server thread of this one ends).
    """
    try:
        conn = proxy._tls.connection
        del proxy._tls.connection
    except AttributeError:
        return
    conn.close()


def _exit_with_creator(creator: Lifeline) -> None:
    """Initializer of a server started by :class:`Server`: it ends when its creator does.

    A ``BaseManager`` server stops only when asked; one whose creator was
    SIGKILLed would run for ever. A thread of the server waits on the
    creator's :class:`~shmref.lifecycle.Lifeline` (not on its sentinel, which
    every process the creator forks afterwards holds open) and ends the
    process. The state dies with it: nobody can reach it any more.
    """

    def watch() -> None:
        creator.wait()
        os._exit(0)

    threading.Thread(target=watch, name="shmref-creator-watch", daemon=True).start()


class Server:
    """A handle's link to its state in a Manager server; pickles with the handle.

    With ``manager=None`` a server of ``manager_type`` is started for this
    handle, at ``address`` (None: a private Unix socket; ``(host, port)``:
    TCP, port 0 for a free one) with ``authkey`` (None: 32 random bytes),
    and stopped by its creator's ``close()``; a started manager passed in is
    shared and left running. ``typeid`` is the name the state class is
    registered under, ``args`` its constructor's arguments. ``timeout`` is
    the handle's: a request the server leaves unanswered that long (beyond
    the slice it may wait there) raises ``TimeoutError``. A link pickles
    with its key: whoever unpickles it may use the server.
    """

    def __init__(
        self,
        manager_type: type[Any],
        typeid: str,
        args: tuple[Any, ...],
        *,
        what: str,
        manager: Any = None,
        ctx: Any = None,
        closed_error: type[ValueError] = ValueError,
        address: object = None,
        authkey: object = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        started = None
        if manager is None:
            started = manager = manager_type(
                address=_address(address), authkey=_server_key(authkey), ctx=context(ctx)
            )
            manager.start(_exit_with_creator, (lifeline(),))
        elif address is not None or authkey is not None:
            raise ValueError(f"{what}: address and authkey belong to the manager passed in")
        self._attach(getattr(manager, typeid)(*args), what, closed_error, timeout, started)

    def _attach(
        self,
        proxy: Any,
        what: str,
        closed_error: type[ValueError],
        timeout: float | None,
        started: Any = None,
    ) -> None:
        self.what = what
        #: How long a request may go unanswered, beyond its own wait in the
        #: server (see _answers_within): the handle's timeout.
        self.timeout = timeout
        self.closed_error = closed_error
        self.closed = False
        self.proxy: Any = proxy
        # As the proxy connects: the server's own address for its creator,
        # the one it was reached at for a connect()ed handle.
        self.address: Address = proxy._token.address
        self.authkey = bytes(proxy._authkey)
        self._manager: Any = started
        self._creator: int | None = os.getpid() if started is not None else None

    @classmethod
    def connect(
        cls,
        address: object,
        authkey: object,
        what: str,
        closed_error: type[ValueError],
        timeout: object = DEFAULT_TIMEOUT,
    ) -> tuple[Server, type[Any], dict[str, Any]]:
        """A new link to the state published at ``address``, not its creator.

        Returns the link, the published handle's type and its state for
        ``__setstate__``, the link in it. A wrong key raises
        ``multiprocessing.AuthenticationError``; an address that does not
        take the connection, complete the handshake and answer within
        ``timeout`` seconds raises :class:`~shmref.lifecycle.OwnerGone`.
        """
        if not isinstance(address, str):
            address = _address(address)
        key = _key(authkey)
        wait = seconds(timeout)
        began = time.monotonic()
        if isinstance(address, tuple):
            _reach(address, wait, what)
        return _within(
            None if wait is None else max(0.0, wait - (time.monotonic() - began)),
            lambda: cls._connect(address, key, what, closed_error),
            f"the Manager server of {what} at {address!r} did not answer within {wait} s",
        )

    @classmethod
    def _connect(
        cls, address: Any, key: bytes, what: str, closed_error: type[ValueError]
    ) -> tuple[Server, type[Any], dict[str, Any]]:
        client = _Client(address=address, authkey=key)
        client.connect()
        link = cls.__new__(cls)
        # Within connect()'s own timeout (run by _within), then the creator's.
        link._attach(getattr(client, ROOT)(), what, closed_error, None)
        try:
            handle_type, described, timeout = pickle.loads(link.answer("handle"))
        except BaseException:
            link.close()
            raise
        link.timeout = timeout  # this thread's connection goes with it: the next is bounded
        state = {
            key: link if value is _LinkPlaceholder else value for key, value in described.items()
        }
        return link, handle_type, state

    def publish(self, handle: Any) -> None:
        """Let :meth:`connect` rebuild ``handle``, if it started its server.

        The creator calls this once ``handle`` is whole; what is published
        is its pickled state, this link left out.
        """
        if self._manager is None:
            return
        state = handle.__getstate__()
        described = {
            key: _LinkPlaceholder if value is self else value for key, value in state.items()
        }
        if _LinkPlaceholder not in described.values():
            raise RuntimeError(f"{self.what}: the handle's state does not hold its link")
        self.call("publish", pickle.dumps((type(handle), described, self.timeout)))

    def make(self, typeid: str, *args: Any) -> Any:
        """Another proxy, from the server this handle started (creator only)."""
        if self._manager is None:
            raise RuntimeError(f"{self.what} did not start its server: it cannot add to it")
        return getattr(self._manager, typeid)(*args)

    def __getstate__(self) -> dict[str, Any]:
        # The proxy's own pickle carries the key only to a child being
        # started: sent any other way (a pipe, a queue), the proxy would
        # knock with the receiver's process key, which is not this server's.
        _, (proxy_type, token, serializer, kwds) = self.proxy.__reduce__()
        return {
            "what": self.what,
            "closed_error": self.closed_error,
            "timeout": self.timeout,
            "proxy": (proxy_type, token, serializer, {**kwds, "authkey": self.authkey}),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._attach(
            RebuildProxy(*state["proxy"]), state["what"], state["closed_error"], state["timeout"]
        )

    def call(self, method: str, *args: Any) -> Any:
        """``method(*args)`` run by the server: its result, or its exception raised here.

        What ``BaseProxy._callmethod`` does, written out so that a failure of
        the transport is told from an exception the server sends back, and
        so that a server that stops answering (SIGSTOP, a hang) raises
        ``TimeoutError`` after the handle's timeout, as an owner process
        does: then the connection is closed, never read again (the reply may
        still come), and the next call opens another. The request may have
        run, or may run once the server goes on.
        """
        proxy = self.proxy
        if proxy is None:  # dropped by close(), perhaps in another thread
            raise self.closed_error(f"{self.what} is closed")
        # The errors are turned into ours outside the except blocks: the
        # original's traceback holds the connection's receive buffer (a
        # BytesIO with an exported view), which must not outlive this call.
        unsent = gone = None
        late = False
        try:
            conn = proxy._tls.connection
        except AttributeError:  # this thread's first call: it gets a connection of its own
            try:
                conn = self._open(proxy)
            except TimeoutError:  # the server took no connection in time: not gone
                raise
            except (EOFError, OSError) as error:
                gone = type(error).__name__
        if gone is None:
            try:
                # Pickled whole before anything is written: a failure sends nothing.
                conn.send((proxy._id, method, args, _NO_KEYWORDS))
            except (pickle.PicklingError, TypeError, AttributeError, RuntimeError) as error:
                # A multiprocessing Lock raises RuntimeError. The Queue ways
                # give TypeError for all of these too.
                unsent = f"{type(error).__name__}: {error}"
            except BlockingIOError:  # no room within the budget: see _answers_within
                late = True
                _drop(proxy)
            except OSError as error:
                gone = type(error).__name__
            except BaseException:
                _drop(proxy)
                raise
        if unsent is not None:
            raise TypeError(f"cannot send to the Manager server of {self.what}: {unsent}")
        if gone is None and not late:
            try:
                kind, result = conn.recv()
            except BlockingIOError:  # no reply within the budget: see _answers_within
                late = True
                _drop(proxy)
            except (EOFError, OSError) as error:
                # EOFError, BrokenPipeError or ConnectionResetError, depending
                # on when the server went away.
                gone = type(error).__name__
            except BaseException:
                _drop(proxy)
                raise
        if gone is not None or late:
            if self.closed:
                raise self.closed_error(f"{self.what} is closed")
            if late:
                raise TimeoutError(
                    f"no reply from the Manager server of {self.what} within "
                    f"{_reply_budget(self.timeout)} s: it is stopped or hung, or still "
                    "running the request, which may then have run"
                )
            raise OwnerGone(f"the Manager server of {self.what} is gone ({gone})")
        if kind == "#RETURN":
            # A server that stops while one of its threads is answering sends
            # that connection one extra ('#RETURN', None), the reply to a
            # request it never ran. A request whose result is never None
            # goes through answer(), which tells that None from a result.
            if result is None and self.closed:
                raise self.closed_error(f"{self.what} is closed")
            return result
        if kind == "#ERROR":  # the state's own exception
            raise result
        # "#TRACEBACK" or "#UNSERIALIZABLE": the server failed to serve.
        raise OwnerGone(f"the Manager server of {self.what} failed to answer: {result}")

    def _open(self, proxy: Any) -> Any:
        """This thread's connection to the server, made within the handle's timeout.

        The handshake waits for the server's answers: a stopped server would
        hold it for ever (see :func:`_accepted`).
        """
        name = current_process().name
        if threading.current_thread() is not threading.main_thread():
            name += "|" + threading.current_thread().name
        try:
            conn = _accepted(proxy, name, self.timeout)
        except BlockingIOError:
            raise TimeoutError(
                f"the Manager server of {self.what} took no connection within "
                f"{self.timeout} s (it is alive: stopped or hung)"
            ) from None
        if isinstance(self.address, tuple):
            _send_at_once(conn)
        proxy._tls.connection = conn
        return conn

    def answer(self, method: str, *args: Any) -> Any:
        """:meth:`call` for a request whose result is never None."""
        result = self.call(method, *args)
        if result is None:
            raise OwnerGone(f"the Manager server of {self.what} is gone (it stopped)")
        return result

    def call_guarded(self, method: str, *args: Any) -> Any:
        """:meth:`call` for a request that runs the user's code (see the module)."""
        ok, result = self.answer("serve", method, args)
        if not ok:
            raise result
        return result

    def close(self) -> None:
        """Drop the proxy; in the creator of the server, stop it."""
        self.closed = True
        # New calls of this handle now find no proxy. The proxy itself is
        # kept until the server has stopped: a spawned child's proxy borrows
        # the creator's reference, and dropping ours first would let the
        # server delete the state under the child's next call (RemoteError).
        proxy, self.proxy = self.proxy, None
        manager, self._manager = self._manager, None
        # A forked child holds a copy of the creator's manager: not its to stop.
        if manager is not None and os.getpid() == self._creator:
            _shut_down(manager)  # then the proxy's decref is skipped
        elif proxy is not None:
            self._release(proxy)
        del proxy

    def _release(self, proxy: Any) -> None:
        """What ``BaseProxy._decref`` does when the proxy goes, on a bounded connection.

        The standard library's decref connects to the server with no
        timeout, so closing a handle that did not start the server (a
        child's, a connected one) waited for ever on a stopped server. The
        proxy's own finalizer is cancelled and the reference released here
        within the handle's timeout; a server stopped or gone frees it when
        it stops.
        """
        finalizer = getattr(proxy, "_close", None)
        if finalizer is None or not finalizer.still_active():
            return
        finalizer.cancel()
        proxy._idset.discard(proxy._id)
        with contextlib.suppress(Exception):
            conn = _client(proxy._token.address, proxy._authkey, _reply_budget(self.timeout))
            try:
                managers.dispatch(conn, None, "decref", (proxy._id,))  # type: ignore[attr-defined]
            finally:
                conn.close()
        # As the decref does: a thread that holds no proxy of this server any
        # more closes its connection to it.
        if not proxy._idset and hasattr(proxy._tls, "connection"):
            proxy._tls.connection.close()
            del proxy._tls.connection


Handle = TypeVar("Handle", bound="ManagerHandle")


class _Linked(Protocol):
    """A handle that keeps its :class:`Server` as ``_server`` (an attribute or a property)."""

    @property
    def _server(self) -> Server: ...


class ManagerHandle(Closable):
    """What every Manager way has beyond its protocol: ``address``, ``authkey``, ``connect()``.

    Its constructor takes ``address=None`` (a private Unix socket) or
    ``(host, port)`` (TCP there; port 0 picks a free one), and
    ``authkey=None`` (32 random bytes) or the key to use.
    """

    # A way makes its Server with _serve(), keeps it as _server, and calls
    # _publish() once its constructor has made it whole.

    def _serve(
        self,
        manager_type: type[Any],
        typeid: str,
        args: tuple[Any, ...],
        manager: Any,
        ctx: Any,
        address: object,
        authkey: object,
        timeout: float | None,
    ) -> Server:
        """This handle's :class:`Server`, named after its class, closing with its error.

        ``timeout``, checked, is how long a request may go unanswered.
        """
        return Server(
            manager_type,
            typeid,
            args,
            what=type(self).__name__,
            manager=manager,
            ctx=ctx,
            closed_error=self._closed_error,
            address=address,
            authkey=authkey,
            timeout=timeout,
        )

    @property
    def address(self: _Linked) -> Address:
        """Where the server listens: ``(host, port)`` over TCP, else a socket's path."""
        return self._server.address

    @property
    def authkey(self: _Linked) -> bytes:
        """The key a process must hold to reach the server (see :meth:`connect`)."""
        return self._server.authkey

    def _publish(self: _Linked) -> None:
        self._server.publish(self)

    @classmethod
    def connect(
        cls: type[Handle],
        address: Address,
        authkey: bytes,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> Handle:
        """A handle to the state of the server at ``address``, from any process.

        ``address`` and ``authkey`` are the creator's :attr:`address` and
        :attr:`authkey` (a socket's path reaches a server on this host
        only). The server must be one that a handle of this class started (not a
        manager passed as ``manager=``: that raises ``LookupError``). The
        new handle is not the creator: its ``close()`` detaches it alone, and
        once the creator has closed, its calls raise
        :class:`~shmref.lifecycle.OwnerGone`. A wrong key raises
        ``multiprocessing.AuthenticationError``. An ``address`` that takes no
        connection (a host down, a port filtered), or takes it and does not
        complete the handshake and answer (a stopped server, not a Manager at
        all), within ``timeout`` seconds raises
        :class:`~shmref.lifecycle.OwnerGone`.
        """
        link, handle_type, state = Server.connect(
            address, authkey, cls.__name__, cls._closed_error, timeout
        )
        if handle_type is not cls:
            link.close()
            raise TypeError(f"{address!r} serves a {handle_type.__name__}, not a {cls.__name__}")
        handle = cls.__new__(cls)
        handle.__setstate__(state)  # type: ignore[attr-defined]
        return handle
