"""The Queue ways' owner process, and the client every handle uses to reach it.

An owner is a process that holds a primitive's state and applies requests
one at a time, so each request is atomic. Requests travel on one
``multiprocessing.Queue`` and replies on another; both carry bytes pickled
by the sender itself (not by the queue's feeder thread), unless they are made
only of immutable values that always pickle (ints, floats, str, bytes, tuples
of them), so:

* an argument that cannot be pickled raises ``TypeError`` in the caller at
  once, instead of being dropped by the feeder while the caller waits;
* a reply is a copy of the state at the moment the owner answered, even
  though the feeder writes it to the pipe later.

A request is ``(token, method, args)``: the owner calls ``state.method(*args)``
and, unless ``token`` is None (a message that needs no reply), answers
``(token, (ok, result))``. Exceptions the state raises, ``BaseException``
included, go back to the caller; the owner goes on serving.

Callers share the reply queue, so a caller holds the reply lock from its
request to its reply. Its wait is taken in slices: it notices within one
slice that the owner died (the owner holds the only write end of a pipe, the
*lifeline*, which reads as closed once the owner is gone) or that another
thread closed its handle. The owner watches its creator and exits if the
creator died without ``close()``.
"""

from __future__ import annotations

import itertools
import os
import pickle
import queue
import signal
import time
from collections.abc import Callable
from typing import Any

from shmref.lifecycle import (
    IDLE_CHECK,
    Deadline,
    Lifeline,
    OwnerGone,
    acquire,
    lifeline,
    portable,
    run,
)

_STOP = "stop"
#: Seconds close() waits for the reply lock before it kills the owner instead.
_STOP_LOCK_WAIT = 1.0
_DUMPS = pickle.dumps
_LOADS = pickle.loads


#: Immutable types that always pickle: a message made only of these goes on
#: the queue as it is (the feeder pickles it once), since the sender can
#: neither fail to pickle it nor change it before the feeder does. A 16 MiB
#: bytes payload is then copied twice less.
_PLAIN = frozenset({type(None), bool, int, float, str, bytes, slice})


def _plain(value: object) -> bool:
    if value.__class__ is tuple:
        return all(map(_plain, value))
    if value.__class__ is slice:
        return _plain((value.start, value.stop, value.step))
    return value.__class__ in _PLAIN


def _wire(message: tuple[Any, ...], payload: object) -> tuple[Any, ...] | bytes:
    """``message`` as it goes on a queue: itself if ``payload`` is plain, else pickled here.

    ``payload`` is the part of the message a user supplied (a request's
    arguments, a reply's result); the rest is the client's own and plain.
    """
    if _plain(payload):
        return message
    try:
        return _DUMPS(message, pickle.HIGHEST_PROTOCOL)
    except Exception as error:
        raise TypeError(
            f"cannot send to the owner process: {type(error).__name__}: {error}"
        ) from None


def _unwire(message: Any) -> Any:
    return _LOADS(message) if message.__class__ is bytes else message


