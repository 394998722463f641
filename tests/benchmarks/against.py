"""Is any way slower than it was at a given commit? Both in one process, same run.

    python -m tests.benchmarks.against REV [--ways Ctypes,Queue,Manager] [--rounds N]
    nox -s against -- REV

The package as it was at ``REV`` (``git archive``) is imported beside the
current one under another name (``shmref_at``), and the same calls of both
are timed in alternating blocks of about 10 ms, in random order, so that the
machine's drift and its neighbours' load fall on both alike. Each line gives
the median time per call at ``REV``, the ratio now/then of the medians, and a
bootstrap 90% interval of that ratio. Across runs on a shared machine, the
ratios of calls that are one round trip to another process (Queue, Manager)
move by about 10% either way; a slowdown is one that stays outside that in
repeated runs. ``--json FILE`` stores the run with the machine it ran on.

The calls are the public API of 605f3da onwards (the hand-written modules
before the shared machinery): one that a revision lacks is reported and
skipped.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import io
import json
import multiprocessing
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

WAYS = ("Ctypes", "Queue", "Manager")
BLOCK = 0.01  # seconds per timed block


def unpack(rev: str, into: Path) -> str:
    """The package at ``rev`` as ``shmref_at`` under ``into``; its commit."""
    commit = subprocess.run(
        ["git", "rev-parse", rev], check=True, capture_output=True, text=True
    ).stdout.strip()
    archive = subprocess.run(["git", "archive", commit, "shmref"], check=True, capture_output=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    (into / "shmref").rename(into / "shmref_at")
    for path in (into / "shmref_at").glob("*.py"):
        text = re.sub(r"\bshmref\b(?=[.\s])", "shmref_at", path.read_text())
        path.write_text(text)
    return commit


def calls(package: str, way: str) -> list[tuple[str, Any, Callable[[], object]]]:
    """``(name, handle, call)`` for each call measured of ``way`` in ``package``."""

    def make(module: str, kind: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(f"{package}.{module}"), f"{way}{kind}")(
            *args, **kwargs
        )

    def applied(call: Callable[[], object], read: Callable[[], object]) -> Callable[[], None]:
        # A Queue way's add or set returns before the owner applies it (the
        # old ones before it was even written): 100 of them and a read that
        # sees them all is the cost of work done.
        def block() -> None:
            for _ in range(100):
                call()
            read()

        return block

    out: list[tuple[str, Any, Callable[[], object]]] = []
    c = make("counter", "Counter")
    out += [("counter.add", c, lambda: c.add(1)), ("counter.get", c, c.get)]
    v = make("value", "Value", ctypes.c_double, 0.0)
    out += [("value.get", v, v.get), ("value.set", v, lambda: v.set(1.5))]
    if way == "Queue":
        out += [("100 add + get", c, applied(lambda: c.add(1), c.get))]
        out += [("100 set + get", v, applied(lambda: v.set(1.5), v.get))]
    a = make("arrays", "Array", "d", 1024)
    items = [1.0] * 1024
    out += [("array.read", a, a.read), ("array.write", a, lambda: a.write(items))]
    if way == "Ctypes":
        out += [("array a[0]", a, lambda: a[0])]
        out += [("array a[0]=1", a, lambda: a.__setitem__(0, 1.0))]
    b = make("metrics", "Metrics", 4)
    field = b.fields[0]
    out += [("metrics.add", b, lambda: b.add(1, **{field: 1}))]
    out += [("metrics.snapshot", b, b.snapshot)]
    if way == "Queue":
        out += [("100 m.add + snapshot", b, applied(lambda: b.add(1, **{field: 1}), b.snapshot))]
    d = make("table", "Dict", capacity=1024)
    d["k"] = 1
    out += [("dict.get", d, lambda: d["k"]), ("dict.set", d, lambda: d.__setitem__("k", 2))]
    # A get right after a write (which CtypesDict's read cache cannot answer),
    # a new key and its removal, the atomic update, a whole-table read.
    increment = importlib.import_module(f"{package}.table").increment
    out += [("dict.set+get", d, lambda: (d.__setitem__("k", 2), d["k"]))]
    out += [("dict.set+pop", d, lambda: (d.__setitem__("j", 2), d.pop("j")))]
    out += [("dict.update", d, lambda: d.update("k", increment, 0))]
    out += [("dict.items", d, d.items), ("dict.len", d, lambda: len(d))]
    ch = make("channel", "Channel")
    msg = b"x" * 64
    out += [("channel.put+get", ch, lambda: (ch.put(msg), ch.get()))]
    lock = make("locks", "Lock")
    out += [("lock.pair", lock, lambda: (lock.acquire(), lock.release()))]
    return out


def per_call(call: Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        call()
    return (time.perf_counter() - start) / n


def compare(
    then: Callable[[], object], now: Callable[[], object], rounds: int
) -> dict[str, float]:
    n = max(20, int(BLOCK / max(per_call(then, 50), 1e-7)))
    t_then: list[float] = []
    t_now: list[float] = []
    for _ in range(rounds):
        pair = [(then, t_then), (now, t_now)]
        random.shuffle(pair)
        for call, times in pair:
            times.append(per_call(call, n))
    median = statistics.median
    boots = sorted(
        median(random.choices(t_now, k=rounds)) / median(random.choices(t_then, k=rounds))
        for _ in range(400)
    )
    return {
        "then_us": median(t_then) * 1e6,
        "now_us": median(t_now) * 1e6,
        "ratio": median(t_now) / median(t_then),
        "low": boots[20],
        "high": boots[379],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rev", help="the commit to compare with, e.g. 605f3da")
    parser.add_argument("--ways", default=",".join(WAYS))
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--json", help="store the run here")
    args = parser.parse_args(argv)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="shmref-against-") as tmp:
        commit = unpack(args.rev, Path(tmp))
        sys.path.insert(0, tmp)
        print(f"now: {Path.cwd()} (working tree); then: {commit[:12]}; {args.rounds} rounds")
        print(f"{'way':8} {'call':18} {'then':>10}  now/then  90% interval")
        for way in args.ways.split(","):
            then, now = calls("shmref_at", way), calls("shmref", way)
            try:
                for (name, _, call_then), (_, _, call_now) in zip(then, now, strict=True):
                    row = compare(call_then, call_now, args.rounds)
                    results.append({"way": way, "call": name, **row})
                    print(
                        f"{way:8} {name:18} {row['then_us']:8.2f} us  {row['ratio']:.3f}  "
                        f"[{row['low']:.3f}-{row['high']:.3f}]",
                        flush=True,
                    )
            finally:
                for _, handle, _ in then + now:
                    handle.close()
    if args.json:
        run = {
            "then": commit,
            "now": subprocess.run(
                ["git", "describe", "--always", "--dirty"], capture_output=True, text=True
            ).stdout.strip(),
            "machine": {
                "python": platform.python_version(),
                "platform": platform.platform(),
                "cpu_count": os.cpu_count(),
                "start_method": multiprocessing.get_start_method(),
            },
            "rounds": args.rounds,
            "results": results,
        }
        Path(args.json).write_text(json.dumps(run, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
