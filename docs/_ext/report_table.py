"""What docs/table.md shows of a stored table run (see benchreport.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchreport import Run, fmt_rate, fmt_ratio, fmt_time, goal, table
from reportparts import (
    PROCESSES,
    Line,
    goals_table,
    legend_below,
    log_plot,
    processes,
    shared_cores,
    summary_rows,
)

WAYS = {
    "ctypes": "`CtypesDict`",
    "queue": "`QueueDict`",
    "manager": "`ManagerDict`",
    "manager-dict": "stdlib `manager.dict()`, `update` under a `manager.Lock()`",
    "dict": "plain `dict` (one process, nothing shared)",
}
CORE = ["ctypes", "queue", "manager"]
OPS = ["get", "set", "update"]
#: (processes, keys) of the throughput runs, in column order.
RUNS = [(1, "distinct"), (2, "distinct"), (2, "shared"), (4, "distinct"), (4, "shared")]


def _latency(run: Run, way: str, op: str) -> float:
    return run.per_op(f"table-{op}", way=way)


def _rate(run: Run, way: str, op: str, processes: int, keys: str) -> float:
    return run.rate(f"table-throughput-{op}", way=way, processes=processes, keys=keys)


def pages(run: Run) -> dict[str, str]:
    pages: dict[str, str] = {}

    rows = []
    for way in [*CORE, "manager-dict", "dict"]:
        cells = []
        for op in OPS:
            t = _latency(run, way, op)
            cells.append(f"{fmt_time(t)} ({fmt_ratio(t / _latency(run, 'ctypes', op))})")
        rows.append([WAYS[way], *cells])
    pages["latency"] = table(["way", *(f"`{op}` (time vs `CtypesDict`)" for op in OPS)], rows)

    rows = [
        [WAYS[way], f"`{op}`", *(fmt_rate(_rate(run, way, op, p, k)) for p, k in RUNS)]
        for way in CORE
        for op in OPS
    ]
    columns = [f"{processes(p)}, {k} keys" for p, k in RUNS]
    header = ["way", "operation", *columns]
    pages["throughput"] = table(header, rows) + shared_cores(
        run.machine["cores"], [p for p, _ in RUNS]
    )

    method = run.get("table-startup", way="ctypes")["extra"]["method"]
    pages["startup"] = table(
        ["create + close", f"start method `{method}`"],
        [[WAYS[way], fmt_time(run.per_op("table-startup", way=way))] for way in CORE],
    )

    get_ratio = _latency(run, "manager", "get") / _latency(run, "ctypes", "get")
    naive = _latency(run, "manager-dict", "update") / _latency(run, "manager", "update")
    wrapper = _latency(run, "manager", "get") / _latency(run, "manager-dict", "get")
    pages["goals"] = goals_table(
        [
            goal(
                get_ratio,
                "`CtypesDict.get` at least 20x faster than `ManagerDict.get`",
                get_ratio >= 20,
            ),
            goal(
                naive,
                "`ManagerDict.update` (one round trip) at least 3x faster than "
                "`manager.dict()` read and write under a `manager.Lock()`",
                naive >= 3,
            ),
            goal(
                wrapper,
                "`ManagerDict.get` costs at most 1.3x a bare `manager.dict()` `get`",
                wrapper <= 1.3,
            ),
        ],
    )
    return pages


def plots(run: Run) -> dict[str, Callable[[Any], None]]:
    def latency(ax: Any) -> None:
        ways = [*CORE, "manager-dict"]
        width = 0.8 / len(ways)
        for i, way in enumerate(ways):
            ax.bar(
                [x + i * width for x in range(len(OPS))],
                [_latency(run, way, op) * 1e6 for op in OPS],
                width,
                label=WAYS[way].replace("`", ""),
            )
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(OPS))], OPS)
        ax.set_yscale("log")
        ax.set_ylabel("µs per operation, one process (lower is better)")
        ax.set_title("Dict latency")
        legend_below(ax, columns=2)

    # One process has no one to share keys with: its point is the distinct-keys run.
    throughput = log_plot(
        PROCESSES,
        [
            Line(
                f"{WAYS[way]} {op}",
                [_rate(run, way, op, p, "distinct" if p == 1 else "shared") for p in PROCESSES],
                style,
            )
            for way in CORE
            for op, style in (("get", "o-"), ("update", "o--"))
        ],
        xlabel="processes, all on the same 8 keys",
        ylabel="operations per second, all processes (higher is better)",
        title="Dict throughput",
        legend_columns=3,
    )
    return {"latency": latency, "throughput": throughput}


def summary(run: Run) -> list[list[str]]:
    return summary_rows(
        run,
        "Dict",
        CORE,
        {way: f"{WAYS[way]} `get`" for way in CORE},
        seconds=lambda way: _latency(run, way, "get"),
        rate=lambda way: _rate(run, way, "get", 2, "shared"),
        uses={
            "ctypes": "keys and values of bounded size, read often, on one machine",
            "queue": "an owner that already runs a loop of its own and answers requests",
            "manager": "values of any picklable type, or other hosts; `update` to modify",
        },
    )
