"""What docs/counter.md shows of a stored counter run (see benchreport.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchreport import Run, fmt_ratio, fmt_time, goal, table
from reportparts import goals_table, summary_rows, throughput_plot, throughput_table

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
}
CORE = ["ctypes", "slots", "queue", "queue-batched", "manager", "naive-manager"]


def pages(run: Run) -> dict[str, str]:
    pages: dict[str, str] = {}
    ref = run.per_op("counter-add", way="ctypes")
    rows = []
    for way in [*CORE, "hand-written-lock", "lock-only", "unlocked"]:
        t = run.per_op("counter-add", way=way)
        rows.append([WAYS[way], fmt_time(t), fmt_ratio(t / ref)])
    pages["add"] = table(["way", "one add, one process", "time vs `CtypesCounter`"], rows)

    pages["throughput"] = throughput_table(run, "counter-throughput", CORE, WAYS)

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
        ],
    )
    return pages


def plots(run: Run) -> dict[str, Callable[[Any], None]]:
    throughput = throughput_plot(
        run,
        "counter-throughput",
        CORE,
        WAYS,
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
