"""Benchmarks of shmref.channel: messages per second, by size, processes and batching.

``nox -s bench -- channel`` measures and stores docs/bench/channel.json; the
test suite runs each benchmark once, small (see timing.py). The report that
turns the stored run into tables and verdicts is docs/_ext/report_channel.py;
it reads the ``extra_info`` keys set here (way, size, producers, consumers,
batch, ops).
"""

from __future__ import annotations

import ctypes
import functools
import multiprocessing
import platform
from collections.abc import Callable
from multiprocessing.managers import SyncManager
from typing import Any

import pytest

from shmref.channel import CtypesChannel, ManagerChannel, QueueChannel, receive_worker, send_worker

from .peers import FasterFifoChannel, describe
from .startup import time_startup
from .timing import BARRIER_TIMEOUT, size, time_groups

CTX = multiprocessing.get_context()

KIB, MIB = 1024, 1024 * 1024
SIZES = [64, 4 * KIB, MIB]
#: (producers, consumers)
TOPOLOGIES = {"1x1": (1, 1), "2x2": (2, 2)}


def shape(message_size: int) -> tuple[int, int]:
    """(capacity, batch) for a message size: the same for every way."""
    return (8, 4) if message_size >= MIB else (256, 32)


WAYS: dict[str, Callable[[int, int], Any]] = {
    "ctypes": lambda capacity, max_size: CtypesChannel(capacity, max_size, ctx=CTX),
    "queue": lambda capacity, max_size: QueueChannel(capacity, max_size, ctx=CTX),
    "manager": lambda capacity, max_size: ManagerChannel(capacity, max_size, ctx=CTX),
    # Peers (peers.py): faster-fifo moving the bytes as they are, and with
    # its default pickling of every message.
    "faster-fifo": lambda capacity, max_size: FasterFifoChannel(capacity, max_size, pickled=False),
    "faster-fifo-pickle": lambda capacity, max_size: FasterFifoChannel(
        capacity, max_size, pickled=True
    ),
}
#: The peer each peer way measures.
PEER_OF = {"faster-fifo": "faster-fifo", "faster-fifo-pickle": "faster-fifo"}

# Messages per round, all producers together, sized so that a round lasts
# roughly 0.1-0.3 s here; batched rounds move more.
MESSAGES = {
    ("ctypes", False): {64: 60_000, 4 * KIB: 40_000, MIB: 400},
    ("ctypes", True): {64: 150_000, 4 * KIB: 80_000, MIB: 400},
    ("queue", False): {64: 20_000, 4 * KIB: 10_000, MIB: 200},
    ("queue", True): {64: 150_000, 4 * KIB: 60_000, MIB: 300},
    ("manager", False): {64: 2_000, 4 * KIB: 2_000, MIB: 200},
    ("manager", True): {64: 100_000, 4 * KIB: 40_000, MIB: 300},
    ("faster-fifo", False): {64: 60_000, 4 * KIB: 40_000, MIB: 400},
    ("faster-fifo", True): {64: 150_000, 4 * KIB: 80_000, MIB: 400},
    ("faster-fifo-pickle", False): {64: 40_000, 4 * KIB: 20_000, MIB: 300},
    ("faster-fifo-pickle", True): {64: 100_000, 4 * KIB: 40_000, MIB: 300},
    ("mp-queue", False): {64: 40_000, 4 * KIB: 20_000, MIB: 300},
    ("manager-queue", False): {64: 2_000, 4 * KIB: 2_000, MIB: 200},
}


