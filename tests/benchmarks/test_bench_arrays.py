"""Benchmarks of shmref.arrays: bulk transfer, per-element access, the article's claims.

``nox -s bench -- arrays`` measures and stores docs/bench/arrays.json; the
test suite runs each benchmark once, small (see timing.py). The report that
turns the stored run into tables, a plot and verdicts is
docs/_ext/report_arrays.py; it reads the ``extra_info`` keys set here (way,
bytes, ops, ...). Every transfer moves numpy float64 data, as the article's
examples do.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import pickle
import statistics
import time
from collections.abc import Callable
from typing import Any

import pytest

from shmref.arrays import SEGMENT_BYTES, CtypesArray, ManagerArray, QueueArray

from .peers import SharedArrayTransfer, SharedMemoryTransfer, describe
from .startup import time_startup
from .timing import BARRIER_TIMEOUT, size

np = pytest.importorskip("numpy", reason="the bulk benchmarks move numpy arrays")

CTX = multiprocessing.get_context()
KiB, MiB = 1024, 1024 * 1024
#: Bytes moved per round trip: 1 KiB to 64 MiB, by factors of 4. Every way
#: is measured at every size (the slowest, QueueArray at 64 MiB, takes under
#: a second a round), and the whole file runs in about a minute.
SIZES = [KiB * 4**k for k in range(9)]


def rounds_for(nbytes: int) -> int:
    """Rounds per size: many for small transfers, few for large ones."""
    if nbytes <= 64 * KiB:
        return 100
    if nbytes <= MiB:
        return 30
    if nbytes <= 16 * MiB:
        return 10
    return 7


def time_rounds(benchmark: Any, work: Callable[..., Any], nbytes: int, *args: Any) -> None:
    """Time ``work(*args)``, a transfer of ``nbytes``: rounds_for() rounds, one when quick."""
    benchmark.pedantic(
        work,
        args=args,
        rounds=size(benchmark, rounds_for(nbytes), 1),
        warmup_rounds=size(benchmark, 1, 0),
    )


def label(nbytes: int) -> str:
    return f"{nbytes // MiB}MiB" if nbytes >= MiB else f"{nbytes // KiB}KiB"


# ---------------------------------------------------------------- round trips
#
# The producer (this process) writes n float64 into the transfer and tells
# the consumer, which takes all n out and answers with the last item it got.
# A round is one such trip; the consumer starts before the first round.


def consume_array(shared: Any, conn: Any, into: bool) -> None:
    """Consumer: on each go, copy the whole array out; answer with its last item."""
    out = np.empty(len(shared)) if into else None
    while conn.poll(BARRIER_TIMEOUT) and conn.recv():
        # A Python float: a numpy scalar costs tens of µs more to pickle.
        if out is not None:
            shared.readinto(out)
            conn.send(float(out[-1]))
        else:
            conn.send(shared.read()[-1])
    shared.close()


def consume_queue(q: Any, conn: Any) -> None:
    """Consumer of the article's pattern: ``q.get()`` a whole numpy array."""
    while conn.poll(BARRIER_TIMEOUT) and conn.recv():
        conn.send(float(q.get(timeout=BARRIER_TIMEOUT)[-1]))


def _answer(conn: Any) -> Any:
    if not conn.poll(BARRIER_TIMEOUT):
        raise TimeoutError("the consumer did not answer")
    return conn.recv()


TRANSFERS: dict[str, Callable[[int], Any]] = {
    "ctypes": lambda n: CtypesArray("d", n, ctx=CTX),
    "ctypes-read": lambda n: CtypesArray("d", n, ctx=CTX),
    "queue": lambda n: QueueArray("d", n, ctx=CTX),
    "manager": lambda n: ManagerArray("d", n, ctx=CTX),
    # A peer (peers.py), and what people write without one: a numpy array
    # in a named segment, copied in and out with no lock.
    "sharedarray": SharedArrayTransfer,
    "shared-memory": SharedMemoryTransfer,
}
#: The peer each peer way measures.
PEER_OF = {"sharedarray": "sharedarray"}