def serve(
    requests: Any,
    replies: Any,
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
    get = requests.get
    # The creator, watched through its Lifeline, not parent_process(): the
    # sentinel of a forked owner is held open by every process its creator
    # forks afterwards, which would keep the owner alive after the creator.
    checked = time.monotonic()
    while True:
        try:
            message = get(timeout=IDLE_CHECK)
        except queue.Empty:
            message = None
        now = time.monotonic()
        if now - checked >= IDLE_CHECK:  # busy or idle, the creator is checked
            checked = now
            if creator.gone():  # died without close()
                return
        if message is None:
            continue
        if message.__class__ is bytes:
            message = _LOADS(message)
        token, method, call_args = message
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
            continue
        if method == _STOP:
            replies.put((token, (True, None)))
            owner_end.close()
            return
        if fn is None:
            answer: tuple[bool, Any] = (False, ValueError(f"unknown request {method!r}"))
        else:
            answer = run(fn, *call_args)
        # Pickled now, not by the feeder thread later: the reply is the state
        # as it is at this moment, even if the state goes on changing.
        try:
            reply = _wire((token, answer), answer[1])
        except TypeError as error:
            error_answer = (False, portable(error))
            reply = _wire((token, error_answer), error_answer[1])
        replies.put(reply)


class Owner:
    """A handle's link to its owner process; pickles to children with the handle.

    ``what`` names the handle in messages; ``closed_error`` is raised to a
    caller whose handle another thread closed while it waited.
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
        self._requests = ctx.Queue()
        self._replies = ctx.Queue()
        # One reply queue for all callers: a caller holds this lock from its
        # request to its reply, so it cannot take another caller's reply.
        self._reply_lock = ctx.Lock()
        self._lifeline, owner_end = ctx.Pipe(duplex=False)
        self._creator = os.getpid()
        self._tokens = itertools.count()
        self._process: Any = ctx.Process(
            target=serve,
            args=(self._requests, self._replies, owner_end, lifeline(), make, args),
            name=f"shmref-{what}-owner",
            daemon=True,
        )
        self._process.start()
        owner_end.close()  # the owner's copy is now the only write end

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_process=None, _tokens=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._tokens = itertools.count()

    # Owner is its own handle for acquire(): a waiter for the reply lock
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

    def send(self, method: str, *args: Any) -> None:
        """Ask the owner to call ``method(*args)``; do not wait for it.

        For arguments the handle has already checked (ints, floats, bytes):
        the queue's feeder pickles them, which spares the hot path a second
        pickling. Anything else goes through :meth:`call`.
        """
        self._requests.put((None, method, args))

    def call(self, method: str, *args: Any) -> Any:
        """``method(*args)`` run by the owner: its result, or its exception raised here."""
        return self._ask(method, args, self, self.timeout)

    def _ask(
        self, method: str, args: tuple[Any, ...], waker: Owner | None, lock_wait: float | None
    ) -> Any:
        # waker: whose closing ends the wait (None: close()'s own stop request).
        token = (os.getpid(), id(self), next(self._tokens))
        request = _wire((token, method, args), args)
        acquire(self._reply_lock, lock_wait, f"{self.what}'s reply lock", waker)
        try:
            self._requests.put(request)
            deadline = Deadline(self.timeout)
            while True:
                try:
                    answer, outcome = _unwire(self._replies.get(True, deadline.next_slice()))
                except queue.Empty:
                    if waker is not None and self.closed:
                        self._refuse()
                    if self.gone():
                        raise OwnerGone(f"the owner process of {self.what} is gone") from None
                    if deadline.expired:
                        raise TimeoutError(
                            f"no reply from the owner process of {self.what} "
                            f"within {self.timeout} s"
                        ) from None
                    continue
                # A reply to a caller that gave up earlier: nobody waits for it.
                if answer == token:
                    break
        finally:
            self._reply_lock.release()
        ok, result = outcome
        if not ok:
            raise result
        return result

    def close(self) -> None:
        """Stop the owner if this process created it; never hangs, never raises."""
        self.closed = True
        process, self._process = self._process, None
        if process is None or os.getpid() != self._creator:
            return  # another process's handle: detach only
        stopped = False
        if process.is_alive():
            try:
                # A caller of this process that holds the reply lock sees the
                # handle closed within a slice and lets go; one that does
                # not (another process's, or a dead one) is not waited for.
                self._ask(_STOP, (), None, _STOP_LOCK_WAIT)
                stopped = True
            except (TimeoutError, OwnerGone):
                pass  # killed below
        process.join(self.timeout if stopped else 0)
        if process.is_alive():
            process.kill()
            process.join()
        process.close()
        for q in (self._requests, self._replies):
            if not stopped:
                # Nobody will read what is still buffered (the pipe may be
                # full): do not wait for the feeder thread to write it.
                q.cancel_join_thread()
            q.close()
            q.join_thread()
        self._lifeline.close()
