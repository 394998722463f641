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
owner goes on serving. Waits are taken in slices: a caller notices within
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
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from multiprocessing import util
from multiprocessing.connection import Connection, wait
from typing import Any

from shmref.lifecycle import (
    IDLE_CHECK,
    Deadline,
    Lifeline,
    OwnerGone,
    acquire,
    lifeline,
    portable,
    reset_after_fork,
    run,
)

_STOP = "stop"
#: Seconds close() gives a stopped owner to exit before it kills it.
_STOP_WAIT = 2.0
#: Rounds of messages (one per client each) the owner applies, at most,
#: before it answers a request that waits: more than a socket's buffer
#: (about 200 KiB) holds of the smallest messages (about 40 bytes).
_DRAIN_ROUNDS = 10_000
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
        _serve(listening, methods, creator)
    finally:
        listening.close()
        with contextlib.suppress(OSError):
            os.unlink(address)
        owner_end.close()


def _serve(listening: socket.socket, methods: dict[str, Any], creator: Lifeline) -> None:
    clients: list[Connection] = []
    drains = [0]  # how many drain() ran: what a round read as ready may be gone since
    listening.setblocking(False)

    def accept() -> None:
        while True:
            try:
                sock, _ = listening.accept()
            except OSError:  # BlockingIOError: nobody else is connecting
                return
            sock.setblocking(True)
            clients.append(Connection(sock.detach()))

    def drop(conn: Connection) -> None:
        clients.remove(conn)
        conn.close()

    def handle(conn: Any, draining: bool) -> bool:
        """Apply one message of ``conn``; False on a stop request."""
        try:
            token, method, call_args = _LOADS(conn.recv_bytes())
        except Exception:
            # The client closed its end or died, perhaps mid-message:
            # whatever it left unread or half written goes with it.
            drop(conn)
            return True
        fn = methods.get(method)
        if token is None:
            # Nobody waits for this one (the hot path of set and add): the
            # handle checked its arguments, and the state keeps what it must
            # report to the next call that waits.
            if fn is not None:
                try:  # noqa: SIM105 (contextlib.suppress costs more, per message)
                    fn(*call_args)
                except BaseException:
                    pass
            return True
        if method == _STOP:
            return False
        if not draining and not drain():
            return False
        if fn is None:
            answer: tuple[bool, Any] = (False, ValueError(f"unknown request {method!r}"))
        else:
            answer = run(fn, *call_args)
        try:
            conn.send_bytes(_reply(token, answer))
        except OSError:  # the caller is gone: so is its wait
            drop(conn)
        return True

    def drain() -> bool:
        """Apply what every client has sent so far; False on a stop request.

        Before a request that waits for its reply is answered: each client's
        connection is ordered, but the connections are not, and a message
        whose send returned (in a process that has exited since, say) must
        be applied before a read that was sent after it. Bounded, so that
        writers cannot starve the reader.
        """
        drains[0] += 1
        for _ in range(_DRAIN_ROUNDS):
            accept()
            readable = wait(clients, 0)
            if not readable:
                break
            for conn in readable:
                if conn in clients and not handle(conn, True):
                    return False
        return True

    # The creator, watched through its Lifeline, not parent_process(): the
    # sentinel of a forked owner is held open by every process its creator
    # forks afterwards, which would keep the owner alive after the creator.
    checked = time.monotonic()
    while True:
        readable = wait([listening, *clients], IDLE_CHECK)
        now = time.monotonic()
        if now - checked >= IDLE_CHECK:  # busy or idle, the creator is checked
            checked = now
            if creator.gone():  # died without close()
                return
        # One message per ready client per round: a busy client cannot
        # starve the others.
        drained = drains[0]
        for ready in readable:
            if ready is listening:
                accept()
            elif ready not in clients:
                continue  # dropped meanwhile
            elif drains[0] != drained and not ready.poll(0):
                continue  # its message was applied by a drain meanwhile
            elif not handle(ready, False):
                return


