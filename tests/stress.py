"""Stress: P processes at once on one handle of every way, exact totals after.

    python -m tests.stress [--processes 8,16] [--seconds 2] [--start-method spawn] [NAME ...]
    nox -s stress

For every primitive x way, P processes work on one handle for a bounded
time, each counting what it did; then the state must account for every
call exactly (a counter's total, a value's or a dict entry's updates, a
metrics board's column, a lock's critical sections, a channel's messages:
once each and in order per producer, by count and by checksum of sequence
numbers; an array's reads are never mixed). Each cell prints its
throughput in calls per second. ``tests/test_stress.py`` runs a short
version of every cell.
"""

from __future__ import annotations

import argparse
import ctypes
import multiprocessing
import operator
import queue
import struct
import sys
import time
from collections.abc import Callable
from multiprocessing.context import BaseContext
from typing import Any, NamedTuple

from shmref.table import increment
from tests import (
    ways_arrays,
    ways_channel,
    ways_counter,
    ways_locks,
    ways_metrics,
    ways_table,
    ways_value,
)
from tests.redis_server import Unavailable, home

TIMEOUT = 60.0
JOIN = 120.0
#: Items of the arrays written whole: big enough that a copy can be cut.
ITEMS = 4096


def _until(seconds: float) -> float:
    return time.monotonic() + seconds


def _counter(handle: Any, index: int, seconds: float, done: Any) -> None:
    end, n = _until(seconds), 0
    while time.monotonic() < end:
        handle.add(1)
        n += 1
    done[index] = n
    handle.close()  # a batching counter sends what it holds


def _value(handle: Any, index: int, seconds: float, done: Any) -> None:
    end, n = _until(seconds), 0
    while time.monotonic() < end:
        handle.update(operator.add, 1)
        n += 1
    done[index] = n


def _table(handle: Any, index: int, seconds: float, done: Any) -> None:
    end, n = _until(seconds), 0
    while time.monotonic() < end:
        handle.update("shared", increment, 0)
        n += 1
    done[index] = n


def _metrics(handle: Any, index: int, seconds: float, done: Any) -> None:
    end, n = _until(seconds), 0
    while time.monotonic() < end:
        handle.add(index, completed=1)
        n += 1
    done[index] = n


def _array(handle: Any, index: int, seconds: float, done: Any) -> None:
    # Writers fill the whole array with one number; every read must be of
    # one write, never parts of two.
    import array

    mine = array.array("q", [index + 1]) * ITEMS
    end, n = _until(seconds), 0
    while time.monotonic() < end:
        handle.write(mine)
        seen = set(handle.read())
        if len(seen) != 1:
            raise AssertionError(f"a read mixed writes: {sorted(seen)[:4]}")
        n += 1
    done[index] = n


def _lock(handle: Any, index: int, seconds: float, done: Any, shared: Any) -> None:
    end, n = _until(seconds), 0
    while time.monotonic() < end:
        with handle:
            shared.value = shared.value + 1  # a read and a write: lost without the lock
        n += 1
    done[index] = n


_MESSAGE = struct.Struct("qq")  # producer, sequence number


def _producer(handle: Any, index: int, seconds: float, done: Any) -> None:
    end, n = _until(seconds), 0
    while time.monotonic() < end:
        handle.put(_MESSAGE.pack(index, n), timeout=TIMEOUT)
        n += 1
    done[index] = n


def _consumer(handle: Any, index: int, producers: int, got: Any, sums: Any) -> None:
    # got[index * producers + p], sums[...]: how many of producer p's
    # messages this consumer had, and the sum of their numbers. A message
    # from producer -1 tells it to stop.
    last = [-1] * producers
    while True:
        producer, seq = _MESSAGE.unpack(handle.get(timeout=TIMEOUT))
        if producer < 0:
            return
        if seq <= last[producer]:
            raise AssertionError(f"producer {producer}: {seq} after {last[producer]}")
        last[producer] = seq
        got[index * producers + producer] += 1
        sums[index * producers + producer] += seq


class Cell(NamedTuple):
    ways: Any  # the tests.ways_<primitive> module
    worker: Callable[..., None] | None
    #: The total the state holds, read from the handle after the workers.
    total: Callable[[Any], int] | None


CELLS: dict[str, Cell] = {
    "counter": Cell(ways_counter, _counter, lambda h: h.get()),
    "value": Cell(ways_value, _value, lambda h: h.get()),
    "table": Cell(ways_table, _table, lambda h: h["shared"]),
    "metrics": Cell(ways_metrics, _metrics, lambda h: h.totals()["completed"]),
    "arrays": Cell(ways_arrays, _array, None),
    "locks": Cell(ways_locks, None, None),
    "channel": Cell(ways_channel, None, None),
}


