"""A first-in first-out channel of byte messages between processes, three ways.

Every class here implements :class:`Channel`: a bounded FIFO of ``bytes``
messages of at most ``max_size`` bytes, with ``put(msg, timeout=None)``,
``get(timeout=None)``, ``put_many``, ``get_many``, ``close()`` and the
context-manager protocol.

* ctypes shared memory: :class:`CtypesChannel`, a ring of fixed-size slots in
  one shared memory segment, with the counts of messages put and got;
* message passing: :class:`QueueChannel`, a queue in an owner process,
  which each client process reaches through a connection of its own;
* a Manager server: :class:`ManagerChannel`, a queue living in a manager's
  server process, like ``manager.Queue()``, whose batch methods run there;
* a Redis server: :class:`RedisChannel`, a list on a Redis server, reachable
  from any host that can reach the server.

:class:`PickleChannel` wraps any of them to carry picklable objects.

The process that creates a channel owns it. Its ``close()`` closes the channel
for every process: puts raise :class:`ChannelClosed` everywhere, and getters,
waiting or not, receive what the channel still holds and then
:class:`ChannelClosed` (a :class:`QueueChannel`, :class:`ManagerChannel` or
:class:`RedisChannel` cannot drain: its owner or server stops, or its keys
are deleted). ``close()`` in another process
only detaches that process's handle; a thread of that process waiting in a
call wakes with :class:`ChannelClosed`.
Channels pass to child processes as ``Process`` arguments under every start
method. ``python -m shmref.standalone channel`` writes this module as one file
that imports only the standard library (:class:`RedisChannel` imports the
``redis`` package when one is made).
"""

from __future__ import annotations

import collections
import contextlib
import os
import pickle
import platform
import queue
import struct
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from multiprocessing.context import BaseContext
from multiprocessing.managers import BaseManager
from typing import Any, Protocol, runtime_checkable

from shmref.holder import Holder
from shmref.keyspace import DEFAULT_URL, RedisHandle, Script
from shmref.lifecycle import (
    DEFAULT_TIMEOUT,
    LONGEST_WAIT,
    SLICE,
    Closable,
    Deadline,
    OwnerGone,
    context,
    lifeline,
    seconds,
    size,
)
from shmref.owner import Later, Owner
from shmref.segment import attach, create, release
from shmref.server import ManagerHandle, Served, register_state
from shmref.wakeup import EVERYONE, sleep_on, wake, word_address

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
    "RedisChannel",
    "append_worker",
    "drain_worker",
    "numbered",
    "receive_worker",
    "send_worker",
]

DEFAULT_CAPACITY = 64
DEFAULT_MAX_SIZE = 64 * 1024

#: The largest ``capacity`` and ``max_size`` (and ``get_many`` count) of every
#: way: a semaphore counts the slots, and SEM_VALUE_MAX is 2**31 - 1 on Linux;
#: the segment of the largest ring, about 2**62 bytes, is still a size mmap
#: takes (whether the machine has the memory is another matter: OSError).
_LIMIT = 2**31 - 1

#: What ``put`` accepts; ``get`` always returns ``bytes``.
Message = bytes | bytearray | memoryview


class ChannelClosed(ValueError):
    """The channel, or this process's handle of it, is closed."""


class _ServerGone(ChannelClosed, OwnerGone):
    """A :class:`QueueChannel`'s owner process or a :class:`ManagerChannel`'s server has stopped.

    To a process other than the creator, one stopped by the creator's
    ``close()`` and one that died look the same: the channel is closed, and
    its owner is gone, so both ``except`` clauses catch it.
    """