class ChannelRound:
    """P producers and C consumers that meet at a barrier, move messages, meet again.

    The interface of timing.WorkerGroup: the benchmark times ``run()``, the
    span between the two meetings, which ends when the last consumer has
    received its share; process start-up and exit are not timed.
    """

    def __init__(
        self,
        producers: int,
        consumers: int,
        send: Callable[[int, Any], tuple[Any, ...]],
        receive: Callable[[Any, Any], tuple[Any, ...]],
        targets: tuple[Callable[..., None], Callable[..., None]] = (send_worker, receive_worker),
    ) -> None:
        self.barrier = CTX.Barrier(producers + consumers + 1)
        pipes = [CTX.Pipe(duplex=False) for _ in range(consumers)]
        self.readers = [reader for reader, _ in pipes]
        self.processes = [
            CTX.Process(target=targets[0], args=send(p, self.barrier)) for p in range(producers)
        ]
        self.processes += [
            CTX.Process(target=targets[1], args=receive(writer, self.barrier))
            for _, writer in pipes
        ]
        for process in self.processes:
            process.start()
        for _, writer in pipes:
            writer.close()
        self.received = 0

    def run(self) -> None:
        self.barrier.wait(BARRIER_TIMEOUT)
        self.barrier.wait(BARRIER_TIMEOUT)

    def join(self) -> None:
        for reader in self.readers:
            if reader.poll(BARRIER_TIMEOUT):
                self.received += reader.recv()
            reader.close()
        for process in self.processes:
            process.join(BARRIER_TIMEOUT)
            if process.exitcode != 0:
                raise RuntimeError(f"{process.name} exited with {process.exitcode}")


def _rounds(benchmark: Any) -> int:
    return size(benchmark, 7, 1)


@pytest.mark.parametrize("batched", [False, True], ids=["single", "batched"])
@pytest.mark.parametrize("topology", list(TOPOLOGIES))
@pytest.mark.parametrize("message_size", SIZES, ids=["64B", "4KiB", "1MiB"])
@pytest.mark.parametrize("way", list(WAYS))
def test_throughput(
    benchmark: Any, way: str, message_size: int, topology: str, batched: bool
) -> None:
    """Messages per second from P producers to C consumers, start-up excluded."""
    benchmark.group = "channel-throughput"
    _throughput(benchmark, way, message_size, topology, batched, (send_worker, receive_worker))


def _throughput(
    benchmark: Any,
    way: str,
    message_size: int,
    topology: str,
    batched: bool,
    targets: tuple[Callable[..., None], Callable[..., None]],
) -> None:
    producers, consumers = TOPOLOGIES[topology]
    capacity, batch = shape(message_size)
    batch = batch if batched else 1
    quick = 2 * producers * batch
    each = size(benchmark, MESSAGES[way, batched][message_size], quick) // producers
    if way in PEER_OF:
        describe(benchmark, PEER_OF[way])
    benchmark.extra_info.update(
        way=way,
        size=message_size,
        producers=producers,
        consumers=consumers,
        batch=batch,
        capacity=capacity,
        ops=each * producers,
        processes=producers + consumers,
    )
    channel = WAYS[way](capacity, message_size)
    rounds: list[ChannelRound] = []

    def make() -> ChannelRound:
        # size < 0: the same message each time, so the channel is timed, not
        # the building of messages; the consumers only count them.
        rounds.append(
            ChannelRound(
                producers,
                consumers,
                lambda p, barrier: (channel, p, each, -message_size, batch, consumers, barrier),
                lambda conn, barrier: (channel, producers, conn, batch, False, barrier),
                targets,
            )
        )
        return rounds[-1]

    try:
        time_groups(benchmark, make, rounds=_rounds(benchmark))
    finally:
        channel.close()
    assert [r.received for r in rounds] == [each * producers] * len(rounds)


# Batches of large messages and glibc's allocator. A consumer drops each batch
# of 1 MiB messages at once; the freed top of the heap passes glibc's trim
# threshold (twice the mmap threshold, which a freed 1 MiB block has raised to
# 1 MiB) and goes back to the OS, so the next batch faults its pages in again.
# The same cells with every process's glibc told to keep what it frees, as
# these environment variables would tell it at start-up. Both are set: setting
# either one fixes the other where it stands, and from the environment that is
# the mmap threshold's start (128 KiB), where every 1 MiB message is an mmap.
ALLOCATORS: dict[str, dict[str, int]] = {
    # Blocks up to 32 MiB from the heap, trimmed only past 128 MiB free.
    "keep": {"MALLOC_MMAP_THRESHOLD_": 32 * MIB, "MALLOC_TRIM_THRESHOLD_": 128 * MIB},
}
#: mallopt's parameter numbers (glibc's malloc.h).
MALLOPT = {"MALLOC_TRIM_THRESHOLD_": -1, "MALLOC_MMAP_THRESHOLD_": -3}


