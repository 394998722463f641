"""A first-in first-out channel of byte messages between processes, three ways.

Every class here implements :class:`Channel`: a bounded FIFO of ``bytes``
messages of at most ``max_size`` bytes, with ``put(msg, timeout=None)``,
``get(timeout=None)``, ``put_many``, ``get_many``, ``close()`` and the
context-manager protocol.

* ctypes shared memory: :class:`CtypesChannel`, a ring of fixed-size slots in
  one ``multiprocessing.shared_memory.SharedMemory`` segment, with two
  semaphores counting free and filled slots;
* message passing: :class:`QueueChannel`, a ``multiprocessing.Queue``;
* a Manager server: :class:`ManagerChannel`, a queue living in a manager's
  server process, like ``manager.Queue()``, whose batch methods run there.

:class:`PickleChannel` wraps any of them to carry picklable objects.

The process that creates a channel owns it. Its ``close()`` closes the channel
for every process: puts raise :class:`ChannelClosed` everywhere, and getters,
waiting or not, receive what the channel still holds and then
:class:`ChannelClosed` (a :class:`ManagerChannel` cannot drain: its server
stops). ``close()`` in another process only detaches that process's handle.
Channels pass to child processes as ``Process`` arguments under every start
method. This module imports only the standard library: copy it alone into a
project and it works.
"""

from __future__ import annotations

import collections
import contextlib
import os
import pickle
import queue
import struct
import sys
import threading
import time
import weakref
from collections.abc import Iterable, Sequence
from multiprocessing import get_context
from multiprocessing.context import BaseContext
from multiprocessing.managers import BaseManager
from multiprocessing.shared_memory import SharedMemory
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "DEFAULT_CAPACITY",
    "DEFAULT_MAX_SIZE",
    "Channel",
    "ChannelClosed",
    "ChannelManager",
    "CtypesChannel",
    "ManagerChannel",
    "PickleChannel",
    "QueueChannel",
    "append_worker",
    "drain_worker",
    "numbered",
    "receive_worker",
    "send_worker",
]

#: Seconds a call waits for an internal lock, and ``close()`` for its peers,
#: before giving up: long enough for a loaded machine, short enough that a
#: peer that died holding a lock is noticed. Waits for room or for a message
#: take the call's own ``timeout`` instead.
DEFAULT_TIMEOUT = 30.0
DEFAULT_CAPACITY = 64
DEFAULT_MAX_SIZE = 64 * 1024

#: What ``put`` accepts; ``get`` always returns ``bytes``.
Message = bytes | bytearray | memoryview


class ChannelClosed(ValueError):
    """The channel, or this process's handle of it, is closed."""


@runtime_checkable
class Channel(Protocol):
    """What every channel in this module guarantees.

    ``put(msg)`` appends a bytes-like ``msg`` of at most ``max_size`` bytes;
    it waits up to ``timeout`` seconds (``None``: for ever) for room among
    the ``capacity`` messages the channel holds, then raises ``queue.Full``.
    A message that is not bytes-like raises ``TypeError``, a longer one
    ``ValueError``, before anything is written. ``get()`` removes and
    returns the oldest message as ``bytes``, waiting up to ``timeout``
    seconds for one before raising ``queue.Empty``. Each message is received
    by exactly one getter, and the messages of one producer reach each getter
    in the order they were put.

    ``put_many(msgs)`` is all or nothing: it waits until there is room for
    every message (more than ``capacity`` raises ``ValueError``) and puts
    them in order, with no other message between them. ``get_many(n)``
    waits like ``get`` for the first message and returns up to ``n`` without
    waiting again.

    ``close()`` in the creating process closes the channel for every process
    (see the module docstring); elsewhere it detaches this handle. Calls on a
    closed handle raise :class:`ChannelClosed`; ``close()`` may be called
    again. Every blocking call takes a ``timeout``.
    """

    @property
    def capacity(self) -> int: ...

    @property
    def max_size(self) -> int: ...

    def put(self, msg: Message, timeout: float | None = None) -> None: ...

    def get(self, timeout: float | None = None) -> bytes: ...

    def put_many(self, msgs: Iterable[Message], timeout: float | None = None) -> None: ...

    def get_many(self, max_messages: int, timeout: float | None = None) -> list[bytes]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Channel: ...

    def __exit__(self, *exc: object) -> None: ...


def _context(ctx: BaseContext | None) -> Any:
    # Any: typeshed's BaseContext lacks Process, and the shared objects it
    # makes are replaced by None on close().
    return ctx if ctx is not None else get_context()