@pytest.mark.parametrize("nbytes", SIZES, ids=label)
@pytest.mark.parametrize("way", [*TRANSFERS, "queue-plain"])
def test_round_trip(benchmark: Any, way: str, nbytes: int) -> None:
    """Producer -> consumer through one way, process start-up excluded."""
    nbytes = size(benchmark, nbytes, min(nbytes, 4 * KiB))
    n = nbytes // 8
    data = np.arange(n, dtype=np.float64)
    benchmark.group = "arrays-round-trip"
    if way in PEER_OF:
        describe(benchmark, PEER_OF[way])
    benchmark.extra_info.update(way=way, bytes=nbytes, ops=1, processes=2)
    conn, child_conn = CTX.Pipe()
    put_calls: list[float] = []
    seen: list[tuple[float, float]] = []
    if way == "queue-plain":
        q = CTX.Queue()
        consumer = CTX.Process(target=consume_queue, args=(q, child_conn))
        shared = None
    else:
        shared = TRANSFERS[way](n)
        consumer = CTX.Process(
            target=consume_array, args=(shared, child_conn, way != "ctypes-read")
        )
    consumer.start()
    count = iter(range(1, 10**9))

    def round_trip() -> None:
        r = next(count)
        data[-1] = r  # each round's data differs: the answer proves it arrived
        if shared is not None:
            shared.write(data)
            conn.send(True)
        else:
            conn.send(True)
            start = time.perf_counter()
            q.put(data)
            put_calls.append(time.perf_counter() - start)
        seen.append((r, _answer(conn)))

    try:
        time_rounds(benchmark, round_trip, nbytes)
    finally:
        conn.send(False)
        consumer.join(BARRIER_TIMEOUT)
        if shared is not None:
            shared.close()
        else:
            q.close()
            q.join_thread()
    assert consumer.exitcode == 0
    assert seen and all(sent == got for sent, got in seen)
    if put_calls:
        # Queue.put returns before the data is pickled (a feeder thread does it).
        benchmark.extra_info["put_call"] = statistics.median(put_calls)


def _copy_into(dst: Any) -> Callable[[Any], Any]:
    return lambda src: np.copyto(dst, src)


def _pickle_round_trip(obj: Any) -> Any:
    # The protocol a multiprocessing.Queue uses (ForkingPickler's default).
    return pickle.loads(pickle.dumps(obj))


