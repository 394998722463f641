"""The Manager ways' server: one state object per handle, reached through a proxy.

Each primitive registers its state class, a subclass of :class:`Served`,
with a ``BaseManager`` subclass of its own (``CounterManager`` and so on);
every public method of the state is a request. :meth:`Server.call` sends one
and reads the reply itself, on the proxy's connection, so that it can tell
the server's answer (a result, or the state's own exception, raised here)
from the transport failing (the request cannot be pickled: ``TypeError``;
the server is gone: one named error, :class:`~shmref.lifecycle.OwnerGone`).

The server thread that runs a request catches ``Exception`` only: a
``SystemExit`` raised by a user's function would end that thread and leave
its caller waiting. A request that runs the user's code therefore goes
through :meth:`Server.call_guarded`, to :meth:`Served.serve`, which answers
``(ok, result)`` whatever ``fn`` raised, ``BaseException`` included. The
other requests skip that envelope: it cost a Manager call about a tenth of
its time (measured against the hand-written ways, same run).
"""

from __future__ import annotations

import os
import pickle
import threading
from typing import Any

from shmref.lifecycle import Lifeline, OwnerGone, context, lifeline, run


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
    handle and stopped by its creator's ``close()``; a started manager passed
    in is shared and left running. ``typeid`` is the name the state class is
    registered under, ``args`` its constructor's arguments.
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
    ) -> None:
        self.what = what
        self.closed_error = closed_error
        self.closed = False
        self._manager: Any = None
        self._creator: int | None = os.getpid()
        if manager is None:
            manager = self._manager = manager_type(ctx=context(ctx))
            manager.start(_exit_with_creator, (lifeline(),))
        self.proxy: Any = getattr(manager, typeid)(*args)

    def make(self, typeid: str, *args: Any) -> Any:
        """Another proxy, from the server this handle started (creator only)."""
        if self._manager is None:
            raise RuntimeError(f"{self.what} did not start its server: it cannot add to it")
        return getattr(self._manager, typeid)(*args)

    def __getstate__(self) -> dict[str, Any]:
        return {
            "what": self.what,
            "closed_error": self.closed_error,
            "proxy": self.proxy,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.closed = False
        self._manager = None
        self._creator = None

    def call(self, method: str, *args: Any) -> Any:
        """``method(*args)`` run by the server: its result, or its exception raised here.

        What ``BaseProxy._callmethod`` does, written out so that a failure of
        the transport is told from an exception the server sends back.
        """
        proxy = self.proxy
        if proxy is None:  # dropped by close(), perhaps in another thread
            raise self.closed_error(f"{self.what} is closed")
        # The errors are turned into ours outside the except blocks: the
        # original's traceback holds the connection's receive buffer (a
        # BytesIO with an exported view), which must not outlive this call.
        unsent = gone = None
        try:
            conn = proxy._tls.connection
        except AttributeError:  # this thread's first call: it gets a connection of its own
            try:
                proxy._connect()
                conn = proxy._tls.connection
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
            except OSError as error:
                gone = type(error).__name__
            except BaseException:
                _drop(proxy)
                raise
        if unsent is not None:
            raise TypeError(f"cannot send to the Manager server of {self.what}: {unsent}")
        if gone is None:
            try:
                kind, result = conn.recv()
            except (EOFError, OSError) as error:
                # EOFError, BrokenPipeError or ConnectionResetError, depending
                # on when the server went away.
                gone = type(error).__name__
            except BaseException:
                _drop(proxy)
                raise
        if gone is not None:
            if self.closed:
                raise self.closed_error(f"{self.what} is closed")
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
            manager.shutdown()
        del proxy  # after shutdown() its decref is skipped