class _Link:
    """This process's connection to an owner, and the lock its threads take turns on."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.pid = os.getpid()
        self.lock = threading.Lock()


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

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_process=None, _tokens=None, _link=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._tokens = itertools.count()
        reset_after_fork(self)

    def _after_fork(self) -> None:
        # The parent's connection is the parent's: a forked child opens its own.
        self._link = None

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

    def _connection(self) -> _Link:
        link = self._link
        if link is not None and link.pid == os.getpid():
            return link
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self._address)
        except OSError:  # no such socket, or nobody listening on it
            sock.close()
            if self.closed:
                self._refuse()
            raise self._gone() from None
        link = self._link = _Link(Connection(sock.detach()))
        return link

    def _drop(self, link: _Link) -> None:
        """Close a connection left mid-message; the next call opens another."""
        if self._link is link:
            self._link = None
        link.conn.close()

    def _write(self, conn: Connection, data: bytes, deadline: Deadline) -> None:
        # Waits for room in slices, as every wait: a full socket means an
        # owner behind on its work (or stopped), and the caller waits for it
        # at most its timeout.
        fd = conn.fileno()
        while not select.select((), (fd,), (), deadline.next_slice())[1]:
            self._waited(deadline, "room for the request")
        conn.send_bytes(data)

    def _waited(self, deadline: Deadline, what: str) -> None:
        """Between slices: the closed error, OwnerGone, or TimeoutError once due."""
        if self.closed:
            self._refuse()
        if self.gone():
            raise self._gone()
        if deadline.expired:
            raise TimeoutError(
                f"no {what} from the owner process of {self.what} within {self.timeout} s"
            )

    def send(self, method: str, *args: Any) -> None:
        """Ask the owner to call ``method(*args)``; do not wait for it to run.

        Returns once the request is written: at once while the connection
        has room, else when the owner has read enough of what came before.
        """
        self._exchange(_request((None, method, args)), None)

    def call(self, method: str, *args: Any) -> Any:
        """``method(*args)`` run by the owner: its result, or its exception raised here."""
        token = next(self._tokens)
        ok, result = self._exchange(_request((token, method, args)), token)
        if not ok:
            raise result
        return result

    # An owner runs every request as Server.call_guarded does and never
    # sends a stray reply: the names a Server needs for those mean call here.
    answer = call
    call_guarded = call

    def _exchange(self, request: bytes, token: int | None) -> Any:
        """Write ``request``; with a ``token``, wait for the reply that carries it."""
        link = self._connection()
        deadline = Deadline(self.timeout)
        acquire(link.lock, self.timeout, f"{self.what}'s connection", self)
        try:
            conn = link.conn
            self._write(conn, request, deadline)
            if token is None:
                return None
            while True:
                if conn.poll(deadline.next_slice()):
                    answer, outcome = _LOADS(conn.recv_bytes())
                    # A reply to a call of this process that gave up earlier
                    # (TimeoutError): nobody waits for it.
                    if answer == token:
                        return outcome
                else:
                    self._waited(deadline, "reply")
        except (TimeoutError, ValueError):
            # The connection is whole: a late reply is skipped by its token.
            # (ValueError: the handle's closed error, or our own end closed.)
            if self.closed:
                self._drop(link)
                self._refuse()
            raise
        except (EOFError, OSError):
            self._drop(link)
            if self.closed:
                self._refuse()
            raise self._gone() from None
        except BaseException:
            # Cut mid-message (an interrupt, say): the connection may hold
            # half a request or half a reply. The owner drops its end.
            self._drop(link)
            raise
        finally:
            link.lock.release()

    def close(self) -> None:
        """Stop the owner if this process created it; never hangs, never raises."""
        self.closed = True
        process, self._process = self._process, None
        link, self._link = self._link, None
        if link is not None:
            # A thread of this process mid-call on it wakes with the closed error.
            link.conn.close()
        if process is None or os.getpid() != self._creator:
            return  # another process's handle: detach only
        if process.is_alive():
            # On a connection of its own: the owner stops after the request
            # it is running, whoever is waiting on it.
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                    sock.settimeout(_STOP_WAIT)
                    sock.connect(self._address)
                    Connection(sock.detach()).send_bytes(_DUMPS((0, _STOP, ())))
            except OSError:
                pass  # killed below
            process.join(_STOP_WAIT)
        if process.is_alive():
            process.kill()
            process.join()
        process.close()
        self._lifeline.close()
