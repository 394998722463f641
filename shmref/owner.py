"""The Queue ways' owner process, and the client every handle uses to reach it.

An owner is a process that holds a primitive's state and applies requests
one at a time, so each request is atomic. Each client process has a
connection of its own to it (a Unix socket in the creator's private
temporary directory, opened on the process's first call), carrying its
requests and the replies to them, so no client shares a lock or a pipe with
another:

* a client killed anywhere, mid-message included, breaks only its own
  connection; the owner drops it and serves the others;
* a request is pickled by the caller, so an argument that cannot be pickled
  raises ``TypeError`` at once, and a reply is pickled by the owner when it
  answers, a copy of the state at that moment;
* a message that needs no reply (``send``: the hot path of add and set) is
  written by the caller: it returns once the socket has taken it, so a
  caller faster than the owner waits for room (backpressure) instead of
  queueing without bound.

A request is ``(token, method, args)``: the owner calls ``state.method(*args)``
and, unless ``token`` is None, answers ``(token, (ok, result))``. Exceptions
the state raises, ``BaseException`` included, go back to the caller; the
owner goes on serving. A request the state cannot answer yet (a get from an
empty channel, an acquire of a held lock) is parked by the owner, not
refused: the state raises :class:`Later`, and the owner asks it again after
every change, in the order the requests came, and once more when the
caller's wait is over. A client process that exits is forgotten by the
state (``_forget(pid)``): a lock it held is free again. Waits are taken in
slices: a caller notices within
one slice that the owner died (the owner holds the only write end of a
pipe, the *lifeline*, which reads as closed once the owner is gone) or that
another thread closed its handle. The owner watches its creator and exits
if the creator died without ``close()``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pickle
import secrets
import selectors
import signal
import socket
import struct
import threading
import time
import weakref
from collections.abc import Callable
from multiprocessing import util
from typing import Any

from shmref.lifecycle import (
    IDLE_CHECK,
    SLICE,
    STOP_WAIT,
    Deadline,
    Lifeline,
    OwnerGone,
    acquire,
    lifeline,
    portable,
    reply_within,
    reset_after_fork,
    run,
)

_STOP = "stop"
#: The first message on a client's connection: who opened it, and which
#: connection of the same handle it replaces (see _Link).
_HELLO = "hello"
#: Rounds of messages (one per client each) the owner applies, at most,
#: before it answers a request that waits: more than a socket's buffer
#: (about 200 KiB) holds of the smallest messages (about 40 bytes).
_DRAIN_ROUNDS = 10_000
#: Bytes the owner reads at a time from a client.
_CHUNK = 1 << 16
#: A message's length, before it.
_HEADER = struct.Struct("!Q")
#: How long a write or a read of a client blocks before it looks around:
#: SLICE, as a struct timeval for SO_SNDTIMEO and SO_RCVTIMEO.
_SLICE_TIMEVAL = struct.pack("@ll", 0, int(SLICE * 1_000_000))
#: How long the owner waits for room for a reply before it drops the client.
_REPLY_WAIT = struct.pack("@ll", 5, 0)
_DUMPS = pickle.dumps
_LOADS = pickle.loads
_PROTOCOL = pickle.HIGHEST_PROTOCOL


def _request(message: tuple[Any, ...]) -> bytes:
    """``message`` pickled here, in the caller: what cannot be sent fails now, clearly."""
    try:
        return _DUMPS(message, _PROTOCOL)
    except Exception as error:
        raise TypeError(
            f"cannot send to the owner process: {type(error).__name__}: {error}"
        ) from None


def _reply(token: object, answer: tuple[bool, Any]) -> bytes:
    try:
        return _DUMPS((token, answer), _PROTOCOL)
    except Exception as error:
        return _DUMPS((token, (False, portable(TypeError(f"cannot send the reply: {error}")))))


class Later(Exception):
    """Raised by an owner's state: the request cannot be answered yet; park it.

    A method that may raise it takes how long its caller waits as its last
    argument (seconds, or None for as long as it takes). The owner calls it
    again after every change, in the order the requests came, until it
    answers; once the wait is over, it calls it with a wait of 0, and then
    the method must answer (``queue.Empty``, say). The caller waits for that
    answer as long as the owner lives and answers within the handle's
    timeout after it (:meth:`Owner.call_waiting`): an answer the caller gave
    up on could be a lock granted to nobody.
    """


class _Parked:
    """A request the state could not answer yet, with when its wait ends."""

    __slots__ = ("args", "due", "fn", "peer", "token")

    def __init__(self, peer: _Peer, token: object, fn: Any, args: tuple[Any, ...]) -> None:
        self.peer, self.token, self.fn, self.args = peer, token, fn, args
        wait = args[-1]
        self.due = None if wait is None else time.monotonic() + wait


def _born(pid: int) -> str | None:
    """When process ``pid`` started (Linux's /proc), None if it has exited or is a zombie.

    With the start time, a pid the system gave to a new process is not
    taken for the process that had it.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in (b"Z", b"X"):
        return None
    return fields[19].decode()  # field 22 of stat(5): the start time


def _exited(pid: int, born: str | None) -> bool:
    """Whether client process ``pid`` (which started at ``born``) has exited."""
    if born is not None:
        return _born(pid) != born
    try:  # no /proc: a zombie counts as alive, until its parent reaps it
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def serve(
    address: str,
    ready: Any,
    owner_end: Any,
    creator: Lifeline,
    make: Callable[..., Any],
    args: Any,
) -> None:
    """Body of an owner process: ``make(*args)`` is the state, requests its method calls."""
    # Ctrl-C reaches every process of the group: the owner's state must
    # outlive it, as a Manager server's does. Its creator stops it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    state = make(*args)
    # The state's public methods, looked up once: a request names one.
    methods = {
        name: getattr(state, name)
        for name in dir(type(state))
        if not name.startswith("_") and callable(getattr(type(state), name))
    }
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listening.bind(address)
        listening.listen(128)  # the whole backlog: a connect never waits for accept
        ready.send(True)
        ready.close()
        _Clients(listening, methods, getattr(state, "_forget", None)).serve(creator)
    finally:
        listening.close()
        with contextlib.suppress(OSError):
            os.unlink(address)
        owner_end.close()


# When the owner answers a request (see _Clients.handle).
_FIRST, _LATER, _NOW = range(3)


class _Stop(Exception):
    """The creator's stop request, read wherever the owner was reading."""


class _Peer:
    """The owner's end of one client's connection: what it has read and not applied yet.

    The owner reads whatever has arrived, without waiting, and applies the
    whole messages in it; half a message stays here until the rest comes,
    so a client that stalls (or dies) mid-message holds up nobody else.
    """

    __slots__ = ("born", "buffer", "eof", "origin", "replaces", "sock", "start")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.start = 0  # where the next message begins in buffer
        self.eof = False  # the client closed its end (or died)
        self.origin: tuple[int, int] | None = None  # (pid, number), from its hello
        self.replaces: int | None = None  # until settled: the number it replaces
        self.born: str | None = None  # its process's start time (see _born)

    def fill(self) -> bool:
        """Read what has arrived; whether anything had."""
        got = False
        while True:
            try:
                chunk = self.sock.recv(_CHUNK, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return got
            except OSError:
                self.eof = True
                return got
            if not chunk:
                self.eof = True
                return got
            got = True
            if self.start:  # compact before growing: applied messages go
                del self.buffer[: self.start]
                self.start = 0
            self.buffer += chunk
            if len(chunk) < _CHUNK:
                return got

    def ready(self) -> bool:
        """Whether a whole message has been read and not applied."""
        buffer, start = self.buffer, self.start
        if len(buffer) - start < _HEADER.size:
            return False
        (size,) = _HEADER.unpack_from(buffer, start)
        return len(buffer) >= start + _HEADER.size + int(size)

    def next(self) -> bytes | None:
        """The next whole message read, or None."""
        buffer, start = self.buffer, self.start
        if len(buffer) - start < _HEADER.size:
            return None
        (size,) = _HEADER.unpack_from(buffer, start)
        end = start + _HEADER.size + size
        if len(buffer) < end:
            return None
        self.start = end
        return bytes(buffer[start + _HEADER.size : end])


class _Clients:
    """The owner's side of its clients' connections: who sent what, in which order.

    Each connection is in order; connections are not. Two rules restore the
    order a caller can rely on:

    * a request that waits is answered only after everything other clients
      had sent when it was read (:meth:`drain`): a message whose send
      returned, in a process that has exited since say, is applied before a
      read sent after it. Requests that the drain reads from live clients
      wait for their turn, after the one that drained;
    * a connection that replaces another of the same process (the other was
      cut mid-message and closed) is read only after the other, to its end
      (:meth:`settle`).
    """

    def __init__(
        self,
        listening: socket.socket,
        methods: dict[str, Any],
        forget: Callable[[int], None] | None = None,
    ) -> None:
        self.listening = listening
        listening.setblocking(False)
        self.methods = methods
        self.selector = selectors.DefaultSelector()
        self.selector.register(listening, selectors.EVENT_READ, None)
        self.peers: list[_Peer] = []  # in the order they connected
        #: Requests read by a drain, answered after the request that drained.
        self.waiting: list[tuple[_Peer, object, Any, str, Any]] = []
        #: Requests the state could not answer yet (see Later), oldest first.
        self.parked: list[_Parked] = []
        #: The state's hook for a client process that has exited, if it has one.
        self.forget = forget
        #: Client processes whose connection ended, to the state's hook
        #: once they have exited (pid: start time): see bury().
        self.orphans: dict[int, str | None] = {}

    def accept(self) -> None:
        while True:
            try:
                sock, _ = self.listening.accept()
            except OSError:  # BlockingIOError: nobody else is connecting
                return
            sock.setblocking(True)
            # A reply waits for room at most this long: a client that does
            # not read its replies is dropped, not waited for.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _REPLY_WAIT)
            peer = _Peer(sock)
            self.peers.append(peer)
            self.selector.register(sock, selectors.EVENT_READ, peer)

    def drop(self, peer: _Peer) -> None:
        if peer in self.peers:
            self.peers.remove(peer)
            self.selector.unregister(peer.sock)
        peer.sock.close()
        if self.parked:  # nobody waits for them any more
            self.parked = [parked for parked in self.parked if parked.peer is not peer]
        if self.forget is not None and peer.origin is not None:
            self.orphans[peer.origin[0]] = peer.born

    def bury(self) -> None:
        """Tell the state of the client processes that have exited since their connection ended.

        A process whose connection was cut (an interrupt mid-message) lives
        on and opens another: what it holds is still its own.
        """
        assert self.forget is not None
        for pid, born in list(self.orphans.items()):
            if any(peer.origin is not None and peer.origin[0] == pid for peer in self.peers):
                del self.orphans[pid]  # connected again: alive
            elif _exited(pid, born):
                del self.orphans[pid]
                self.forget(pid)
                self.retry()

    def wait(self) -> float:
        """How long the main loop may sleep: until the next parked wait ends, at most."""
        wait = IDLE_CHECK
        if self.orphans:
            wait = SLICE
        for parked in self.parked:
            if parked.due is not None:
                wait = min(wait, parked.due - time.monotonic())
        return max(wait, 0.0)

    def retry(self) -> None:
        """Ask the state again for the parked requests, oldest first, until none can go."""
        progress = True
        while progress and self.parked:
            progress = False
            for parked in list(self.parked):
                if parked not in self.parked:  # dropped with its client meanwhile
                    continue
                answer = run(parked.fn, *parked.args)
                if not answer[0] and answer[1].__class__ is Later:
                    continue
                self.parked.remove(parked)
                self.reply(parked.peer, parked.token, answer)
                progress = True

    def expire(self) -> None:
        """Answer the parked requests whose wait is over (the state says how)."""
        now = time.monotonic()
        for parked in [p for p in self.parked if p.due is not None and p.due <= now]:
            if parked not in self.parked:  # dropped with its client meanwhile
                continue
            self.parked.remove(parked)
            self.reply(parked.peer, parked.token, run(parked.fn, *parked.args[:-1], 0.0))

    def serve(self, creator: Lifeline) -> None:
        """Until the creator stops the owner or is gone."""
        # The creator, watched through its Lifeline, not parent_process(): the
        # sentinel of a forked owner is held open by every process its creator
        # forks afterwards, which would keep the owner alive after the creator.
        checked = buried = time.monotonic()
        try:
            while True:
                # The common case, nothing parked, costs no call.
                events = self.selector.select(
                    self.wait() if self.parked or self.orphans else IDLE_CHECK
                )
                now = time.monotonic()
                if now - checked >= IDLE_CHECK:  # busy or idle, the creator is checked
                    checked = now
                    if creator.gone():  # died without close()
                        return
                if self.parked:
                    self.expire()
                if self.orphans and now - buried >= SLICE:
                    buried = now
                    # The creator's connection ends as it dies: what it held
                    # goes with the owner, not to a waiter.
                    if creator.gone():
                        return
                    self.bury()
                for key, _ in events:
                    peer = key.data
                    if peer is None:
                        self.accept()
                    elif peer in self.peers:
                        peer.fill()
                        self.apply(peer, _FIRST)
                        self.answer_waiting()
                # What was read but not applied (find() reads hellos ahead).
                for peer in [p for p in self.peers if p.ready()]:
                    self.apply(peer, _FIRST)
                    self.answer_waiting()
        except _Stop:
            return

    def apply(self, peer: _Peer, turn: int) -> None:
        """Apply the whole messages read from ``peer``; drop it at its end."""
        while peer in self.peers:
            if peer.replaces is not None:
                # Before its next message: what the connection it replaces
                # carried comes first.
                self.settle(peer)
            message = peer.next()
            if message is None:
                if peer.eof:
                    # Whatever it left half written goes with it.
                    self.drop(peer)
                return
            self.handle(peer, message, turn)

    def handle(self, peer: _Peer, message: bytes, turn: int) -> None:
        """Apply one message; ``turn`` says when a request is answered.

        ``_FIRST`` (the main loop): after a drain; ``_LATER`` (read by a
        drain): after the request that drained; ``_NOW`` (read by a settle,
        from a connection its client closed): at once.
        """
        try:
            token, method, call_args = _LOADS(message)
        except Exception:  # not ours, or garbled: the connection is not to be trusted
            self.drop(peer)
            return
        if method == _HELLO:
            pid, number, replaces = call_args
            peer.origin, peer.replaces = (pid, number), replaces
            if self.forget is not None:
                peer.born = _born(pid)
            return
        if method == _STOP:
            raise _Stop
        fn = self.methods.get(method)
        if token is None:
            # Nobody waits for this one (the hot path of set and add): the
            # handle checked its arguments, and the state keeps what it must
            # report to the next call that waits.
            if fn is not None:
                try:  # noqa: SIM105 (contextlib.suppress costs more, per message)
                    fn(*call_args)
                except BaseException:
                    pass
                if self.parked:
                    self.retry()
            return
        # A request read by a drain comes after the one that drained, unless
        # its client has closed its end since (it died waiting, say): what a
        # dead client sent is applied before any later request is answered.
        if turn == _LATER and not peer.eof:
            self.waiting.append((peer, token, fn, method, call_args))
            return
        if turn == _FIRST:
            self.drain(peer)
        self.answer(peer, token, fn, method, call_args)
        if turn == _FIRST:
            self.answer_waiting()

    def answer_waiting(self) -> None:
        """The requests a drain (or a settle) read, in the order they were read."""
        while self.waiting:
            self.answer(*self.waiting.pop(0))

    def answer(self, peer: _Peer, token: object, fn: Any, method: str, args: Any) -> None:
        if fn is None:
            answer: tuple[bool, Any] = (False, ValueError(f"unknown request {method!r}"))
        else:
            answer = run(fn, *args)
            if not answer[0] and answer[1].__class__ is Later:
                if peer in self.peers and not peer.eof:
                    self.parked.append(_Parked(peer, token, fn, args))
                return
        self.reply(peer, token, answer)
        if self.parked:  # what this request changed may let a parked one go
            self.retry()

    def reply(self, peer: _Peer, token: object, answer: tuple[bool, Any]) -> None:
        if peer not in self.peers or peer.eof:
            return  # nobody to answer (the request was applied)
        reply = _reply(token, answer)
        try:
            peer.sock.sendall(_HEADER.pack(len(reply)) + reply)
        except OSError:  # the caller is gone, or reads no replies
            self.drop(peer)

    def drain(self, asking: _Peer) -> None:
        """Apply what the other clients have sent so far, before ``asking`` is answered.

        Bounded, so that writers cannot starve the reader.
        """
        for _ in range(_DRAIN_ROUNDS):
            self.accept()
            # Not the asker's, nor of those whose request waits its turn:
            # each of them waits for its reply, and sent nothing after.
            busy = [request[0] for request in self.waiting]
            arrived = [key.data for key, _ in self.selector.select(0)]
            progress = False
            for peer in self.peers[:]:
                if peer is asking or peer in busy or peer not in self.peers:
                    continue
                if peer in arrived:
                    progress = peer.fill() or progress
                if peer.ready() or peer.eof:
                    progress = True
                    self.apply(peer, _LATER)
            if not progress:
                return

    def settle(self, peer: _Peer) -> None:
        """Read what the connections ``peer`` replaces carry, oldest first, to their ends."""
        chain = []
        current = peer
        while current.replaces is not None and current.origin is not None:
            replaces, current.replaces = current.replaces, None
            earlier = self.find(current.origin[0], replaces)
            if earlier is None:
                break  # read to its end already
            chain.append(earlier)
            current = earlier
        for earlier in reversed(chain):
            # Closed by its client before it opened the next: its end of
            # file is there to read. (If not, what has come is applied.)
            while earlier in self.peers:
                got = earlier.fill()
                self.apply(earlier, _NOW)
                if not got and not earlier.eof:
                    break

    def find(self, pid: int, number: int) -> _Peer | None:
        """The connection ``number`` of process ``pid``, if it is still open here."""
        for attempt in range(2):
            for peer in self.peers:
                if peer.origin == (pid, number):
                    return peer
            if attempt:
                return None
            # It may not be accepted yet, or its hello not read: both are
            # there to read (its client wrote the hello before anything).
            self.accept()
            for peer in list(self.peers):
                if peer.origin is None and peer.fill():
                    # Its hello only: what came after waits for the main
                    # loop, which applies what it has read (settled first).
                    message = peer.next()
                    if message is not None:
                        self.handle(peer, message, _LATER)
        return None


#: Numbers of this process's connections, which say which one a new one replaces.
_numbers = itertools.count(1)


class _Link:
    """This process's connection to an owner, and the lock its threads take turns on.

    A connection cut mid-message (an interrupt, a timeout while half a
    request is written or half a reply read) is closed and replaced; the new
    one's hello names it, so that the owner applies what the old one carried
    first and the process's messages stay in the order it sent them.
    """

    def __init__(self, sock: socket.socket, number: int) -> None:
        self.sock = sock
        self.number = number
        self.pid = os.getpid()
        # An RLock for its _is_owned(): an interrupt can land between the
        # acquire and the try that would release it, and the finally must
        # know whether this thread holds it.
        self.lock = threading.RLock()
        #: Part of a message is written or read, not all of it.
        self.partial = False

    def close(self) -> None:
        self.sock.close()

    def write(self, message: bytes, owner: Owner, deadline: Deadline) -> None:
        # The socket gives up after a slice (SO_SNDTIMEO) when it has no
        # room: a full socket means an owner behind on its work, and the
        # caller waits for it at most its timeout, looking at it between
        # slices as every wait does.
        size = len(message)
        if size <= _CHUNK:  # one write, the common case (a copy costs less than a call)
            parts: tuple[bytes, ...] = (_HEADER.pack(size) + message,)
        else:
            parts = (_HEADER.pack(size), message)
        send = self.sock.send
        for part in parts:
            view = memoryview(part)
            while view:
                try:
                    sent = send(view)
                except BlockingIOError:
                    owner._waited(deadline, "room for the request")
                    continue
                self.partial = True
                view = view[sent:]
        self.partial = False

    def read(self, owner: Owner, deadline: Deadline) -> bytes:
        header = self._exactly(_HEADER.size, owner, deadline)
        (size,) = _HEADER.unpack(header)
        message = self._exactly(size, owner, deadline)
        self.partial = False
        return message

    def _exactly(self, size: int, owner: Owner, deadline: Deadline) -> bytes:
        out = bytearray(size)
        view = memoryview(out)
        recv_into = self.sock.recv_into
        got = 0
        while got < size:
            try:
                n = recv_into(view[got:])
            except BlockingIOError:  # a slice (SO_RCVTIMEO) without data
                owner._waited(deadline, "reply")
                continue
            if not n:
                raise EOFError
            got += n
            self.partial = True
        return bytes(out)


class Owner:
    """A handle's link to its owner process; pickles to children with the handle.

    ``what`` names the handle in messages; ``closed_error`` is raised to a
    caller whose handle another thread closed while it waited. The owner's
    socket is reached by any process of the same user that knows its path,
    as a Manager's is by one that knows its authkey: pickles are trusted.
    """

    def __init__(
        self,
        ctx: Any,
        make: Callable[..., Any],
        args: tuple[Any, ...],
        *,
        what: str,
        timeout: float | None,
        closed_error: type[ValueError] = ValueError,
    ) -> None:
        self.what = what
        self.timeout = timeout
        self.closed_error = closed_error
        self.closed = False
        # In this process's temporary directory (mode 0700), which
        # multiprocessing removes when this process exits.
        self._address = os.path.join(util.get_temp_dir(), f"shmref-owner-{secrets.token_hex(8)}")
        self._link: _Link | None = None
        self._replaced: int | None = None  # the number of the connection last dropped
        self._threads_links()
        self._lifeline, owner_end = ctx.Pipe(duplex=False)
        started, ready = ctx.Pipe(duplex=False)
        self._creator = os.getpid()
        self._tokens = itertools.count()
        self._process: Any = ctx.Process(
            target=serve,
            args=(self._address, ready, owner_end, lifeline(), make, args),
            name=f"shmref-{what}-owner",
            daemon=True,
        )
        self._process.start()
        owner_end.close()  # the owner's copy is now the only write end
        ready.close()
        try:
            started.recv()  # end of file if the owner died first
        except EOFError:
            self._process.join()
            raise OwnerGone(
                f"the owner process of {what} exited as it started "
                f"(exit code {self._process.exitcode})"
            ) from None
        finally:
            started.close()
        reset_after_fork(self)

    def _threads_links(self) -> None:
        # Calls that wait for the owner's say (call_waiting) each have a
        # connection of their thread's: a thread waiting for a lock must not
        # keep the thread that would release it off the connection. A
        # thread's link goes with the thread; close() closes those left.
        self._local = threading.local()
        self._waiting_links: weakref.WeakSet[_Link] = weakref.WeakSet()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_process=None, _tokens=None, _link=None, _replaced=None)
        del state["_local"], state["_waiting_links"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._tokens = itertools.count()
        self._threads_links()
        reset_after_fork(self)

    def _after_fork(self) -> None:
        # The parent's connections are the parent's: a forked child opens its own.
        self._link = None
        self._replaced = None
        self._threads_links()

    # Owner is its own handle for acquire(): a waiter for the connection
    # wakes with the closed error when another thread closes the handle.
    @property
    def _closed(self) -> bool:
        return self.closed

    def _refuse(self) -> None:
        raise self.closed_error(f"{self.what} is closed")

    def _check_peers(self) -> None:
        if self.closed:
            self._refuse()

    def gone(self) -> bool:
        """True once the owner process has exited (its lifeline reads as closed)."""
        try:
            return bool(self._lifeline.poll())
        except (OSError, ValueError):  # our own end is closed
            return True

    def _gone(self) -> OwnerGone:
        return OwnerGone(f"the owner process of {self.what} is gone")

    def _connection(self, waiting: bool = False) -> _Link:
        """This process's connection (``waiting``: this thread's), opened on first use."""
        link: _Link | None
        if waiting:
            link = getattr(self._local, "link", None)
            replaced = getattr(self._local, "replaced", None)
        else:
            link, replaced = self._link, self._replaced
        if link is not None and link.pid == os.getpid():
            return link
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self._address)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _SLICE_TIMEVAL)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _SLICE_TIMEVAL)
            number = next(_numbers)
            hello = _request((None, _HELLO, (os.getpid(), number, replaced)))
            sock.sendall(_HEADER.pack(len(hello)) + hello)  # a few bytes: room at once
        except OSError:  # no such socket, or nobody listening on it
            sock.close()
            if self.closed:
                self._refuse()
            raise self._gone() from None
        except BaseException:
            sock.close()
            raise
        link = _Link(sock, number)
        if waiting:
            self._local.link, self._local.replaced = link, None
            self._waiting_links.add(link)
        else:
            self._link, self._replaced = link, None
        return link

    def _drop(self, link: _Link) -> None:
        """Close a connection left mid-message; the next call opens another."""
        if self._link is link:
            self._link = None
            self._replaced = link.number
        elif getattr(self._local, "link", None) is link:
            self._local.link, self._local.replaced = None, link.number
        link.close()

    def _waited(self, deadline: Deadline, what: str) -> None:
        """Between slices: the closed error, OwnerGone, or TimeoutError once due."""
        if self.closed:
            self._refuse()
        if self.gone():
            raise self._gone()
        if deadline.expired:
            raise TimeoutError(
                f"no {what} from the owner process of {self.what} within {deadline.timeout} s"
            )

    def send(self, method: str, *args: Any) -> None:
        """Ask the owner to call ``method(*args)``; do not wait for it to run.

        Returns once the request is written: at once while the connection
        has room, else when the owner has read enough of what came before.
        """
        self._exchange(_request((None, method, args)), None, self.timeout)

    def call(self, method: str, *args: Any) -> Any:
        """``method(*args)`` run by the owner: its result, or its exception raised here."""
        token = next(self._tokens)
        ok, result = self._exchange(_request((token, method, args)), token, self.timeout)
        if not ok:
            raise result
        return result

    def call_waiting(self, method: str, *args: Any) -> Any:
        """``method(*args)``, which the owner parks until it can answer (see :class:`Later`).

        Its last argument is how long the owner may park it (None: as long
        as it takes): the owner always answers by then, so the caller waits
        for that answer that long and :func:`~shmref.lifecycle.reply_within`
        the handle's timeout more, while the owner lives and the handle is
        open. Past that the owner is alive but stopped or hung:
        ``TimeoutError``, as for any call, and the request may still be
        answered once it goes on (a lock then granted to this thread, as for
        an acquire cut by Ctrl-C; a message taken by a get, lost). With no end to the wait,
        nothing tells a stopped owner from a long wait: the caller waits.
        """
        token = next(self._tokens)
        wait = args[-1]
        budget = None if wait is None else reply_within(self.timeout, wait)
        ok, result = self._exchange(_request((token, method, args)), token, budget, waiting=True)
        if not ok:
            raise result
        return result

    # An owner runs every request as Server.call_guarded does and never
    # sends a stray reply: the names a Server needs for those mean call here.
    answer = call
    call_guarded = call

    def _exchange(
        self, request: bytes, token: int | None, timeout: float | None, waiting: bool = False
    ) -> Any:
        """Write ``request``; with a ``token``, wait ``timeout`` for the reply that carries it."""
        link = self._connection(waiting)
        lock = link.lock
        deadline = Deadline(timeout)
        try:
            if not lock.acquire(False):  # another thread of this process is mid-call
                acquire(lock, self.timeout, f"{self.what}'s connection", self)
            link.write(request, self, deadline)
            if token is None:
                return None
            while True:
                answer, outcome = _LOADS(link.read(self, deadline))
                # A reply to a call of this process that gave up earlier
                # (TimeoutError): nobody waits for it.
                if answer == token:
                    return outcome
        except (TimeoutError, ValueError):
            # Whole messages only: a late reply is skipped by its token.
            # (ValueError: the handle's closed error, or our own end closed.)
            if link.partial or self.closed:
                self._drop(link)
            if self.closed:
                self._refuse()
            raise
        except (EOFError, OSError):
            self._drop(link)
            if self.closed:
                self._refuse()
            raise self._gone() from None
        except BaseException:
            # Cut (an interrupt, say), perhaps mid-message: the connection
            # may hold half a request or half a reply. The owner drops its end.
            self._drop(link)
            raise
        finally:
            if lock._is_owned():  # type: ignore[attr-defined]
                lock.release()

    def close(self) -> None:
        """Stop the owner if this process created it; never hangs, never raises."""
        self.closed = True
        process, self._process = self._process, None
        link, self._link = self._link, None
        # A thread of this process mid-call on one wakes with the closed error.
        for waiting in list(self._waiting_links):
            waiting.close()
        if link is not None:
            link.close()
        if process is None or os.getpid() != self._creator:
            return  # another process's handle: detach only
        if process.is_alive():
            # On a connection of its own: the owner stops after the request
            # it is running, whoever is waiting on it.
            stop = _request((0, _STOP, ()))
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                    sock.settimeout(STOP_WAIT)
                    sock.connect(self._address)
                    sock.sendall(_HEADER.pack(len(stop)) + stop)
            except OSError:
                pass  # killed below
            process.join(STOP_WAIT)
        if process.is_alive():
            process.kill()
            process.join()
        process.close()
        self._lifeline.close()