def _make(name: str, way: str, ctx: BaseContext, processes: int) -> Any:
    ways = CELLS[name].ways
    if name == "metrics":
        return ways.WAYS[way](processes, **home(way, ctx), timeout=TIMEOUT)
    if name == "arrays":
        return ways.WAYS[way]("q", ITEMS, **home(way, ctx), timeout=TIMEOUT)
    if name == "table":
        return ways.WAYS[way](capacity=8, **home(way, ctx), timeout=TIMEOUT)
    if name == "channel":
        return ways.WAYS[way](capacity=64, max_size=64, **home(way, ctx), timeout=TIMEOUT)
    return ways.make(way, ctx, TIMEOUT)


def _start(
    ctx: BaseContext, targets: list[tuple[Callable[..., None], tuple[Any, ...]]]
) -> list[Any]:
    processes = [ctx.Process(target=target, args=args) for target, args in targets]
    for p in processes:
        p.start()
    return processes


def _kill(processes: list[Any]) -> None:
    for p in processes:
        if p.is_alive():
            p.kill()
            p.join()


def _join(processes: list[Any], what: str) -> None:
    """Wait for ``processes`` (killing what outlives the wait); each must exit with 0."""
    try:
        for p in processes:
            p.join(JOIN)
    finally:
        _kill(processes)
    codes = [p.exitcode for p in processes]
    if codes != [0] * len(processes):
        raise AssertionError(f"{what} exited with {codes}")


def _run(ctx: BaseContext, targets: list[tuple[Callable[..., None], tuple[Any, ...]]]) -> None:
    _join(_start(ctx, targets), "workers")


def stress(name: str, way: str, ctx: BaseContext, processes: int, seconds: float) -> float:
    """Run one cell; its throughput in calls per second. Raises AssertionError on a miscount."""
    cell = CELLS[name]
    handle = _make(name, way, ctx, processes)
    try:
        start = time.monotonic()
        if name == "channel":
            calls = _stress_channel(handle, ctx, processes, seconds)
        else:
            done = ctx.RawArray(ctypes.c_int64, processes)
            if name == "locks":
                shared = ctx.RawValue(ctypes.c_int64, 0)
                _run(ctx, [(_lock, (handle, i, seconds, done, shared)) for i in range(processes)])
                total = shared.value
            else:
                assert cell.worker is not None
                _run(ctx, [(cell.worker, (handle, i, seconds, done)) for i in range(processes)])
                total = cell.total(handle) if cell.total is not None else sum(done)
            calls = sum(done)
            if total != calls:
                raise AssertionError(
                    f"{name}-{way}: the state says {total}, the workers did {calls}"
                )
        return calls / (time.monotonic() - start)
    finally:
        handle.close()


def _stress_channel(handle: Any, ctx: BaseContext, processes: int, seconds: float) -> int:
    producers = max(1, processes // 2)
    consumers = max(1, processes - producers)
    done = ctx.RawArray(ctypes.c_int64, producers)
    got = ctx.RawArray(ctypes.c_int64, consumers * producers)
    sums = ctx.RawArray(ctypes.c_int64, consumers * producers)
    readers = _start(
        ctx, [(_consumer, (handle, i, producers, got, sums)) for i in range(consumers)]
    )
    try:
        _run(ctx, [(_producer, (handle, i, seconds, done)) for i in range(producers)])
        for _ in readers:
            handle.put(_MESSAGE.pack(-1, 0), timeout=TIMEOUT)
    except BaseException:
        _kill(readers)  # no stop message is coming
        raise
    _join(readers, "consumers")
    for p in range(producers):
        n = done[p]
        count = sum(got[c * producers + p] for c in range(consumers))
        total = sum(sums[c * producers + p] for c in range(consumers))
        if (count, total) != (n, n * (n - 1) // 2):
            raise AssertionError(f"producer {p}: put {n}, got {count} (sum {total})")
    try:
        handle.get(timeout=0)
    except queue.Empty:
        pass
    else:
        raise AssertionError("a message was left over")
    return sum(done)


def cells() -> list[tuple[str, str]]:
    return [(name, way) for name, cell in CELLS.items() for way in cell.ways.WAYS]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"primitives (default: all of {list(CELLS)})")
    parser.add_argument("--processes", default="8,16")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--start-method", default="spawn")
    args = parser.parse_args(argv)
    ctx = multiprocessing.get_context(args.start_method)
    counts = [int(p) for p in args.processes.split(",")]
    failures = 0
    todo = [(n, w) for n, w in cells() if not args.names or n in args.names]
    print(f"{len(todo)} cells x P in {counts}, {args.seconds} s each, {args.start_method}")
    for name, way in todo:
        for processes in counts:
            label = f"{name}-{way} P={processes}"
            try:
                rate = stress(name, way, ctx, processes, args.seconds)
            except Unavailable as error:  # a Redis way without its server
                print(f"skip {label}: {error}", flush=True)
                break
            except AssertionError as error:
                failures += 1
                print(f"FAIL {label}: {error}", flush=True)
            else:
                print(f"ok   {label}: {rate:,.0f} calls/s", flush=True)
    print(f"{failures} cells failed" if failures else "every cell exact")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