def tune_allocator(allocator: str) -> None:
    """Set this process's glibc malloc as ``ALLOCATORS[allocator]`` says."""
    libc = ctypes.CDLL(None)
    for name, value in ALLOCATORS[allocator].items():
        if libc.mallopt(MALLOPT[name], value) != 1:
            raise RuntimeError(f"glibc refused mallopt for {name}={value}")


def send_tuned(allocator: str, *args: Any) -> None:
    tune_allocator(allocator)
    send_worker(*args)


def receive_tuned(allocator: str, *args: Any) -> None:
    tune_allocator(allocator)
    receive_worker(*args)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
@pytest.mark.parametrize("topology", list(TOPOLOGIES))
@pytest.mark.parametrize("allocator", list(ALLOCATORS))
@pytest.mark.parametrize("way", ["ctypes", "faster-fifo"])
def test_large_batches_by_allocator(
    benchmark: Any, way: str, allocator: str, topology: str
) -> None:
    """1 MiB messages in batches, with each process's glibc malloc tuned as ``allocator``."""
    benchmark.group = "channel-allocator"
    benchmark.extra_info.update(allocator=allocator, settings=ALLOCATORS[allocator])
    targets = (
        functools.partial(send_tuned, allocator),
        functools.partial(receive_tuned, allocator),
    )
    _throughput(benchmark, way, MIB, topology, True, targets)


# The bare stdlib objects, as people use them: one producer, one consumer.


def bare_send(q: Any, n: int, message_size: int, barrier: Any, timeout: float) -> None:
    message = bytes(message_size)
    barrier.wait(timeout)
    for _ in range(n):
        q.put(message)
    q.put(b"")
    barrier.wait(timeout)


def bare_receive(q: Any, conn: Any, barrier: Any, timeout: float) -> None:
    barrier.wait(timeout)
    count = 0
    while q.get():
        count += 1
    barrier.wait(timeout)
    conn.send(count)
    conn.close()


@pytest.mark.parametrize("message_size", SIZES, ids=["64B", "4KiB", "1MiB"])
@pytest.mark.parametrize("way", ["mp-queue", "manager-queue"])
def test_throughput_bare(benchmark: Any, way: str, message_size: int) -> None:
    """``multiprocessing.Queue()`` and ``manager.Queue()``, unbounded, 1x1."""
    n = size(benchmark, MESSAGES[way, False][message_size], 8)
    benchmark.group = "channel-throughput"
    benchmark.extra_info.update(
        way=way,
        size=message_size,
        producers=1,
        consumers=1,
        batch=1,
        ops=n,
        processes=2,
        baseline=True,
    )
    manager = None
    if way == "mp-queue":
        q = CTX.Queue()
    else:
        manager = SyncManager(ctx=CTX)
        manager.start()
        q = manager.Queue()
    rounds: list[ChannelRound] = []

    def make() -> ChannelRound:
        rounds.append(
            ChannelRound(
                1,
                1,
                lambda p, barrier: (q, n, message_size, barrier, BARRIER_TIMEOUT),
                lambda conn, barrier: (q, conn, barrier, BARRIER_TIMEOUT),
                targets=(bare_send, bare_receive),
            )
        )
        return rounds[-1]

    try:
        time_groups(benchmark, make, rounds=_rounds(benchmark))
    finally:
        if manager is not None:
            del q
            manager.shutdown()
        else:
            q.close()
            q.join_thread()
    assert [r.received for r in rounds] == [n] * len(rounds)


@pytest.mark.parametrize("way", ["ctypes", "queue", "manager"])
def test_startup(benchmark: Any, way: str) -> None:
    """Create and close a channel of 64 B messages: its slots, owner process or server."""
    capacity, _ = shape(64)
    time_startup(
        benchmark,
        "channel-startup",
        way,
        lambda: WAYS[way](capacity, 64),
        CTX.get_start_method(),
        size=64,
        capacity=capacity,
    )
