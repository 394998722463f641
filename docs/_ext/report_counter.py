"""What docs/counter.md shows of a stored counter run (see benchreport.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchreport import Run, fmt_ratio, fmt_time, goal, table
from reportparts import (
    NOT_MEASURED,
    PEER_STYLES,
    goals_table,
    has_way,
    peers_part,
    summary_rows,
    throughput_plot,
    throughput_table,
)

WAYS = {
    "ctypes": "`CtypesCounter`",
    "slots": "`SlotCounter`",
    "queue": "`QueueCounter`",
    "queue-batched": "`QueueCounter(batch=64)`",
    "manager": "`ManagerCounter`",
    "naive-manager": "`NaiveManagerCounter` (anti-pattern)",
    "hand-written-lock": "hand-written `with lock: v.value += 1`",
    "lock-only": "hand-written `with lock: pass`",
    "unlocked": "hand-written `v.value += 1` (racy)",
    "atomics": "peer: atomics, `inc()` on a shared 64-bit word",
}
CORE = ["ctypes", "slots", "queue", "queue-batched", "manager", "naive-manager"]
PEER_INTROS = {
    "atomics": (
        "lock-free atomic operations (`inc`, `fetch_add`, `cmpxchg` ...) on a buffer you "
        "provide, through cffi into C; here an `atomicview` of a 64-bit word in a `RawArray`, "
        "opened once per process, every add one `inc()`."
    ),
}


def peers(run: Run) -> list[str]:
    """The peer ways this run measured (a peer not installed then was skipped)."""
    return [way for way in ("atomics",) if has_way(run, "counter-throughput-1", way)]


def _vs_atomics(run: Run) -> list[float]:
    """SlotCounter's adds per second over atomics', at 1 and 2 processes."""
    return [
        run.rate(f"counter-throughput-{p}", way="slots")
        / run.rate(f"counter-throughput-{p}", way="atomics")
        for p in (1, 2)
    ]


def _plot_sentence(run: Run) -> str:
    """Whose line is on top of the throughput plot, and where the peer lands."""
    from reportparts import PROCESSES, processes

    top = {
        p: max([*CORE, *peers(run)], key=lambda w: run.rate(f"counter-throughput-{p}", way=w))
        for p in PROCESSES
    }
    if len(set(top.values())) == 1:
        text = f"{WAYS[top[1]]} is on top at every process count"
    else:
        text = "On top: " + "; ".join(f"{WAYS[w]} at {processes(p)}" for p, w in top.items())
    why = {
        "slots": "`SlotCounter` adds into each process's own slot, a memory write with no lock",
        "queue-batched": "`QueueCounter(batch=64)` sends 64 adds as one message to its owner",
    }
    reasons = [why[way] for way in dict.fromkeys(top.values()) if way in why]
    text += (": " + "; ".join(reasons) if reasons else "") + "."
    if peers(run):
        one, two = _vs_atomics(run)
        text += (
            f" The atomics package's lock-free `inc` needs no lock either, yet `SlotCounter` adds "
            f"{fmt_ratio(one)} as fast in 1 process and {fmt_ratio(two)} in 2: each `inc` is a "
            "call through atomics' Python layer and cffi into C, which costs far more than the "
            "add itself"
        )
        if two > one:
            text += ", and 2 processes' `inc`s on one word contend for its cache line"
        text += "."
    return text + "\n"


def pages(run: Run) -> dict[str, str]:
    pages: dict[str, str] = {}
    ref = run.per_op("counter-add", way="ctypes")
    rows = []
    for way in [*CORE, "hand-written-lock", "lock-only", "unlocked", *peers(run)]:
        t = run.per_op("counter-add", way=way)
        rows.append([WAYS[way], fmt_time(t), fmt_ratio(t / ref)])
    pages["add"] = table(["way", "one add, one process", "time vs `CtypesCounter`"], rows)

    pages["throughput"] = throughput_table(run, "counter-throughput", [*CORE, *peers(run)], WAYS)
    pages["peers"] = peers_part(run, PEER_INTROS)
    pages["throughput-plot"] = _plot_sentence(run)

    methods = ["fork", "forkserver", "spawn"]
    rows = []
    for way, label in [
        ("process", "start + join one process"),
        ("ctypes", "create + close `CtypesCounter`"),
        ("slots", "create + close `SlotCounter`"),
        ("queue", "create + close `QueueCounter` (owner process)"),
        ("manager", "create + close `ManagerCounter` (server process)"),
    ]:
        rows.append(
            [label, *(fmt_time(run.per_op("counter-startup", way=way, method=m)) for m in methods)]
        )
    pages["startup"] = table(["what", *(f"`{m}`" for m in methods)], rows)

    hand = run.per_op("counter-add", way="hand-written-lock")
    slots2 = run.rate("counter-throughput-2", way="slots")
    ctypes2 = run.rate("counter-throughput-2", way="ctypes")
    naive = run.per_op("counter-add", way="naive-manager")
    manager = run.per_op("counter-add", way="manager")
    pages["goals"] = goals_table(
        [
            goal(
                ref / hand,
                "`CtypesCounter.add` costs at most 1.3x the hand-written locked loop",
                ref / hand <= 1.3,
            ),
            goal(
                slots2 / ctypes2,
                "`SlotCounter` at 2 processes: at least 5x the throughput of `CtypesCounter`",
                slots2 / ctypes2 >= 5,
            ),
            goal(
                naive / manager,
                "`ManagerCounter.add` at least 3x faster than the naive manager pattern",
                naive / manager >= 3,
            ),
            *_peer_goals(run),
        ],
    )
    return pages


def _peer_goals(run: Run) -> list[list[str]]:
    if not peers(run):
        return [["`SlotCounter` at least 20x atomics' adds per second", "-", NOT_MEASURED]]
    worst = min(_vs_atomics(run))
    return [
        goal(
            worst,
            "`SlotCounter` at least 20x atomics' adds per second, at 1 and 2 processes "
            "(the lower shown)",
            worst >= 20,
        )
    ]


def plots(run: Run) -> dict[str, Callable[[Any], None]]:
    throughput = throughput_plot(
        run,
        "counter-throughput",
        [*CORE, *peers(run)],
        WAYS,
        styles=dict(zip(peers(run), PEER_STYLES, strict=False)),
        xlabel="writer processes",
        ylabel="adds per second, all processes (higher is better)",
        title="Counter throughput",
    )
    return {"throughput": throughput}


def summary(run: Run) -> list[list[str]]:
    return summary_rows(
        run,
        "Counter",
        CORE,
        WAYS,
        seconds=lambda way: run.per_op("counter-add", way=way),
        rate=lambda way: run.rate("counter-throughput-2", way=way),
        uses=uses(run),
    )


def uses(run: Run) -> dict[str, str]:
    """What each way is for, after the page's "Which one should I use"."""

    def versus(way: str, other: str) -> str:
        rates = (run.rate("counter-throughput-2", way=w) for w in (way, other))
        return f"{fmt_ratio(next(rates) / next(rates))} the adds per second of {WAYS[other]}"

    naive, manager = (run.per_op("counter-add", way=w) for w in ("naive-manager", "manager"))
    return {
        "ctypes": "a few writers, or an exact `get` at any moment",
        "slots": f"many writers adding often on one machine: {versus('slots', 'ctypes')}",
        "queue": "a counter in state that an owner process manages anyway",
        "queue-batched": f"frequent adds through an owner: {versus('queue-batched', 'queue')}",
        "manager": "other hosts, or beside other objects in a manager",
        "naive-manager": (
            f"nothing: it takes {fmt_ratio(naive / manager)} the time of {WAYS['manager']} per add"
        ),
    }