@runtime_checkable
class Channel(Protocol):
    """What every channel in this module guarantees.

    ``put(msg)`` appends a bytes-like ``msg`` of at most ``max_size`` bytes;
    it waits up to ``timeout`` seconds (``None``: as long as it takes) for
    room among the ``capacity`` messages the channel holds, then raises
    ``queue.Full``. A message that is not bytes-like raises ``TypeError``,
    a longer one ``ValueError``, before anything is written. ``get()``
    removes and returns the oldest message as ``bytes``, waiting up to
    ``timeout`` seconds for one before raising ``queue.Empty``. Each message
    is received by exactly one getter, and the messages of one producer reach
    each getter in the order they were put.

    ``put_many(msgs)`` is all or nothing: it waits until there is room for
    every message (more than ``capacity`` raises ``ValueError``) and puts
    them in order, with no other message between them. ``get_many(n)``
    waits like ``get`` for the first message and returns up to ``n`` without
    waiting again.

    ``capacity``, ``max_size`` and ``n`` are ints (numpy's too) from 1 to
    2**31 - 1; anything else raises ``ValueError``. A timeout is ``None`` or
    seconds: ``bool`` and non-numbers raise ``TypeError``, NaN and negative
    numbers ``ValueError``, and ``inf`` (or more than a day) waits as long
    as it takes. Every wait is taken in slices, so that a thread waiting in
    a call wakes with :class:`ChannelClosed` when another thread closes the
    handle.

    ``close()`` in the creating process closes the channel for every process
    (see the module docstring); elsewhere it detaches this handle. Calls on a
    closed handle raise :class:`ChannelClosed`; ``close()`` may be called
    again.
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

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None: ...


def _sizes(capacity: object, max_size: object) -> tuple[int, int]:
    return size(capacity, "capacity", _LIMIT), size(max_size, "max_size", _LIMIT)


def _payload(msg: object) -> bytes:
    if isinstance(msg, bytes):
        return msg
    if isinstance(msg, (bytearray, memoryview)):
        return bytes(msg)
    raise TypeError(f"a message must be bytes-like, not {type(msg).__name__}")


def _too_big(length: int, max_size: int) -> ValueError:
    return ValueError(f"a message of {length} bytes exceeds max_size={max_size}; nothing was put")


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


# The hot paths check a timeout inline and call seconds() only for what is
# not already a float it would return unchanged (a float from 0 to
# LONGEST_WAIT), so that put(msg, 60.0) costs no extra call. Each then takes
# the first slice of its wait in one C call (at most SLICE, so that it can
# look at its handle between slices), and only a longer wait goes on in
# Python, in the slow path.


def _sliced(
    call: Callable[[float], Any], timeout: float | None, handle: Closable, error: Exception
) -> Any:
    """``call(wait)`` until it returns, after a first slice found nothing.

    ``call`` raises ``queue.Empty`` or ``queue.Full`` when ``wait`` seconds
    pass; ``error`` is raised once ``timeout`` (counted from before the first
    slice) has, and the closed error once another thread closes ``handle``.
    """
    deadline = Deadline(None if timeout is None else max(0.0, timeout - SLICE))
    while True:
        handle._check_peers()
        if deadline.expired:
            raise error
        try:
            return call(deadline.next_slice())
        except (queue.Empty, queue.Full):
            pass


class _Handle(Closable):
    """The parts every way shares: sizes, the closed error."""

    _closed_error = ChannelClosed
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

    # _lifeline (Closable's): set by the ctypes way; the Queue way's owner
    # and the Manager way's server end with their creator.

    #: What holds the messages of a Queue or Manager way: it stops with the
    #: creator's close(), and the messages with it.
    _peer = "server"

    def _is_closed(self) -> bool:
        raise NotImplementedError

    def _closed_by_creator(self, empty: bool = False) -> ChannelClosed:
        text = f"the {type(self).__name__} was closed by its creator"
        return ChannelClosed(text + " and is empty" if empty else text)

    def _gone(self) -> _ServerGone:
        return _ServerGone(
            f"the {type(self).__name__}'s {self._peer} has stopped "
            "(closed by its creator, or died); messages still in it are lost"
        )


# CtypesChannel's segment: three 64-byte lines, so that producers and
# consumers do not write the same cache line, then the slots. A slot is the
# message length (8 bytes) and the message, padded to 64 bytes. The segment
# is read and written as 8-byte words (a "Q" view), 4-byte words (an "I"
# view, for the sequence and flag words a sleeper waits on) and bytes.
_CLOSED = 0  # word index, line 0
# Line 1, written by producers: the head (messages ever put), the tail they
# last saw under the consumers' lock; the sequence consumers sleep on, and
# the flag that a consumer raises to say that it sleeps on it (which
# producers take down).
_HEAD, _SEEN_TAIL = 8, 9  # word indices
_PUT_SEQ, _GET_SLEEPS = 20, 21  # 4-byte word indices (bytes 80 and 84)
# Line 2, written by consumers: the same, the other way round.
_TAIL, _SEEN_HEAD = 16, 17
_GET_SEQ, _PUT_SLEEPS = 36, 37  # bytes 144 and 148
_SLOTS = 192  # byte offset of slot 0
#: Machines whose stores become visible in program order and whose loads are
#: not reordered with later loads or stores (x86 "TSO"): there a side may read
#: the other's count directly, since a count is stored after its slot's bytes,
#: and a caller raises its flag (says that it sleeps) under its own lock (see
#: CtypesChannel._send_in_order). Elsewhere (AArch64...) it reads the count the
#: other side's lock published, and raises its flag under that lock.
_IN_ORDER = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
_LENGTH = 8
_LINE = 64
_WRAP = 0xFFFFFFFF


class CtypesChannel(_Handle):
    """A ring of ``capacity`` slots of ``max_size`` bytes in shared memory.

    The segment holds the ring and its two counts: the *head* (messages ever
    put) and the *tail* (messages ever got). A put copies the message into
    the slot at the head and moves the head on, under the producers' lock;
    a get does the reverse under the consumers' lock. Each lock is a
    :class:`~shmref.holder.Holder`: a process killed inside a put or a get
    is taken over by the next caller, and since a count moves in one store
    after its slot is whole, nothing is torn and no slot is lost (a message
    a killed getter had taken is gone with it). A message is copied twice
    (into the segment, and out into a new ``bytes``) and never pickled;
    ``put_many``/``get_many`` take each lock once per batch. The segment
    takes ``capacity * (max_size + 8)`` bytes, rounded up to 64 bytes a
    slot, reserved when the channel is made (a ``/dev/shm`` without that
    room raises ``OSError`` then).

    A caller that finds no room (no message) sleeps on a futex
    (:mod:`shmref.wakeup`) until the other side moves its count, for at
    most a slice of its timeout at a time, and says so first (a flag word):
    the other side makes the wake-up system call only when someone said it
    sleeps. On x86 (:data:`_IN_ORDER`) a side reads the other's count
    directly, and a caller raises its flag under its own side's lock
    (:meth:`_send_in_order`): no caller ever waits for the other side's lock,
    which may be held through a large copy. Elsewhere a side reads the
    other's count under the other's lock, which also makes the slot's bytes
    visible with the count, and keeps what it read in the segment: a put
    needs the consumers' lock only when the ring looks full, a get needs
    the producers' lock only when the messages it knows of are all taken;
    a caller raises its flag under that lock.

    ``close()`` in the creating process marks the channel closed in the
    segment under the producers' lock, so every put either completed before
    it or raises :class:`ChannelClosed`; it wakes every sleeper, and unlinks
    the segment (exactly once: no other process ever unlinks it). Getters
    receive every message whose ``put`` returned before the close, then
    :class:`ChannelClosed`. ``timeout`` is the longest wait for the
    producers' or the consumers' lock, in every call and in ``close()``;
    a lock whose holder died is taken over after about a second.
    If the creator dies without ``close()``, a call waiting in another
    process (``timeout=None`` included) raises :class:`ChannelClosed`
    within a slice of its wait.

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
        capacity, max_size = _sizes(capacity, max_size)
        self._capacity, self._max_size = capacity, max_size
        self._timeout = seconds(timeout)
        self._stride = -(-(_LENGTH + max_size) // _LINE) * _LINE
        ctx = context(ctx)
        segment = create(_SLOTS + capacity * self._stride)
        try:
            self._put_holder: Any = Holder(ctx)
            self._get_holder: Any = Holder(ctx)
        except BaseException:
            release(segment, [], os.getpid())
            raise
        self._segment = segment
        # Chosen once, by the creator: every handle of a channel must follow
        # the same way of saying that it sleeps (see _IN_ORDER).
        self._in_order = _IN_ORDER
        # Where the fast paths read the other side's count.
        self._their_tail = _TAIL if _IN_ORDER else _SEEN_TAIL
        self._their_head = _HEAD if _IN_ORDER else _SEEN_HEAD
        self._map(os.getpid())
        self._creator = os.getpid()
        self._lifeline = lifeline()

    def _map(self, creator: int | None) -> None:
        buf: Any = self._segment.buf
        self._buf = buf
        self._words: Any = buf.cast("Q")
        self._ints: Any = buf.cast("I")
        self._put_seq_at = word_address(buf, _PUT_SEQ * 4)
        self._get_seq_at = word_address(buf, _GET_SEQ * 4)
        views = [self._words, self._ints]
        self._unmap = weakref.finalize(self, release, self._segment, views, creator)

    def __getstate__(self) -> dict[str, Any]:
        self._check_open()
        state = self.__dict__.copy()
        state["_segment"] = self._segment.name
        for mapped in ("_buf", "_words", "_ints", "_unmap", "_put_seq_at", "_get_seq_at"):
            del state[mapped]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._segment = attach(state["_segment"])
        self._map(None)

    @property
    def name(self) -> str:
        """The shared memory segment's name (under ``/dev/shm`` on Linux)."""
        self._check_open()
        return self._segment.name

    def _is_closed(self) -> bool:
        if self._closed:
            return True
        words = self._words
        try:
            return bool(words[_CLOSED])
        except (TypeError, ValueError):  # unmapped by close() in another thread meanwhile
            return True

    def put(self, msg: Message, timeout: float | None = None) -> None:
        if self._closed:
            self._refuse()
        if msg.__class__ is not bytes:
            msg = _payload(msg)
        length = len(msg)
        if length > self._max_size:
            raise _too_big(length, self._max_size)
        if timeout is not None and (
            timeout.__class__ is not float or not 0.0 <= timeout <= LONGEST_WAIT
        ):
            timeout = seconds(timeout)
        # The common case, inlined: room the producers already know of.
        holder = self._put_holder
        lock = holder.lock
        record = holder.record
        sent = 0
        try:
            if not lock.acquire(False):
                holder.wait(self._timeout, "the producers' lock", self)
            record[0] = holder.pid
            if not self._closed:
                words = self._words
                head = words[_HEAD]
                if head - words[self._their_tail] < self._capacity and not words[_CLOSED]:
                    offset = _SLOTS + head % self._capacity * self._stride
                    words[offset >> 3] = length
                    self._buf[offset + _LENGTH : offset + _LENGTH + length] = msg
                    words[_HEAD] = head + 1  # the commit: the slot is whole
                    ints = self._ints
                    ints[_PUT_SEQ] = (ints[_PUT_SEQ] + 1) & _WRAP
                    if not self._in_order and ints[_GET_SLEEPS] and not wake(self._put_seq_at, 1):
                        ints[_GET_SLEEPS] = 0
                    sent = 1
            record[0] = 0
            lock.release()
        except BaseException:
            holder.abandon()
            raise
        if not sent:
            self._send([msg], timeout)
        elif self._in_order:
            # After the release, a locked instruction: see _send_in_order. (Not
            # contextlib.suppress: a context manager costs a microsecond here.)
            try:
                if ints[_GET_SLEEPS] and not wake(self._put_seq_at, 1):
                    self._lower(self._put_holder, _GET_SLEEPS, _PUT_SEQ, self._put_seq_at)
            except (TypeError, ValueError):  # unmapped by close() in another thread: it wakes
                pass

    def put_many(self, msgs: Iterable[Message], timeout: float | None = None) -> None:
        if self._closed:
            self._refuse()
        batch = _batch(msgs, self._capacity, self._max_size)
        timeout = seconds(timeout)
        if batch:
            self._send(batch, timeout)

    def _send(self, batch: Sequence[bytes], timeout: float | None) -> None:
        """Put ``batch``, all of it or none, waiting up to ``timeout`` for room."""
        deadline = Deadline(timeout)
        if self._in_order:
            self._send_in_order(batch, deadline)
            return
        while True:
            seen = self._write(batch)
            if seen is None:
                return
            if deadline.expired:
                raise _full(batch, timeout)
            self._check_peers()
            sleep_on(self._get_seq_at, seen, deadline.next_slice())

    def _send_in_order(self, batch: Sequence[bytes], deadline: Deadline) -> None:
        """:meth:`_send` on x86: raise the flag under this side's lock, look again, sleep.

        A producer that finds no room raises the producers' flag under the
        producers' lock and lets the lock go, a locked instruction, which
        x86 orders with every load and store. It then reads the consumers'
        sequence, then the tail, the closed mark and the flag, and sleeps on
        the sequence if none of them moved. A consumer moves the tail, then
        the sequence, under its lock, lets it go, and only then reads the
        flag. Of these two stores and loads, one side's load sees the
        other's store: the consumer sees the flag and wakes the producer (or
        the kernel, which compares the sequence as it puts the producer to
        sleep, finds it moved), or the producer sees the tail moved and
        looks again. A consumer takes the flag down only as :meth:`_lower`
        says, which the flag read last here accounts for.
        """
        while True:
            expired = deadline.expired
            room, _, tail = self._put_in(batch, None, not expired)
            if room:
                return
            if expired:
                raise _full(batch, deadline.timeout)
            words, ints = self._words, self._ints
            try:
                seen = ints[_GET_SEQ]
                idle = words[_TAIL] == tail and not words[_CLOSED] and ints[_PUT_SLEEPS]
            except (TypeError, ValueError):  # unmapped by close() in another thread
                seen, idle = 0, False
            if idle:
                self._check_peers()
                sleep_on(self._get_seq_at, seen, deadline.next_slice())

    def _put_in(
        self, batch: Sequence[bytes], tail: int | None = None, flag: bool = False
    ) -> tuple[bool, int, int]:
        """Copy ``batch`` in at the head, under the producers' lock, if there is room.

        Elsewhere than x86, ``tail`` is one read under the consumers' lock:
        this side's copy of it (``_SEEN_TAIL``) is moved on to it first. On
        x86, with ``flag``, no room raises the producers' flag. Returns
        whether there was room, and the head and tail it saw.
        """
        holder, words, n = self._put_holder, self._words, len(batch)
        try:
            holder.enter(self._timeout, "the producers' lock", self)
            if self._closed:
                self._refuse()
            if words[_CLOSED]:
                raise self._closed_by_creator()
            if tail is not None and tail > words[_SEEN_TAIL]:
                words[_SEEN_TAIL] = tail
            head, tail = words[_HEAD], words[self._their_tail]
            room = self._capacity - (head - tail) >= n
            ints = self._ints
            if room:
                buf, capacity, stride = self._buf, self._capacity, self._stride
                for i, msg in enumerate(batch):
                    offset = _SLOTS + (head + i) % capacity * stride
                    words[offset >> 3] = len(msg)
                    buf[offset + _LENGTH : offset + _LENGTH + len(msg)] = msg
                words[_HEAD] = head + n  # the commit
                ints[_PUT_SEQ] = (ints[_PUT_SEQ] + 1) & _WRAP
                if not self._in_order and ints[_GET_SLEEPS] and not wake(self._put_seq_at, n):
                    ints[_GET_SLEEPS] = 0
            elif flag:
                ints[_PUT_SLEEPS] = 1
            holder.leave()
        except BaseException:
            holder.abandon()
            raise
        if room and self._in_order:
            try:  # after the release, as in put
                if ints[_GET_SLEEPS] and not wake(self._put_seq_at, n):
                    self._lower(self._put_holder, _GET_SLEEPS, _PUT_SEQ, self._put_seq_at)
            except (TypeError, ValueError):  # unmapped by close() in another thread: it wakes
                pass
        return room, int(head), int(tail)

    def _lower(self, holder: Any, flag: int, seq: int, at: int) -> None:
        """On x86, after a wake found nobody asleep: take the other side's ``flag`` down.

        Under this side's lock, if it is free (else the flag stays up, and a
        later wake for nothing takes it down): the flag goes down, then this
        side's sequence ``seq`` moves, and everyone asleep on it is woken. A
        caller of the other side that raised the flag before it went down
        has read the sequence since: before this move, and the kernel finds
        it changed when it is put to sleep (or this wakes it); or after, and
        then it reads the flag down (x86 keeps the two stores in order), and
        raises it again.
        """
        lock = holder.lock
        try:
            if not lock.acquire(False):
                return
            holder.record[0] = holder.pid
            if not self._closed:
                ints = self._ints
                ints[flag] = 0
                ints[seq] = (ints[seq] + 1) & _WRAP
            holder.leave()
        except BaseException:
            holder.abandon()
            raise
        wake(at, EVERYONE)

    def _write(self, batch: Sequence[bytes]) -> int | None:
        """Elsewhere than x86: copy ``batch`` in if there is room; else the sequence to sleep on.

        Where the tail the producers know of leaves no room, it reads the
        tail under the consumers' lock, not holding the producers' lock (as
        a get does the other way round: no caller holds one of the two
        locks while it waits for the other), and looks again.
        """
        tail: int | None = None
        seen: int | None = None
        while True:
            room, head, _ = self._put_in(batch, tail)
            if room:
                return None
            if seen is not None:
                return seen
            tail, seen = self._consumers_tail(head, len(batch))

    def _consumers_tail(self, head: int, n: int) -> tuple[int, int | None]:
        """The tail and the consumers' sequence, read under their lock.

        If ``n`` messages will not fit behind ``head``, it says a producer
        sleeps (a consumer that moves the tail after this takes the same
        lock, and wakes it) and returns the sequence to sleep on; else
        None: another producer may have moved the head on since ``head``
        was read, and the caller, who has not said that it sleeps, must look
        again before it sleeps.
        """
        holder, words, ints = self._get_holder, self._words, self._ints
        seen = None
        try:
            holder.enter(self._timeout, "the consumers' lock", self)
            if self._closed:
                self._refuse()
            tail = int(words[_TAIL])
            if self._capacity - (head - tail) < n:
                seen = int(ints[_GET_SEQ])
                ints[_PUT_SLEEPS] = 1
            holder.leave()
        except BaseException:
            holder.abandon()
            raise
        return tail, seen

    def get(self, timeout: float | None = None) -> bytes:
        if self._closed:
            self._refuse()
        if timeout is not None and (
            timeout.__class__ is not float or not 0.0 <= timeout <= LONGEST_WAIT
        ):
            timeout = seconds(timeout)
        # The common case, inlined: a message the consumers already know of.
        holder = self._get_holder
        lock = holder.lock
        record = holder.record
        msg = None
        try:
            if not lock.acquire(False):
                holder.wait(self._timeout, "the consumers' lock", self)
            record[0] = holder.pid
            if not self._closed:
                words = self._words
                tail = words[_TAIL]
                if words[self._their_head] != tail:
                    offset = _SLOTS + tail % self._capacity * self._stride
                    start = offset + _LENGTH
                    msg = self._buf[start : start + words[offset >> 3]].tobytes()
                    words[_TAIL] = tail + 1  # the commit
                    ints = self._ints
                    ints[_GET_SEQ] = (ints[_GET_SEQ] + 1) & _WRAP
                    if not self._in_order and ints[_PUT_SLEEPS] and not wake(self._get_seq_at, 1):
                        ints[_PUT_SLEEPS] = 0
            record[0] = 0
            lock.release()
        except BaseException:
            holder.abandon()
            raise
        if msg is not None:
            if self._in_order:
                try:  # after the release, as in put
                    if ints[_PUT_SLEEPS] and not wake(self._get_seq_at, 1):
                        self._lower(self._get_holder, _PUT_SLEEPS, _GET_SEQ, self._get_seq_at)
                except (TypeError, ValueError):  # unmapped by close() in another thread: it wakes
                    pass
            return msg  # type: ignore[no-any-return]
        if self._in_order:
            return self._receive_in_order(1, Deadline(timeout))[0]
        out, seen = self._read(1)
        if out:
            return out[0]
        return self._receive(1, timeout, seen)[0]

    def get_many(self, max_messages: int, timeout: float | None = None) -> list[bytes]:
        if self._closed:
            self._refuse()
        max_messages = size(max_messages, "max_messages", _LIMIT)
        timeout = seconds(timeout)
        if self._in_order:
            return self._receive_in_order(max_messages, Deadline(timeout))
        out, seen = self._read(max_messages)
        return out or self._receive(max_messages, timeout, seen)

    def _receive_in_order(self, most: int, deadline: Deadline) -> list[bytes]:
        """Up to ``most`` messages, on x86: as :meth:`_send_in_order` the other way round."""
        while True:
            expired = deadline.expired
            out, tail = self._take(most, None, not expired)
            if out:
                return out
            if expired:
                raise queue.Empty(f"no message within {deadline.timeout} s")
            words, ints = self._words, self._ints
            try:
                seen = ints[_PUT_SEQ]
                idle = words[_HEAD] == tail and not words[_CLOSED] and ints[_GET_SLEEPS]
            except (TypeError, ValueError):  # unmapped by close() in another thread
                seen, idle = 0, False
            if idle:
                self._check_peers()
                sleep_on(self._put_seq_at, seen, deadline.next_slice())

    def _receive(self, most: int, timeout: float | None, seen: int) -> list[bytes]:
        """Elsewhere than x86: up to ``most`` messages in ``timeout``, after a look found none."""
        deadline = Deadline(timeout)
        while True:
            if deadline.expired:
                raise queue.Empty(f"no message within {timeout} s")
            self._check_peers()
            sleep_on(self._put_seq_at, seen, deadline.next_slice())
            out, seen = self._read(most)
            if out:
                return out

    def _read(self, most: int) -> tuple[list[bytes], int]:
        """Elsewhere than x86: up to ``most`` messages; if none, the sequence to sleep on.

        Where the messages the consumers know of are all taken, it reads the
        head under the producers' lock, not holding the consumers' lock: a
        producer copying a large message holds its lock a while, and the
        other consumers may have messages to copy out meanwhile.
        """
        head: int | None = None
        while True:
            out, tail = self._take(most, head)
            if out:
                return out, 0
            head, seen, closed = self._producers_head(tail)
            if head == tail:  # none past the tail: a put wakes this caller
                if closed:
                    raise self._closed_by_creator(empty=True)
                return out, seen
            # Some came: take them (unless another consumer does first).

    def _take(
        self, most: int, head: int | None = None, flag: bool = False
    ) -> tuple[list[bytes], int]:
        """Up to ``most`` messages copied out, under the consumers' lock, and the tail.

        Elsewhere than x86, ``head`` is one a producer published, read under
        its lock: this side's copy of it (``_SEEN_HEAD``) is moved on to it
        first. On x86, a channel closed and empty raises, and with ``flag``,
        no message raises the consumers' flag.
        """
        holder = self._get_holder
        lock = holder.lock
        record = holder.record
        out: list[bytes] = []
        try:
            if not lock.acquire(False):
                holder.wait(self._timeout, "the consumers' lock", self)
            record[0] = holder.pid
            if self._closed:
                self._refuse()
            words, ints = self._words, self._ints
            if head is not None and head > words[_SEEN_HEAD]:
                words[_SEEN_HEAD] = head
            tail = words[_TAIL]
            closed = words[_CLOSED]  # before the head: if set, no put moves it after
            known = words[self._their_head]
            if known != tail:
                buf, capacity, stride = self._buf, self._capacity, self._stride
                for _ in range(min(most, known - tail)):
                    offset = _SLOTS + tail % capacity * stride
                    start = offset + _LENGTH
                    out.append(buf[start : start + words[offset >> 3]].tobytes())
                    tail += 1
                words[_TAIL] = tail  # the commit
                ints[_GET_SEQ] = (ints[_GET_SEQ] + 1) & _WRAP
                n = len(out)
                if not self._in_order and ints[_PUT_SLEEPS] and not wake(self._get_seq_at, n):
                    ints[_PUT_SLEEPS] = 0
            elif self._in_order:
                if closed:
                    raise self._closed_by_creator(empty=True)
                if flag:
                    ints[_GET_SLEEPS] = 1
            record[0] = 0
            lock.release()
        except BaseException:
            holder.abandon()
            raise
        if out and self._in_order:
            try:  # after the release, as in put
                if ints[_PUT_SLEEPS] and not wake(self._get_seq_at, len(out)):
                    self._lower(self._get_holder, _PUT_SLEEPS, _GET_SEQ, self._get_seq_at)
            except (TypeError, ValueError):  # unmapped by close() in another thread: it wakes
                pass
        return out, int(tail)

    def _producers_head(self, tail: int) -> tuple[int, int, bool]:
        """The head, the producers' sequence and the closed mark, read under their lock.

        If there is no message past ``tail``, it says a consumer sleeps: a
        producer that moves the head after this wakes it.
        """
        holder, words, ints = self._put_holder, self._words, self._ints
        try:
            holder.enter(self._timeout, "the producers' lock", self)
            head, seen, closed = int(words[_HEAD]), int(ints[_PUT_SEQ]), bool(words[_CLOSED])
            if head == tail and not closed:
                ints[_GET_SLEEPS] = 1
            holder.leave()
        except BaseException:
            holder.abandon()
            raise
        return head, seen, closed

    def _release(self) -> None:
        put_holder, get_holder, timeout = self._put_holder, self._get_holder, self._timeout
        creator = os.getpid() == self._creator
        ints = self._ints
        if creator:
            locked = _enter(put_holder, timeout)
            # Set even without the lock: no put can follow.
            self._words[_CLOSED] = 1
            ints[_PUT_SEQ] = (ints[_PUT_SEQ] + 1) & _WRAP
            if locked:
                put_holder.leave()
            wake(self._put_seq_at, EVERYONE)
        # Another thread of this process may be copying: unmap after it. (A
        # thread asleep on a futex word is woken below, and finds the handle
        # closed.)
        locked_get = _enter(get_holder, timeout)
        locked_put = _enter(put_holder, timeout)
        if creator:
            # Under the consumers' lock, as every change of their sequence:
            # two changes at once could leave it where a producer read it
            # before the closed mark, and the producer would sleep on.
            ints[_GET_SEQ] = (ints[_GET_SEQ] + 1) & _WRAP
        # Wake every sleeper, also for a call of another thread of this
        # process that let its lock go and found the segment unmapped before
        # its own wake (x86: see put).
        wake(self._put_seq_at, EVERYONE)
        wake(self._get_seq_at, EVERYONE)
        self._buf = self._words = self._ints = None
        try:
            if locked_get and locked_put:
                self._unmap()
            else:  # the mapping goes with the handle; the name goes now
                self._unmap.detach()
                if creator:
                    self._segment.unlink()
        finally:
            if locked_put:
                put_holder.leave()
            if locked_get:
                get_holder.leave()


def _full(batch: Sequence[bytes], timeout: float | None) -> queue.Full:
    if len(batch) == 1:
        return queue.Full(f"no free slot within {timeout} s")
    return queue.Full(f"no {len(batch)} free slots within {timeout} s")


def _enter(holder: Holder, timeout: float | None) -> bool:
    """For close(): take ``holder``'s lock within ``timeout``; False if it cannot."""
    try:
        holder.enter(timeout, "a channel lock")
    except TimeoutError:
        return False
    except BaseException:
        holder.abandon()
        raise
    return True


class _Messages:
    """The messages of a :class:`QueueChannel`, living in its owner process.

    The owner runs one request at a time; a put that finds no room, or a
    get that finds no message, raises :class:`~shmref.owner.Later`, and the
    owner asks again, oldest first, after every change, and once more with
    a wait of 0 when the caller's timeout is over.
    """

    def __init__(self, capacity: int) -> None:
        self._messages: collections.deque[bytes] = collections.deque()
        self._capacity = capacity

    def put(self, msg: bytes, wait: float | None) -> None:
        if len(self._messages) < self._capacity:
            self._messages.append(msg)
        elif wait == 0:
            raise queue.Full
        else:
            raise Later

    def put_many(self, msgs: list[bytes], wait: float | None) -> None:
        if self._capacity - len(self._messages) >= len(msgs):
            self._messages.extend(msgs)
        elif wait == 0:
            raise queue.Full
        else:
            raise Later

    def get_many(self, max_messages: int, wait: float | None) -> list[bytes]:
        messages = self._messages
        if messages:
            return [messages.popleft() for _ in range(min(max_messages, len(messages)))]
        if wait == 0:
            raise queue.Empty
        raise Later

    def get(self, wait: float | None) -> bytes:
        messages = self._messages
        if messages:
            return messages.popleft()
        if wait == 0:
            raise queue.Empty
        raise Later


class QueueChannel(_Handle):
    """A queue living in an owner process; every call is one request to it.

    Each client process has a connection of its own to the owner (see
    :mod:`shmref.owner`): a producer or consumer killed at any moment, even
    halfway through writing a message, breaks nobody else's calls, and what
    it had not sent whole is dropped. ``put`` is answered once the message
    is in the channel; a ``put`` that finds no room, or a ``get`` that finds
    no message, is parked by the owner and answered as soon as it can be,
    oldest first, or with ``queue.Full``/``queue.Empty`` when its timeout is
    over. ``put_many`` and ``get_many`` are one request each. The message is
    pickled to the owner and from it. A message a killed getter had been
    sent is lost with it.

    ``close()`` in the creating process stops the owner. Waiting getters and
    putters, in any process, wake with :class:`ChannelClosed` (their
    connection ends); so does every later call. An owner that died raises
    the same error, which is also an :class:`~shmref.lifecycle.OwnerGone`.
    Part of the contract it cannot keep: messages still in the channel are
    lost with the owner, so getters do not drain a closed channel. If the
    creator dies without ``close()``, the owner exits within about a second.

    >>> from shmref.channel import QueueChannel
    >>> with QueueChannel(capacity=4, max_size=16) as channel:
    ...     channel.put(b"hello")
    ...     channel.get(timeout=10)
    b'hello'
    """

    _peer = "owner process"

    def __init__(
        self,
        capacity: int = DEFAULT_CAPACITY,
        max_size: int = DEFAULT_MAX_SIZE,
        *,
        ctx: BaseContext | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        capacity, max_size = _sizes(capacity, max_size)
        self._capacity, self._max_size = capacity, max_size
        self._owner = Owner(
            context(ctx),
            _Messages,
            (capacity,),
            what="QueueChannel",
            timeout=seconds(timeout),
            closed_error=ChannelClosed,
        )

    def __getstate__(self) -> dict[str, Any]:
        self._check_open()
        return {"_capacity": self._capacity, "_max_size": self._max_size, "_owner": self._owner}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def _ask(self, method: str, args: tuple[Any, ...], timeout: float | None) -> Any:
        """The owner's answer to ``method(*args, timeout)``, which it parks until it can."""
        try:
            return self._owner.call_waiting(method, *args, timeout)
        except queue.Full:
            raise queue.Full(f"no room within {timeout} s") from None
        except queue.Empty:
            raise queue.Empty(f"no message within {timeout} s") from None
        except OwnerGone:
            raise self._gone() from None

    def put(self, msg: Message, timeout: float | None = None) -> None:
        if self._closed:
            self._refuse()
        if msg.__class__ is not bytes:
            msg = _payload(msg)
        if len(msg) > self._max_size:
            raise _too_big(len(msg), self._max_size)
        if timeout is not None and (
            timeout.__class__ is not float or not 0.0 <= timeout <= LONGEST_WAIT
        ):
            timeout = seconds(timeout)
        self._ask("put", (msg,), timeout)

    def put_many(self, msgs: Iterable[Message], timeout: float | None = None) -> None:
        if self._closed:
            self._refuse()
        batch = _batch(msgs, self._capacity, self._max_size)
        timeout = seconds(timeout)
        if batch:
            self._ask("put_many", (batch,), timeout)

    def get(self, timeout: float | None = None) -> bytes:
        if self._closed:
            self._refuse()
        if timeout is not None and (
            timeout.__class__ is not float or not 0.0 <= timeout <= LONGEST_WAIT
        ):
            timeout = seconds(timeout)
        return self._ask("get", (), timeout)  # type: ignore[no-any-return]

    def get_many(self, max_messages: int, timeout: float | None = None) -> list[bytes]:
        if self._closed:
            self._refuse()
        max_messages = size(max_messages, "max_messages", _LIMIT)
        timeout = seconds(timeout)
        return self._ask("get_many", (max_messages,), timeout)  # type: ignore[no-any-return]

    def _release(self) -> None:
        self._owner.close()


class _ChannelState(Served):
    """The messages of a :class:`ManagerChannel`, living in its server.

    The server runs each call in a thread of its own; one condition guards
    the deque, and every change wakes all waiters, so a batch waiting for
    room cannot swallow the wake-up a single put needed. A wait lasts at
    most ``wait`` seconds, one slice of the caller's timeout.
    """

    def __init__(self, capacity: int) -> None:
        self._messages: collections.deque[bytes] = collections.deque()
        self._capacity = capacity
        self._changed = threading.Condition()

    # A put answers True, never None: a server that stops under a waiting
    # put sends a stray None reply, which must not read as "put".

    def put(self, msg: bytes, wait: float) -> bool:
        return self.put_many([msg], wait)

    def put_many(self, msgs: list[bytes], wait: float) -> bool:
        with self._changed:
            room = self._changed.wait_for(
                lambda: self._capacity - len(self._messages) >= len(msgs), wait
            )
            if not room:
                raise queue.Full(f"no room for {len(msgs)} messages within {wait} s")
            self._messages.extend(msgs)
            self._changed.notify_all()
            return True

    def get(self, wait: float) -> bytes:
        return self.get_many(1, wait)[0]

    def get_many(self, max_messages: int, wait: float) -> list[bytes]:
        with self._changed:
            if not self._changed.wait_for(lambda: self._messages, wait):
                raise queue.Empty(f"no message within {wait} s")
            messages = self._messages
            out = [messages.popleft() for _ in range(min(max_messages, len(messages)))]
            self._changed.notify_all()
            return out


class ChannelManager(BaseManager):
    """A manager whose ``Channel(capacity)`` is a channel living in its server."""


register_state(ChannelManager, "Channel", _ChannelState)


class ManagerChannel(_Handle, ManagerHandle):
    """A queue in a manager's server process; every call is one round trip.

    This is what ``manager.Queue()`` gives (a proxy to a queue in the
    server), plus ``put_many`` and ``get_many`` that run in the server, so
    that a batch costs one round trip. The message is pickled to the server
    and from it. One server per channel; with ``address=(host, port)`` it
    serves over TCP, and ``connect()`` reaches it from other hosts.

    A call waits in the server for a slice of its timeout at most, and asks
    again until its timeout ends, so that a call waiting in a process whose
    handle another thread closes wakes with :class:`ChannelClosed`; a call
    that waits long makes a round trip per slice. ``timeout`` bounds the
    wait for each reply beyond its slice (a server stopped or hung:
    ``TimeoutError``); nothing else here waits (the server's lock is held
    for one append or pop).

    ``close()`` in the creating process stops the server. Waiting getters
    and putters, in any process, wake with :class:`ChannelClosed` (the
    connection to the server ends); so does every later call. A server that
    died raises the same error, which is also an
    :class:`~shmref.lifecycle.OwnerGone`. Part of the contract it cannot
    keep: messages still in the channel are lost, because they live in the
    server, so getters do not drain a closed channel.

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
        timeout: float | None = DEFAULT_TIMEOUT,
        address: tuple[str, int] | None = None,
        authkey: bytes | None = None,
    ) -> None:
        capacity, max_size = _sizes(capacity, max_size)
        self._capacity, self._max_size = capacity, max_size
        self._server = self._serve(
            ChannelManager, "Channel", (capacity,), None, ctx, address, authkey, seconds(timeout)
        )
        self._publish()

    def __getstate__(self) -> dict[str, Any]:
        self._check_open()
        return {"_capacity": self._capacity, "_max_size": self._max_size, "_server": self._server}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def _wait(
        self, method: str, args: tuple[Any, ...], timeout: float | None, error: Exception
    ) -> Any:
        """The rest of a call's wait in the server, after a first slice."""
        # No answer is None (see Server.answer and _ChannelState.put).
        answer = self._server.answer
        try:
            return _sliced(lambda wait: answer(method, *args, wait), timeout, self, error)
        except OwnerGone:
            raise self._gone() from None

    def put(self, msg: Message, timeout: float | None = None) -> None:
        if self._closed:
            self._refuse()
        if msg.__class__ is not bytes:
            msg = _payload(msg)
        if len(msg) > self._max_size:
            raise _too_big(len(msg), self._max_size)
        if timeout is not None and (
            timeout.__class__ is not float or not 0.0 <= timeout <= LONGEST_WAIT
        ):
            timeout = seconds(timeout)
        try:
            self._server.answer(
                "put", msg, SLICE if timeout is None or timeout > SLICE else timeout
            )
        except queue.Full:
            self._wait("put", (msg,), timeout, queue.Full(f"no room within {timeout} s"))
        except OwnerGone:
            raise self._gone() from None

    def put_many(self, msgs: Iterable[Message], timeout: float | None = None) -> None:
        if self._closed:
            self._refuse()
        batch = _batch(msgs, self._capacity, self._max_size)
        timeout = seconds(timeout)
        if not batch:
            return
        full = queue.Full(f"no room for {len(batch)} messages within {timeout} s")
        first = SLICE if timeout is None or timeout > SLICE else timeout
        try:
            self._server.answer("put_many", batch, first)
        except queue.Full:
            self._wait("put_many", (batch,), timeout, full)
        except OwnerGone:
            raise self._gone() from None

    def get(self, timeout: float | None = None) -> bytes:
        if self._closed:
            self._refuse()
        if timeout is not None and (
            timeout.__class__ is not float or not 0.0 <= timeout <= LONGEST_WAIT
        ):
            timeout = seconds(timeout)
        try:
            return self._server.answer(  # type: ignore[no-any-return]
                "get", SLICE if timeout is None or timeout > SLICE else timeout
            )
        except queue.Empty:
            empty = queue.Empty(f"no message within {timeout} s")
            return self._wait("get", (), timeout, empty)  # type: ignore[no-any-return]
        except OwnerGone:
            raise self._gone() from None

    def get_many(self, max_messages: int, timeout: float | None = None) -> list[bytes]:
        if self._closed:
            self._refuse()
        max_messages = size(max_messages, "max_messages", _LIMIT)
        timeout = seconds(timeout)
        empty = queue.Empty(f"no message within {timeout} s")
        first = SLICE if timeout is None or timeout > SLICE else timeout
        try:
            return self._server.answer("get_many", max_messages, first)  # type: ignore[no-any-return]
        except queue.Empty:
            return self._wait("get_many", (max_messages,), timeout, empty)  # type: ignore[no-any-return]
        except OwnerGone:
            raise self._gone() from None

    def _release(self) -> None:
        self._server.close()


# RedisChannel's keys: "messages", a list (put at the right, got from the
# left); "room", tokens that wake putters waiting for room (a getter pushes
# one per message it took, while "putters" says that one waits); "putters",
# set by a put that found no room, for a few seconds (a putter killed while
# it waits leaves no flag for long). A getter that finds no message waits on
# the messages list itself (BLMPOP); a putter that finds no room, on "room".

#: What a getter's script runs after it took `taken` messages: a token per
#: message for the putters, if one waits, and never more than ARGV[2]
#: (capacity) tokens in all.
_WAKE_PUTTERS = """
if redis.call('EXISTS', KEYS[4]) == 1 then
  for i = 1, math.min(taken, tonumber(ARGV[2])) do
    redis.call('RPUSH', KEYS[3], 1)
  end
  redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[2]) - 1)
end
"""

# ARGV[1] the capacity, then the messages: all put, or none (0) if they do
# not fit. A put that finds the list full drops the tokens left in "room":
# each was for room that another put has taken since.
_REDIS_PUT = Script(
    """
local free = tonumber(ARGV[1]) - redis.call('LLEN', KEYS[2])
if free < #ARGV - 1 then
  if free <= 0 then redis.call('DEL', KEYS[3]) end
  redis.call('SET', KEYS[4], 1, 'PX', 5000)
  return 0
end
for i = 2, #ARGV, 1000 do
  redis.call('RPUSH', KEYS[2], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
return 1
"""
)
# Up to ARGV[1] messages, oldest first; none: an empty list.
_REDIS_GET = Script(
    """
local got = redis.call('LPOP', KEYS[2], ARGV[1])
if not got then return {} end
local taken = #got
"""
    + _WAKE_PUTTERS
    + "return got\n"
)
# After a BLMPOP took ARGV[1] messages (no script can wait): the same wake.
# Unchecked, but it does nothing once the creator has closed: a token pushed
# then would be a key nobody deletes.
_REDIS_TAKEN = Script(
    "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end\n"
    "local taken = tonumber(ARGV[1])\n" + _WAKE_PUTTERS + "return 1\n",
    checked=False,
)
_REDIS_PARTS = ("messages", "room", "putters")

#: The longest wait of a RedisChannel call on the server at a time: between
#: two, it looks whether its creator has closed the channel (issue 10: a
#: waiter wakes within about a second).
_REDIS_SLICE = 0.5


class RedisChannel(_Handle, RedisHandle):
    """A list on a Redis server; a call that finds its message or room is one round trip.

    ``put`` and ``put_many`` are one script each: they append at the list's
    end if the messages fit in ``capacity`` (checked there, so the bound
    holds for every putter on every host), or append nothing. ``get`` and
    ``get_many`` take from its head in one script. So each message is
    received by exactly one getter, and one producer's messages come out in
    the order its puts returned. The messages are stored as they are: no
    pickle.

    A ``get`` that finds no message waits on the server (``BLMPOP``, which
    hands a message to the longest-waiting getter the moment one is put),
    for at most half a second at a time, then looks again whether the
    channel is still open; a ``put`` that finds no room waits likewise, for
    a token that each getter pushes when a putter waits. So a call waiting
    with ``timeout=None`` wakes with :class:`ChannelClosed` within about
    half a second once the creator has closed the channel, and at once when
    another thread closes the handle or the server goes (then the error is
    also an :class:`~shmref.lifecycle.OwnerGone`). A wake-up a putter misses
    costs it at most that half second, never a message. ``timeout`` is the
    longest wait for the server's answer to one request, beyond that.

    Other processes attach with :meth:`connect` (``url`` and ``name``) or get
    the channel as a ``Process`` argument. Needs a running Redis server
    (``url``, default a local one) and the ``redis`` package
    (``pip install shmref[redis]``).

    Part of the contract it cannot keep: the creator's ``close()`` deletes
    the keys, so messages still in the channel are lost (getters do not
    drain it); a creator killed without ``close()`` leaves its keys on the
    server, and the channel open, so a waiter there waits on. A message that
    a getter killed (or interrupted) during its request had taken is lost
    with it.
    """

    _peer = "Redis server"

    def __init__(
        self,
        capacity: int = DEFAULT_CAPACITY,
        max_size: int = DEFAULT_MAX_SIZE,
        *,
        url: str = DEFAULT_URL,
        name: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        capacity, max_size = _sizes(capacity, max_size)
        sizes = {"capacity": capacity, "max_size": max_size}
        self._create(url, name, timeout, description=sizes)

    def _adopt(self, description: dict[str, Any]) -> None:
        super()._adopt(description)
        self._capacity = int(description["capacity"])
        self._max_size = int(description["max_size"])
        self._messages = self._keyspace.key("messages")
        self._room = self._keyspace.key("room")
        closed = self._closed_by_creator()
        self._refusals = {"GONE": lambda _: _ServerGone(f"{closed} (its keys are gone)")}

    def _is_closed(self) -> bool:
        return self._closed

    def _run(self, script: Script, *args: bytes | int) -> Any:
        if self._closed:
            self._refuse()
        try:
            return self._keyspace.run(script, _REDIS_PARTS, args, self._refusals)
        except ChannelClosed:
            raise
        except OwnerGone:  # the server is gone
            raise self._gone() from None

    @staticmethod
    def _slice(deadline: Deadline) -> str | None:
        """The next wait on the server, in seconds as Redis reads them; None if time is up."""
        if deadline.end is None:
            return f"{_REDIS_SLICE:.3f}"
        wait = min(_REDIS_SLICE, deadline.end - time.monotonic())
        return f"{wait:.3f}" if wait >= 0.001 else None  # Redis reads 0 as "for ever"

    def _blocking(self, wait: str, *command: bytes | str | int) -> Any:
        try:
            return self._keyspace.blocking(float(wait), *command)
        except ChannelClosed:
            raise
        except OwnerGone:  # the server is gone
            raise self._gone() from None

    def put(self, msg: Message, timeout: float | None = None) -> None:
        if self._closed:
            self._refuse()
        if msg.__class__ is not bytes:
            msg = _payload(msg)
        if len(msg) > self._max_size:
            raise _too_big(len(msg), self._max_size)
        self._send([msg], seconds(timeout))

    def put_many(self, msgs: Iterable[Message], timeout: float | None = None) -> None:
        if self._closed:
            self._refuse()
        batch = _batch(msgs, self._capacity, self._max_size)
        timeout = seconds(timeout)
        if batch:
            self._send(batch, timeout)

    def _send(self, batch: list[bytes], timeout: float | None) -> None:
        deadline = Deadline(timeout)
        while not self._run(_REDIS_PUT, self._capacity, *batch):
            wait = None if deadline.expired else self._slice(deadline)
            if wait is None:
                raise _full(batch, timeout)
            self._blocking(wait, "BLPOP", self._room, wait)

    def get(self, timeout: float | None = None) -> bytes:
        if self._closed:
            self._refuse()
        return self._receive(1, seconds(timeout))[0]

    def get_many(self, max_messages: int, timeout: float | None = None) -> list[bytes]:
        if self._closed:
            self._refuse()
        max_messages = size(max_messages, "max_messages", _LIMIT)
        return self._receive(max_messages, seconds(timeout))

    def _receive(self, most: int, timeout: float | None) -> list[bytes]:
        deadline = Deadline(timeout)
        while True:
            got: list[bytes] = self._run(_REDIS_GET, most, self._capacity)
            if got:
                return got
            wait = None if deadline.expired else self._slice(deadline)
            if wait is None:
                raise queue.Empty(f"no message within {timeout} s")
            popped = self._blocking(wait, "BLMPOP", wait, 1, self._messages, "LEFT", "COUNT", most)
            if popped is not None:
                got = popped[1]
                self._taken(len(got))
                return got

    def _taken(self, count: int) -> None:
        """Wake putters for ``count`` messages a ``BLMPOP`` took; a lost wake costs a slice."""
        # Whatever happens to this request, the messages are this caller's.
        with contextlib.suppress(ChannelClosed, OwnerGone, TimeoutError):
            self._keyspace.run(_REDIS_TAKEN, _REDIS_PARTS, (count, self._capacity))


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