def _positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, not {value!r}")
    return value


def _payload(msg: object) -> bytes:
    if isinstance(msg, bytes):
        return msg
    if isinstance(msg, (bytearray, memoryview)):
        return bytes(msg)
    raise TypeError(f"a message must be bytes-like, not {type(msg).__name__}")


def _too_big(size: int, max_size: int) -> ValueError:
    return ValueError(f"a message of {size} bytes exceeds max_size={max_size}; nothing was put")


def _batch(msgs: Iterable[Message], capacity: int, max_size: int) -> list[bytes]:
    """Check a whole batch before any of it is written."""
    if isinstance(msgs, (bytes, bytearray, memoryview, str)):
        raise TypeError("put_many takes an iterable of messages, not one message")
    batch = [_payload(msg) for msg in msgs]
    for msg in batch:
        if len(msg) > max_size:
            raise _too_big(len(msg), max_size)
    if len(batch) > capacity:
        raise ValueError(f"a batch of {len(batch)} messages exceeds capacity={capacity}")
    return batch


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and timeout < 0:
        raise ValueError(f"timeout must be None or >= 0, not {timeout!r}")


def _release(semaphore: Any, n: int) -> None:
    for _ in range(n):
        semaphore.release()


def _acquire_n(semaphore: Any, n: int, timeout: float | None, closed: Any) -> bool:
    """Take ``n`` tokens within ``timeout``, or none; stop early once ``closed()``.

    Returns False on timeout. A closed channel makes it return True early
    with what it holds given back, so that the caller reports the close.
    """
    taken = 0
    while taken < n and semaphore.acquire(False):
        taken += 1
    deadline = None if timeout is None else time.monotonic() + timeout
    while taken < n:
        # A token held may be the one close() posts to wake putters: waiting
        # for more while holding it would keep the other putters asleep.
        if closed():
            _release(semaphore, taken)
            return True
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not semaphore.acquire(True, wait):
            _release(semaphore, taken)
            return False
        taken += 1
    return True


class _Handle:
    """The parts every way shares: sizes, close state, context manager."""

    _closed = False
    _capacity: int
    _max_size: int

    @property
    def capacity(self) -> int:
        """How many messages the channel holds before ``put`` waits."""
        return self._capacity

    @property
    def max_size(self) -> int:
        """The longest message, in bytes."""
        return self._max_size

    def _check_open(self) -> None:
        if self._closed:
            raise ChannelClosed(f"this {type(self).__name__} handle is closed")

    def _closed_by_creator(self, empty: bool = False) -> ChannelClosed:
        text = f"the {type(self).__name__} was closed by its creator"
        return ChannelClosed(text + " and is empty" if empty else text)

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# CtypesChannel's segment: three 64-byte lines, so that producers (head) and
# consumers (tail) do not write the same cache line, then the slots. A slot is
# the message length (8 bytes) and the message, padded to 64 bytes. The
# segment is read and written as 8-byte words (a "Q" view) and bytes.
_CLOSED, _HEAD, _TAIL = 0, 8, 16  # word indices
_SLOTS = 192  # byte offset of slot 0
_LENGTH = 8
_LINE = 64


def _attach(name: str) -> SharedMemory:
    if sys.version_info >= (3, 13):
        return SharedMemory(name, track=False)
    # Before 3.13 attaching registers the segment with the resource tracker.
    # Every process that multiprocessing starts (fork, forkserver, spawn)
    # shares its parent's tracker, which keeps names in a set: registering
    # again changes nothing. Unregistering here would drop the creator's
    # registration, so the tracker would print a KeyError when the creator
    # unlinks, and would not clean up after a creator that crashed.
    return SharedMemory(name)


def _release_segment(segment: SharedMemory, words: memoryview, creator: int | None) -> None:
    words.release()  # the mapping cannot close while a view of it exists
    segment.close()
    if creator == os.getpid():
        segment.unlink()


def _lock_timeout(what: str, timeout: float | None) -> TimeoutError:
    return TimeoutError(f"{what} not acquired within {timeout} s (a holder may have died)")


