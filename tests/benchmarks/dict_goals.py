"""The Dict goals of issue 12: ``CtypesDict`` against UltraDict, then and now, in one run.

    python -m tests.benchmarks.dict_goals [REV] [--rounds N]

Two workloads on a table of 10,000 ``str`` keys holding ``str`` values:

* **read-mostly**: one process, ``get`` of every key in turn, no writer (after
  an untimed pass: the keys the mix wrote are read once);
* **mix**: two processes (the second forked from the first), each doing
  ``get`` of one key then ``[]=`` of another, so half the calls are writes.

Each subject lives in an interpreter of its own, since importing UltraDict
turns off the resource tracker's shared_memory registration for the whole
process: ``CtypesDict`` at ``REV`` (default ``main``, imported as
``shmref_at`` as in :mod:`tests.benchmarks.against`), ``CtypesDict`` now,
now with ``cache=0``, and UltraDict with its defaults (skipped with the line
that installs it if it is missing). The interpreters take turns, in a new
random order each round, timing one block of each workload, so that the
machine's load falls on all of them alike; the ratios are taken within each
round, and their median and range over the rounds are printed. ``miss`` is
a get right after a write to another key, which the cache cannot answer:
the time of a write and a get less that of a write. The one-process
workloads are timed in CPU time, the mix by the wall clock. ``--json FILE``
stores the run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.benchmarks.against import unpack

KEYS = [f"key-{n}" for n in range(10_000)]
VALUES = [f"value-{n}" for n in range(10_000)]
#: Seconds a timed block lasts at least.
BLOCK = 0.05


# ---------------------------------------------------------------- in a subject's interpreter


def _make(subject: str) -> tuple[Any, Any]:
    """(table, close) of ``subject``, filled with KEYS -> VALUES."""
    if subject == "ultradict":
        from UltraDict import UltraDict  # type: ignore[import-untyped, import-not-found, unused-ignore]

        table: Any = UltraDict()
        close = table.unlink
    else:
        package = "shmref_at" if subject == "then" else "shmref"
        module = __import__(f"{package}.table", fromlist=["CtypesDict"])
        kwargs = {"cache": 0} if subject == "no cache" else {}
        table = module.CtypesDict(capacity=len(KEYS), **kwargs)
        close = table.close
    for key, value in zip(KEYS, VALUES, strict=True):
        table[key] = value
    return table, close


def _gets(table: Any, keys: list[str]) -> None:
    get = table.get
    for key in keys:
        get(key)


def _sets_and_gets(table: Any, keys: list[str]) -> None:
    get = table.get
    for key in keys:
        table[KEYS[0]] = VALUES[0]  # a write: the cache cannot answer the get
        get(key)


def _sets(table: Any, keys: list[str]) -> None:
    for _ in keys:
        table[KEYS[0]] = VALUES[0]


def _mix(table: Any, n: int, start: int) -> None:
    get = table.get
    count = len(KEYS)
    for i in range(start, start + n):
        get(KEYS[i % count])
        j = (i * 7919) % count
        table[KEYS[j]] = VALUES[(j + i) % count]


def _partner(table: Any, orders: Any, barrier: Any) -> None:
    """The second process of the mix: a block each time it is told ``n``."""
    while (n := orders.recv()) is not None:
        barrier.wait(60)
        _mix(table, n, 5_000)
        barrier.wait(60)


def serve(subject: str, path: str) -> None:
    """Answer the coordinator's lines on stdin: a workload's name -> seconds per call."""
    sys.path.insert(0, path)
    table, close = _make(subject)
    ctx = multiprocessing.get_context("fork")  # the partner uses this very handle
    orders, theirs = ctx.Pipe()
    barrier = ctx.Barrier(2)
    partner = ctx.Process(target=_partner, args=(table, theirs, barrier), daemon=True)
    partner.start()
    keys = random.Random(1).sample(KEYS, len(KEYS))
    mix_n = 1_000
    try:
        for line in sys.stdin:
            work = line.strip()
            if work == "mix":
                while True:
                    orders.send(mix_n)
                    barrier.wait(60)
                    start = time.perf_counter()
                    _mix(table, mix_n, 0)
                    barrier.wait(60)
                    took = time.perf_counter() - start
                    if took >= BLOCK:
                        break
                    mix_n *= 2
                answer = took / (2 * mix_n)  # a get and a set per step
            else:
                loop = {"get": _gets, "set+get": _sets_and_gets, "set": _sets}[work]
                if work != "set":
                    _gets(table, keys)  # the last mix's writes are read once
                # One process: its CPU time, which the neighbours' load
                # inflates less than the wall clock's.
                start = time.process_time()
                loop(table, keys)
                answer = (time.process_time() - start) / len(keys)
            print(json.dumps(answer), flush=True)
    finally:
        orders.send(None)
        partner.join(30)
        close()


# ---------------------------------------------------------------- the coordinator


class Subject:
    """A subject's interpreter, answering one workload at a time."""

    def __init__(self, name: str, path: str) -> None:
        self.name = name
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.benchmarks.dict_goals", "--serve", name, path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def time(self, work: str) -> float:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(work + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name} stopped (exit code {self.process.wait()})")
        return float(json.loads(line))

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(60)


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "low": min(values), "high": max(values)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rev", nargs="?", default="main", help="the commit to compare with")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json", help="store the run here")
    parser.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(*args.serve)
        return 0
    names = ["then", "now", "no cache"]
    if importlib.util.find_spec("UltraDict") is None:
        print("UltraDict is not installed: pip install ultradict (it builds from its sdist)")
    else:
        names.append("ultradict")
    times: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="shmref-goals-") as tmp:
        commit = unpack(args.rev, Path(tmp))
        subjects = [Subject(name, tmp) for name in names]
        try:
            for _ in range(args.rounds):
                for subject in random.sample(subjects, len(subjects)):
                    works = ["get", "mix"]
                    if subject.name in ("then", "now"):
                        works += ["set+get", "set"]
                    for work in works:
                        times.setdefault((subject.name, work), []).append(subject.time(work))
        finally:
            for subject in subjects:
                subject.close()
    for name in ("then", "now"):  # a get right after a write: set+get - set
        both, sets = times.pop((name, "set+get")), times.pop((name, "set"))
        times[(name, "miss")] = [a - b for a, b in zip(both, sets, strict=True)]
    load = ", ".join(f"{n:.1f}" for n in os.getloadavg())
    print(f"then: {commit[:12]}; {args.rounds} rounds; {os.cpu_count()} cores, load {load}")
    print(f"{'subject':10} {'work':5} {'median':>9}  {'range':>17}")
    for (name, work), values in times.items():
        row = _summary([value * 1e9 for value in values])
        print(f"{name:10} {work:5} {row['median']:6.0f} ns  [{row['low']:.0f}-{row['high']:.0f}]")
    ratios: dict[str, dict[str, float]] = {}

    def ratio(label: str, over: tuple[str, str], under: tuple[str, str]) -> None:
        if over in times and under in times:
            row = _summary([a / b for a, b in zip(times[over], times[under], strict=True)])
            ratios[label] = row
            print(f"{label:40} {row['median']:6.2f}  [{row['low']:.2f}-{row['high']:.2f}]")

    print("ratios within each round: median [range]")
    ratio("get: then / now", ("then", "get"), ("now", "get"))
    ratio("get: UltraDict / now (goal >= 1)", ("ultradict", "get"), ("now", "get"))
    ratio("get: UltraDict / no cache", ("ultradict", "get"), ("no cache", "get"))
    ratio("get after a write: now / then", ("now", "miss"), ("then", "miss"))
    ratio("mix: then / now", ("then", "mix"), ("now", "mix"))
    ratio("mix: UltraDict / now (goal >= 3)", ("ultradict", "mix"), ("now", "mix"))
    if args.json:
        run = {
            "then": commit,
            "machine": {
                "python": platform.python_version(),
                "platform": platform.platform(),
                "cpu_count": os.cpu_count(),
            },
            "rounds": args.rounds,
            "seconds": {f"{name} {work}": values for (name, work), values in times.items()},
            "ratios": ratios,
        }
        Path(args.json).write_text(json.dumps(run, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