@pytest.mark.parametrize("nbytes", SIZES, ids=label)
@pytest.mark.parametrize(
    "way", ["memcpy", "memcpy-fresh", "pickle", "pickle-list", "pickle-dumps", "pickle-loads"]
)
def test_reference(benchmark: Any, way: str, nbytes: int) -> None:
    """What one process pays: a copy (into reused or fresh memory), a pickle round trip.

    ``pickle-dumps`` and ``pickle-loads`` time the round trip's halves apart:
    with ``transmit`` (test_transmit), the three parts of a ``Queue.put`` / ``get``.
    """
    nbytes = size(benchmark, nbytes, min(nbytes, 4 * KiB))
    data = np.arange(nbytes // 8, dtype=np.float64)
    benchmark.group = "arrays-reference"
    benchmark.extra_info.update(way=way, bytes=nbytes, ops=1, processes=1)
    work: Callable[[Any], Any]
    if way == "memcpy":
        work = _copy_into(np.empty_like(data))
    elif way == "memcpy-fresh":
        work = np.copy
    elif way == "pickle":
        work = _pickle_round_trip
    elif way == "pickle-dumps":
        # The two halves of "pickle", as a Queue's feeder thread and its get() run them.
        work = pickle.dumps
    elif way == "pickle-loads":
        data = pickle.dumps(data)  # made once: only the loads is timed
        work = pickle.loads
    else:
        data = data.tolist()
        work = _pickle_round_trip
    time_rounds(benchmark, work, nbytes, data)


def take_pickled(reader: Any, ack: Any) -> None:
    """Receiver of the transmit alone: take the pickled bytes whole, answer with their length."""
    while reader.poll(BARRIER_TIMEOUT):
        got = reader.recv_bytes()
        if not got:  # the sender's empty message: the rounds are over
            break
        ack.send(len(got))
    reader.close()
    ack.close()


@pytest.mark.parametrize("nbytes", SIZES, ids=label)
def test_transmit(benchmark: Any, nbytes: int) -> None:
    """The middle part of a ``Queue.put`` / ``get``: the pickled array through a pipe, alone.

    A ``multiprocessing.Queue`` moves what its feeder thread pickled with one
    ``send_bytes`` into a one-way ``Pipe(duplex=False)`` (an OS pipe on POSIX),
    and its ``get`` takes it out with one ``recv_bytes`` before unpickling.
    This times exactly those two calls, on the same kind of pipe, with bytes
    pickled once outside the timing. The sender cannot see the bytes arrive, so
    the receiver answers with their length through a second pipe, as the
    ``queue-plain`` round trip's consumer answers with the last item: the
    answer (a few µs) is in both, and ``pickle-dumps`` + ``transmit`` +
    ``pickle-loads`` add up to that round trip's parts.
    """
    nbytes = size(benchmark, nbytes, min(nbytes, 4 * KiB))
    payload = pickle.dumps(np.arange(nbytes // 8, dtype=np.float64))
    benchmark.group = "arrays-reference"
    benchmark.extra_info.update(
        way="transmit", bytes=nbytes, ops=1, processes=2, pickled_bytes=len(payload)
    )
    reader, writer = CTX.Pipe(duplex=False)
    ack_reader, ack_writer = CTX.Pipe(duplex=False)
    receiver = CTX.Process(target=take_pickled, args=(reader, ack_writer))
    receiver.start()
    # The receiver's ends are its own now: with the parent's copies closed, a
    # receiver that dies breaks the pipe (send_bytes raises) instead of blocking it.
    reader.close()
    ack_writer.close()
    got: list[int] = []

    def transmit() -> None:
        writer.send_bytes(payload)
        got.append(_answer(ack_reader))

    try:
        time_rounds(benchmark, transmit, nbytes)
    finally:
        # An OSError: the receiver is gone already, and its exit code says how.
        with contextlib.suppress(OSError):
            writer.send_bytes(b"")
        receiver.join(BARRIER_TIMEOUT)
        if receiver.exitcode is None:
            receiver.terminate()
            receiver.join(BARRIER_TIMEOUT)
        writer.close()
        ack_reader.close()
    assert receiver.exitcode == 0
    assert got and all(n == len(payload) for n in got)


# ---------------------------------------------------------------- per item

ITEM_OPS = {"ctypes": 20_000, "segment": 20_000, "queue": 1_000, "manager": 1_000}
ITEMS = {
    "ctypes": lambda: CtypesArray("d", 1024, segment=False, ctx=CTX),
    "segment": lambda: CtypesArray("d", 1024, segment=True, ctx=CTX),
    "queue": lambda: QueueArray("d", 1024, ctx=CTX),
    "manager": lambda: ManagerArray("d", 1024, ctx=CTX),
}


@pytest.mark.parametrize("op", ["get", "set"])
@pytest.mark.parametrize("way", list(ITEMS))
def test_item(benchmark: Any, way: str, op: str) -> None:
    """``a[i]`` or ``a[i] = x`` in a Python loop, one process."""
    ops = size(benchmark, ITEM_OPS[way], 20)
    benchmark.group = "arrays-item"
    benchmark.extra_info.update(way=way, op=op, ops=ops, processes=1)
    shared = ITEMS[way]()
    indices = [i % 1024 for i in range(ops)]

    def get() -> None:
        for i in indices:
            shared[i]

    def put() -> None:
        for i in indices:
            shared[i] = 1.5

    try:
        benchmark.pedantic(
            get if op == "get" else put,
            rounds=size(benchmark, 10, 1),
            warmup_rounds=size(benchmark, 1, 0),
        )
    finally:
        shared.close()


@pytest.mark.parametrize("way", ["raw-array", "synchronized-array", "numpy-view", "list"])
def test_item_baseline(benchmark: Any, way: str) -> None:
    """``a[i]`` on what people use by hand: RawArray, Array (locked), a numpy view, a list."""
    ops = size(benchmark, 20_000, 20)
    benchmark.group = "arrays-item"
    benchmark.extra_info.update(way=way, op="get", ops=ops, processes=1, baseline=True)
    shared = None
    if way == "raw-array":
        target: Any = CTX.RawArray("d", 1024)
    elif way == "synchronized-array":
        target = CTX.Array("d", 1024)
    elif way == "numpy-view":
        shared = CtypesArray("d", 1024, ctx=CTX)
        target = shared.as_numpy()
    else:
        target = [0.0] * 1024
    indices = [i % 1024 for i in range(ops)]

    def get() -> None:
        for i in indices:
            target[i]

    try:
        benchmark.pedantic(get, rounds=size(benchmark, 10, 1), warmup_rounds=size(benchmark, 1, 0))
    finally:
        target = None  # the view goes before close()
        if shared is not None:
            shared.close()


# ---------------------------------------------------------------- per element

#: Items of the array the per-element costs are measured on (8 MiB of float64).
ELEMENTS = 1024 * 1024


@pytest.mark.parametrize("way", ["slice", "read", "readinto", "numpy-sum"])
def test_element(benchmark: Any, way: str) -> None:
    """Every item of a CtypesArray at once: per-element cost of bulk access."""
    n = size(benchmark, ELEMENTS, 1024)
    benchmark.group = "arrays-element"
    benchmark.extra_info.update(way=way, ops=n, processes=1)
    shared = CtypesArray("d", n, ctx=CTX)
    out = np.empty(n)
    view = shared.as_numpy() if way == "numpy-sum" else None
    work: Callable[[], Any] = {
        "slice": lambda: shared[:],
        "read": shared.read,
        "readinto": lambda: shared.readinto(out),
        "numpy-sum": lambda: view.sum(),  # type: ignore[union-attr]
    }[way]
    try:
        benchmark.pedantic(
            work, rounds=size(benchmark, 10, 1), warmup_rounds=size(benchmark, 1, 0)
        )
    finally:
        view = None  # the view goes before close()
        shared.close()


# ---------------------------------------------------------------- storage


@pytest.mark.parametrize("nbytes", [KiB, SEGMENT_BYTES, 64 * MiB], ids=label)
@pytest.mark.parametrize("storage", ["raw", "segment"])
def test_create(benchmark: Any, storage: str, nbytes: int) -> None:
    """Create and close a CtypesArray on the heap (RawArray) or in a segment."""
    nbytes = size(benchmark, nbytes, KiB)
    benchmark.group = "arrays-create"
    benchmark.extra_info.update(way=storage, bytes=nbytes, ops=1, processes=1)

    def create_and_close() -> None:
        CtypesArray("B", nbytes, segment=storage == "segment", ctx=CTX).close()

    benchmark.pedantic(
        create_and_close, rounds=size(benchmark, 10, 1), warmup_rounds=size(benchmark, 1, 0)
    )


# ---------------------------------------------------------------- start-up


@pytest.mark.parametrize("way", list(ITEMS))
def test_startup(benchmark: Any, way: str) -> None:
    """Create and close an 8 KiB array: heap or segment, owner process or server."""
    time_startup(
        benchmark, "arrays-startup", way, ITEMS[way], CTX.get_start_method(), bytes=1024 * 8
    )