class CtypesChannel(_Handle):
    """A ring of ``capacity`` slots of ``max_size`` bytes in shared memory.

    A put takes a *free* token (a semaphore counting free slots), copies the
    message into the slot at the head under the producers' lock and posts a
    *filled* token; a get does the reverse under the consumers' lock. A
    message is copied twice (into the segment, and out into a new ``bytes``)
    and never pickled; ``put_many``/``get_many`` take each lock once per
    batch. The segment takes ``capacity * (max_size + 8)`` bytes, rounded up
    to 64 bytes a slot.

    ``close()`` in the creating process marks the channel closed in the
    segment under the producers' lock, so every put either completed before
    it or raises :class:`ChannelClosed`; it posts one token of each kind,
    which each woken waiter hands on, and unlinks the segment (exactly once:
    no other process ever unlinks it). Getters receive every message whose
    ``put`` returned before the close, then :class:`ChannelClosed`. A process
    that dies while holding a lock (for the time of one copy) makes the
    others raise ``TimeoutError`` after ``timeout`` seconds, with nothing
    taken or written.

    >>> from shmref.channel import CtypesChannel
    >>> with CtypesChannel(capacity=4, max_size=16) as channel:
    ...     channel.put(b"hello")
    ...     channel.put_many([b"a", b"b"])
    ...     channel.get(), channel.get_many(8)
    (b'hello', [b'a', b'b'])
    """

    def __init__(
        self,
        capacity: int = DEFAULT_CAPACITY,
        max_size: int = DEFAULT_MAX_SIZE,
        *,
        ctx: BaseContext | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        self._capacity = _positive("capacity", capacity)
        self._max_size = _positive("max_size", max_size)
        self._stride = -(-(_LENGTH + max_size) // _LINE) * _LINE
        context = _context(ctx)
        segment = SharedMemory(create=True, size=_SLOTS + capacity * self._stride)
        buf: Any = segment.buf
        words = buf.cast("Q")
        self._release = weakref.finalize(self, _release_segment, segment, words, os.getpid())
        try:
            self._free = context.Semaphore(capacity)
            self._filled = context.Semaphore(0)
            self._put_lock = context.Lock()
            self._get_lock = context.Lock()
        except BaseException:
            self._release()
            raise
        self._segment: SharedMemory | None = segment
        self._buf: Any = buf
        self._words: Any = words
        self._creator = os.getpid()
        self._timeout = timeout

    def __getstate__(self) -> dict[str, Any]:
        self._check_open()
        state = self.__dict__.copy()
        state["_segment"] = self._segment.name  # type: ignore[union-attr]
        del state["_buf"], state["_words"], state["_release"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        segment = self._segment = _attach(state["_segment"])
        self._buf = segment.buf
        self._words = self._buf.cast("Q")
        self._release = weakref.finalize(self, _release_segment, segment, self._words, None)

    @property
    def name(self) -> str:
        """The shared memory segment's name (under ``/dev/shm`` on Linux)."""
        self._check_open()
        return self._segment.name  # type: ignore[union-attr]

    def _is_closed(self) -> bool:
        return bool(self._closed or self._words[_CLOSED])

    def _refuse(self, semaphore: Any, tokens: int, empty: bool = False) -> None:
        _release(semaphore, tokens)  # hand them on to the next waiter
        self._check_open()
        raise self._closed_by_creator(empty)

    # put() and get() are _write() and _read() for one message, inlined: they
    # are the calls whose cost the benchmarks measure.

    def put(self, msg: Message, timeout: float | None = None) -> None:
        if msg.__class__ is not bytes:
            msg = _payload(msg)
        size = len(msg)
        if size > self._max_size:
            raise _too_big(size, self._max_size)
        if self._closed:
            self._check_open()
        if timeout is not None:
            _check_timeout(timeout)
        free = self._free
        if not free.acquire(True, timeout):
            raise queue.Full(f"no free slot within {timeout} s")
        lock = self._put_lock
        if not lock.acquire(True, self._timeout):
            free.release()
            raise _lock_timeout("the producers' lock", self._timeout)
        try:
            words = self._words
            refused = self._closed or words[_CLOSED]
            if not refused:
                head = words[_HEAD]
                offset = _SLOTS + head % self._capacity * self._stride
                words[offset >> 3] = size
                self._buf[offset + _LENGTH : offset + _LENGTH + size] = msg
                # Published last: a filled token stands for whole slots only.
                words[_HEAD] = head + 1
        finally:
            lock.release()
        if refused:
            self._refuse(free, 1)
        self._filled.release()

    def put_many(self, msgs: Iterable[Message], timeout: float | None = None) -> None:
        batch = _batch(msgs, self._capacity, self._max_size)
        self._check_open()
        _check_timeout(timeout)
        if batch:
            if not _acquire_n(self._free, len(batch), timeout, self._is_closed):
                raise queue.Full(f"no {len(batch)} free slots within {timeout} s")
            self._write(batch)

    def _write(self, batch: Sequence[bytes]) -> None:
        """Copy ``batch`` in at the head; its free tokens are already taken."""
        free, lock = self._free, self._put_lock
        if not lock.acquire(True, self._timeout):
            _release(free, len(batch))
            raise _lock_timeout("the producers' lock", self._timeout)
        try:
            refused = self._is_closed()
            if not refused:
                words, buf, capacity, stride = self._words, self._buf, self._capacity, self._stride
                head = words[_HEAD]
                for msg in batch:
                    offset = _SLOTS + head % capacity * stride
                    words[offset >> 3] = len(msg)
                    buf[offset + _LENGTH : offset + _LENGTH + len(msg)] = msg
                    head += 1
                words[_HEAD] = head
        finally:
            lock.release()
        if refused:
            self._refuse(free, len(batch))
        _release(self._filled, len(batch))

    def get(self, timeout: float | None = None) -> bytes:
        if self._closed:
            self._check_open()
        if timeout is not None:
            _check_timeout(timeout)
        filled = self._filled
        if not filled.acquire(True, timeout):
            raise queue.Empty(f"no message within {timeout} s")
        lock = self._get_lock
        if not lock.acquire(True, self._timeout):
            filled.release()
            raise _lock_timeout("the consumers' lock", self._timeout)
        try:
            words = self._words
            if self._closed or words[_CLOSED]:
                msg = None
            else:
                tail = words[_TAIL]
                offset = _SLOTS + tail % self._capacity * self._stride
                start = offset + _LENGTH
                msg = self._buf[start : start + words[offset >> 3]].tobytes()
                words[_TAIL] = tail + 1
        finally:
            lock.release()
        if msg is None:
            return self._read(1)[0]  # closed: drain, or raise
        self._free.release()
        return msg  # type: ignore[no-any-return]

    def get_many(self, max_messages: int, timeout: float | None = None) -> list[bytes]:
        _positive("max_messages", max_messages)
        self._check_open()
        _check_timeout(timeout)
        filled = self._filled
        if not filled.acquire(True, timeout):
            raise queue.Empty(f"no message within {timeout} s")
        tokens = 1
        while tokens < max_messages and filled.acquire(False):
            tokens += 1
        return self._read(tokens)

    def _read(self, tokens: int) -> list[bytes]:
        """Copy up to ``tokens`` messages out at the tail; the tokens are taken."""
        filled, lock = self._filled, self._get_lock
        if not lock.acquire(True, self._timeout):
            _release(filled, tokens)
            raise _lock_timeout("the consumers' lock", self._timeout)
        out: list[bytes] = []
        try:
            if not self._closed:
                words, buf, capacity, stride = self._words, self._buf, self._capacity, self._stride
                tail = words[_TAIL]
                count = tokens
                if words[_CLOSED]:
                    # One token may be close()'s wake-up call, not a message.
                    count = min(tokens, self._head_after_close() - tail)
                for _ in range(count):
                    offset = _SLOTS + tail % capacity * stride
                    start = offset + _LENGTH
                    out.append(buf[start : start + words[offset >> 3]].tobytes())
                    tail += 1
                words[_TAIL] = tail
        finally:
            lock.release()
        if not out:
            self._refuse(filled, tokens, empty=True)
        if len(out) < tokens:
            _release(filled, tokens - len(out))  # hand the wake-up call on
        _release(self._free, len(out))
        return out

    def _head_after_close(self) -> int:
        # close() set the flag under the producers' lock and no put writes
        # after it: taking that lock makes the final head (and every slot
        # before it) visible here.
        locked = self._put_lock.acquire(True, self._timeout)
        try:
            return int(self._words[_HEAD])
        finally:
            if locked:
                self._put_lock.release()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        put_lock, get_lock = self._put_lock, self._get_lock
        if os.getpid() == self._creator:
            locked = put_lock.acquire(True, self._timeout)
            # Set even without the lock: its holder died, no put can follow.
            self._words[_CLOSED] = 1
            if locked:
                put_lock.release()
            # One wake-up call each; a waiter that finds the channel closed
            # hands its token on, so every waiter wakes in turn.
            self._filled.release()
            self._free.release()
        # Another thread of this process may be copying: unmap after it.
        locked_get = get_lock.acquire(True, self._timeout)
        locked_put = put_lock.acquire(True, self._timeout)
        self._buf = self._words = None
        try:
            if locked_get and locked_put:
                self._release()
            else:  # the mapping goes with the handle; the name goes now
                self._release.detach()
                if os.getpid() == self._creator and self._segment is not None:
                    self._segment.unlink()
        finally:
            if locked_put:
                put_lock.release()
            if locked_get:
                get_lock.release()
        self._segment = None
        self._free = self._filled = self._put_lock = self._get_lock = None


# QueueChannel's items: a message (bytes), a batch (list of bytes), or this.
_CLOSED_MARK = None

_queue_handles: weakref.WeakSet[QueueChannel] = weakref.WeakSet()


def _forget_received() -> None:
    # A batch the parent received is the parent's to hand out, not the child's.
    for channel in list(_queue_handles):
        channel._received = collections.deque()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_received)


class QueueChannel(_Handle):
    """A ``multiprocessing.Queue``, bounded by a semaphore of its own.

    ``put`` hands the message to the queue's feeder thread, which pickles it
    and writes it to a pipe; ``get`` reads and unpickles it. ``put_many``
    sends the batch as one item (one pickle, one write), which one getter
    receives whole: its ``get`` hands the rest out one by one, and
    ``get_many`` returns them together. ``get_many(n)`` returns what its
    handle holds, or one item, reading more items only while ``n`` leaves
    room for ``capacity`` more messages (so nothing is left in the handle).
    A handle closed with part of a batch still in it puts that part back,
    behind the messages already in the channel.

    ``close()`` in the creating process marks the channel closed (puts
    raise :class:`ChannelClosed` everywhere; a put that overlaps the close
    may still go through) and sends a closing mark behind its own messages;
    a getter that receives the mark passes it on and raises
    :class:`ChannelClosed`. Part of the contract it keeps only in part:
    ``put`` returns before the feeder thread has written the message, so a
    message from another process is ahead of the mark only if that process
    closed its handle or exited before the creator's ``close()``. A process
    killed with SIGKILL loses the messages in its feeder thread and in its
    handle, and with them their room in the channel. ``close()`` waits up to
    ``timeout`` seconds for this process's feeder thread to write what it
    holds; what it has not written by then is lost.

    >>> from shmref.channel import QueueChannel
    >>> with QueueChannel(capacity=4, max_size=16) as channel:
    ...     channel.put(b"hello")
    ...     channel.get(timeout=10)
    b'hello'
    """

    def __init__(
        self,
        capacity: int = DEFAULT_CAPACITY,
        max_size: int = DEFAULT_MAX_SIZE,
        *,
        ctx: BaseContext | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        self._capacity = _positive("capacity", capacity)
        self._max_size = _positive("max_size", max_size)
        context = _context(ctx)
        # Unbounded: the bound is `room`, so that the closing mark never waits.
        self._queue: Any = context.Queue()
        self._room: Any = context.Semaphore(capacity)
        self._flag: Any = context.RawValue("b", 0)
        self._creator = os.getpid()
        self._timeout = timeout
        self._received: collections.deque[bytes] = collections.deque()
        _queue_handles.add(self)

    def __getstate__(self) -> dict[str, Any]:
        self._check_open()
        state = self.__dict__.copy()
        state["_received"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._received = collections.deque()
        _queue_handles.add(self)

    def _is_closed(self) -> bool:
        return bool(self._closed or self._flag.value)

    def put(self, msg: Message, timeout: float | None = None) -> None:
        if msg.__class__ is not bytes:
            msg = _payload(msg)
        if len(msg) > self._max_size:
            raise _too_big(len(msg), self._max_size)
        if self._closed:
            self._check_open()
        if timeout is not None:
            _check_timeout(timeout)
        flag, room = self._flag, self._room
        if flag.value:
            raise self._closed_by_creator()
        if not room.acquire(True, timeout):
            raise queue.Full(f"no room within {timeout} s")
        if flag.value:
            self._refuse(room, 1)
        self._queue.put(msg)

    def put_many(self, msgs: Iterable[Message], timeout: float | None = None) -> None:
        batch = _batch(msgs, self._capacity, self._max_size)
        self._check_open()
        _check_timeout(timeout)
        if not batch:
            return
        if self._flag.value:
            raise self._closed_by_creator()
        if not _acquire_n(self._room, len(batch), timeout, self._is_closed):
            raise queue.Full(f"no room for {len(batch)} messages within {timeout} s")
        if self._is_closed():
            self._refuse(self._room, len(batch))
        # One item: one pickle, one write to the pipe.
        self._queue.put(batch if len(batch) > 1 else batch[0])

    def _refuse(self, room: Any, tokens: int) -> None:
        _release(room, tokens)  # hand them on to the next waiting putter
        self._check_open()
        raise self._closed_by_creator()

    def _accept(self, item: bytes | list[bytes] | None) -> list[bytes]:
        """The messages of a received item; the closing mark raises."""
        if item is _CLOSED_MARK:
            with contextlib.suppress(ValueError):  # this handle was closed meanwhile
                self._queue.put(_CLOSED_MARK)  # for the next getter
            raise self._closed_by_creator(empty=True)
        return [item] if isinstance(item, bytes) else item

    # A message's room token is given back when the message is handed out:
    # the rest of a batch waiting in `_received` still counts as in the channel.

    def get(self, timeout: float | None = None) -> bytes:
        if self._closed:
            self._check_open()
        received = self._received
        if not received:
            if timeout is not None:
                _check_timeout(timeout)
            item = self._queue.get(True, timeout)  # queue.Empty goes to the caller
            if item.__class__ is bytes:
                self._room.release()
                return item
            received.extend(self._accept(item))
        self._room.release()
        return received.popleft()

    def get_many(self, max_messages: int, timeout: float | None = None) -> list[bytes]:
        _positive("max_messages", max_messages)
        self._check_open()
        _check_timeout(timeout)
        q, received = self._queue, self._received
        if not received:
            received.extend(self._accept(q.get(True, timeout)))
            # An item holds at most `capacity` messages: read more only while
            # the next one cannot overflow, so that none is left over in this
            # handle (where a getter that stops would strand it).
            while max_messages - len(received) >= self._capacity:
                try:
                    received.extend(self._accept(q.get(False)))
                except (queue.Empty, ChannelClosed):
                    break  # the next call reports the close
        out = [received.popleft() for _ in range(min(max_messages, len(received)))]
        _release(self._room, len(out))
        return out

    def close(self) -> None:
        if self._closed:
            return
        q = self._queue
        try:
            if self._received:  # the rest of a batch: back into the channel
                q.put(list(self._received))
            if os.getpid() == self._creator:
                self._flag.value = 1
                self._room.release()  # wakes a waiting putter, which hands it on
                q.put(_CLOSED_MARK)  # behind every message this process put
        finally:
            self._closed = True
            q.close()
            # join_thread() has no timeout, and waits for ever for a pipe
            # that nobody reads: wait for the feeder thread ourselves.
            feeder = getattr(q, "_thread", None)
            if feeder is not None:
                feeder.join(self._timeout)
            if feeder is not None and feeder.is_alive():
                q.cancel_join_thread()  # its messages are lost
            else:
                q.join_thread()
            self._queue = self._room = self._flag = None
            self._received = collections.deque()


class _ChannelState:
    """The messages of a :class:`ManagerChannel`, living in its server.

    The server runs each call in a thread of its own; one condition guards
    the deque, and every change wakes all waiters, so a batch waiting for
    room cannot swallow the wake-up a single put needed.
    """

    def __init__(self, capacity: int) -> None:
        self._messages: collections.deque[bytes] = collections.deque()
        self._capacity = capacity
        self._changed = threading.Condition()

    # Every method returns something other than None: see ManagerChannel._call.

    def put(self, msg: bytes, timeout: float | None) -> int:
        return self.put_many([msg], timeout)

    def put_many(self, msgs: list[bytes], timeout: float | None) -> int:
        with self._changed:
            room = self._changed.wait_for(
                lambda: self._capacity - len(self._messages) >= len(msgs), timeout
            )
            if not room:
                raise queue.Full(f"no room for {len(msgs)} messages within {timeout} s")
            self._messages.extend(msgs)
            self._changed.notify_all()
            return len(msgs)

    def get(self, timeout: float | None) -> bytes:
        return self.get_many(1, timeout)[0]

    def get_many(self, max_messages: int, timeout: float | None) -> list[bytes]:
        with self._changed:
            if not self._changed.wait_for(lambda: self._messages, timeout):
                raise queue.Empty(f"no message within {timeout} s")
            messages = self._messages
            out = [messages.popleft() for _ in range(min(max_messages, len(messages)))]
            self._changed.notify_all()
            return out


class ChannelManager(BaseManager):
    """A manager whose ``Channel(capacity)`` is a channel living in its server."""


ChannelManager.register("Channel", _ChannelState, exposed=("put", "get", "put_many", "get_many"))


class ManagerChannel(_Handle):
    """A queue in a manager's server process; every call is one round trip.

    This is what ``manager.Queue()`` gives (a proxy to a queue in the
    server), plus ``put_many`` and ``get_many`` that run in the server, so
    that a batch costs one round trip. The message is pickled to the server
    and from it. The server could run on another host; this class starts it
    locally, one server per channel.

    ``close()`` in the creating process stops the server. Waiting getters
    and putters, in any process, wake with :class:`ChannelClosed` (the
    connection to the server ends); so does every later call. Part of the
    contract it cannot keep: messages still in the channel are lost, because
    they live in the server, so getters do not drain a closed channel.

    >>> from shmref.channel import ManagerChannel
    >>> with ManagerChannel(capacity=4, max_size=16) as channel:
    ...     channel.put(b"hello")
    ...     channel.get()
    b'hello'
    """

    def __init__(
        self,
        capacity: int = DEFAULT_CAPACITY,
        max_size: int = DEFAULT_MAX_SIZE,
        *,
        ctx: BaseContext | None = None,
    ) -> None:
        self._capacity = _positive("capacity", capacity)
        self._max_size = _positive("max_size", max_size)
        self._creator = os.getpid()
        self._manager: ChannelManager | None = ChannelManager(ctx=_context(ctx))
        self._manager.start()
        self._proxy: Any = self._manager.Channel(capacity)  # type: ignore[attr-defined]

    def __getstate__(self) -> dict[str, Any]:
        self._check_open()
        return {
            "_capacity": self._capacity,
            "_max_size": self._max_size,
            "_creator": self._creator,
            "_proxy": self._proxy,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._manager = None

    def _call(self, method: str, *args: Any) -> Any:
        try:
            result = self._proxy._callmethod(method, args)
        except (EOFError, OSError) as exc:  # the connection to the server ended
            raise self._gone() from exc
        if result is None:
            # A call that reaches the server as it stops gets the None that
            # the server sends when it ends the connection, not a reply.
            raise self._gone()
        return result

    def _gone(self) -> ChannelClosed:
        return ChannelClosed(
            f"the {type(self).__name__}'s server has stopped "
            "(closed by its creator, or died); messages still in it are lost"
        )

    def put(self, msg: Message, timeout: float | None = None) -> None:
        if msg.__class__ is not bytes:
            msg = _payload(msg)
        if len(msg) > self._max_size:
            raise _too_big(len(msg), self._max_size)
        if self._closed:
            self._check_open()
        _check_timeout(timeout)
        self._call("put", msg, timeout)

    def put_many(self, msgs: Iterable[Message], timeout: float | None = None) -> None:
        batch = _batch(msgs, self._capacity, self._max_size)
        self._check_open()
        _check_timeout(timeout)
        if batch:
            self._call("put_many", batch, timeout)

    def get(self, timeout: float | None = None) -> bytes:
        if self._closed:
            self._check_open()
        _check_timeout(timeout)
        return self._call("get", timeout)  # type: ignore[no-any-return]

    def get_many(self, max_messages: int, timeout: float | None = None) -> list[bytes]:
        _positive("max_messages", max_messages)
        self._check_open()
        _check_timeout(timeout)
        return self._call("get_many", max_messages, timeout)  # type: ignore[no-any-return]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # A forked child holds a copy of the creator's manager: not its to stop.
        if self._manager is not None and os.getpid() == self._creator:
            # Stop the server before dropping the proxy: a spawned child's
            # proxy borrows the creator's reference, and a call arriving
            # after the object is dropped would fail with a KeyError.
            self._manager.shutdown()
        self._manager = self._proxy = None


class PickleChannel:
    """Any :class:`Channel`, carrying picklable objects instead of bytes.

    ``put`` pickles in the calling process, so an object that cannot be
    pickled, or whose pickle exceeds ``max_size``, raises there and nothing
    is put (a bare ``multiprocessing.Queue`` pickles in its feeder thread
    and only prints the error). Closing it closes the wrapped channel.

    >>> from shmref.channel import CtypesChannel, PickleChannel
    >>> with PickleChannel(CtypesChannel(capacity=4, max_size=256)) as channel:
    ...     channel.put({"id": 7, "tags": ["a", "b"]})
    ...     channel.get()
    {'id': 7, 'tags': ['a', 'b']}
    """

    def __init__(self, channel: Channel, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
        self.channel = channel
        self._protocol = protocol

    @property
    def capacity(self) -> int:
        return self.channel.capacity

    @property
    def max_size(self) -> int:
        """The longest pickled object, in bytes."""
        return self.channel.max_size

    def _dumps(self, obj: object) -> bytes:
        data = pickle.dumps(obj, self._protocol)
        if len(data) > self.channel.max_size:
            raise ValueError(
                f"the pickled {type(obj).__name__} takes {len(data)} bytes, "
                f"over max_size={self.channel.max_size}; nothing was put"
            )
        return data

    def put(self, obj: object, timeout: float | None = None) -> None:
        self.channel.put(self._dumps(obj), timeout)

    def put_many(self, objs: Iterable[object], timeout: float | None = None) -> None:
        self.channel.put_many([self._dumps(obj) for obj in objs], timeout)

    def get(self, timeout: float | None = None) -> Any:
        return pickle.loads(self.channel.get(timeout))

    def get_many(self, max_messages: int, timeout: float | None = None) -> list[Any]:
        return [pickle.loads(data) for data in self.channel.get_many(max_messages, timeout)]

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> PickleChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# Process targets for the tests, the benchmarks and the docs' examples.

#: A numbered message starts with the producer's id and its sequence number.
_ID = struct.Struct("<II")


def numbered(producer: int, sequence: int, size: int = _ID.size) -> bytes:
    """A message of ``size`` bytes that says who sent it and in what order."""
    return _ID.pack(producer, sequence) + bytes(max(0, size - _ID.size))


def send_worker(
    channel: Channel,
    producer: int,
    count: int,
    size: int = _ID.size,
    batch: int = 1,
    ends: int = 1,
    barrier: Any = None,
    timeout: float = 60.0,
) -> None:
    """Process target: put ``count`` numbered messages, then ``ends`` empty ones.

    Messages go ``batch`` at a time (``put_many``) when ``batch > 1``. An
    empty message marks the end: :func:`receive_worker` stops after its
    share of them. With a ``barrier``, wait on it before the first put and
    after the last, so that a caller waiting on it too times the work alone.
    With ``size < 0`` every message is the same ``-size`` bytes (numbered 0),
    built once, for benchmarks that time the channel and not the message.
    """
    if barrier is not None:
        barrier.wait(timeout)
    if size < 0:
        same = numbered(producer, 0, -size)
        messages: Iterable[bytes] = (same for _ in range(count))
    else:
        messages = (numbered(producer, i, size) for i in range(count))
    if batch == 1:
        put = channel.put
        for msg in messages:
            put(msg, timeout)
    else:
        pending: list[bytes] = []
        for msg in messages:
            pending.append(msg)
            if len(pending) == batch:
                channel.put_many(pending, timeout)
                pending = []
        if pending:
            channel.put_many(pending, timeout)
    for _ in range(ends):
        channel.put(b"", timeout)
    if barrier is not None:
        barrier.wait(timeout)
    channel.close()


def receive_worker(
    channel: Channel,
    ends: int,
    results: Any = None,
    batch: int = 1,
    record: bool = True,
    barrier: Any = None,
    timeout: float = 60.0,
) -> None:
    """Process target: get messages until ``ends`` end marks have arrived.

    Sends to the connection ``results`` the ``(producer, sequence)`` pairs
    received, in order (or, with ``record=False``, only their number). End
    marks taken beyond its share (``get_many`` can take several) are put
    back for the other receivers. Barrier as in :func:`send_worker`.
    """
    if barrier is not None:
        barrier.wait(timeout)
    seen: list[tuple[int, int]] = []
    count = marks = 0
    while marks < ends:
        messages = channel.get_many(batch, timeout) if batch > 1 else [channel.get(timeout)]
        for msg in messages:
            if not msg:
                marks += 1
            elif record:
                seen.append(_ID.unpack_from(msg))
            else:
                count += 1
    for _ in range(marks - ends):
        channel.put(b"", timeout)
    if barrier is not None:
        barrier.wait(timeout)
    if results is not None:
        results.send(seen if record else count)
        results.close()
    channel.close()


def drain_worker(channel: Channel, results: Any, timeout: float = 60.0) -> None:
    """Process target: get until the channel is closed, then report what arrived.

    Sends ``"attached"`` on the connection ``results`` first: a spawn or
    forkserver child attaches to the channel when it unpickles its
    arguments, after ``start()`` has returned, and the creator must not
    close the channel before that. Then sends ``(messages, text)``, the
    messages received and the text of the :class:`ChannelClosed` that ended
    the loop.
    """
    results.send("attached")
    messages = []
    while True:
        try:
            messages.append(channel.get(timeout))
        except ChannelClosed as exc:
            results.send((messages, str(exc)))
            break
    results.close()
    channel.close()


def append_worker(items: Any, worker: int, n: int) -> None:
    """Process target of the Manager list example: append ``n`` pairs to ``items``."""
    for i in range(n):
        items.append((worker, i))
