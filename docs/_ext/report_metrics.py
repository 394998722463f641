"""What docs/metrics.md shows of a stored metrics run (see benchreport.py)."""

from __future__ import annotations

from collections.abc import Callable
from statistics import median
from typing import Any

from benchreport import STAT, Run, fmt_rate, fmt_time, goal, table
from reportparts import Line, goals_table, log_plot, shared_cores, startup_table, summary_rows

WAYS = {
    "ctypes": "`CtypesMetrics` (seqlock)",
    "ctypes-lock": '`CtypesMetrics(sync="lock")`',
    "unsafe": "`UnsafeMetrics` (no seqlock, anti-pattern)",
    "queue": "`QueueMetrics`",
    "manager": "`ManagerMetrics`",
}
ALL = list(WAYS)
WORKERS = [1, 2, 4]


def _per_worker(run: Run, way: str, workers: int) -> float:
    """Seconds for one update, as one of ``workers`` concurrent workers sees it."""
    b = run.get(f"metrics-update-{workers}", way=way)
    return float(b["stats"][STAT]) / b["extra"]["per_worker"]


def _busy(run: Run, way: str) -> dict[str, Any]:
    return run.get("metrics-snapshot-busy", way=way)["extra"]  # type: ignore[no-any-return]


def pages(run: Run) -> dict[str, str]:
    pages: dict[str, str] = {}

    rows = []
    for way in ALL:
        rows.append(
            [
                WAYS[way],
                *(fmt_time(_per_worker(run, way, w)) for w in WORKERS),
                fmt_rate(run.rate("metrics-update-4", way=way)),
            ]
        )
    pages["update"] = table(
        [
            "way",
            "one update, 1 worker",
            "2 workers",
            "4 workers",
            "updates/s, 4 workers together",
        ],
        rows,
    ) + shared_cores(run.machine["cores"], WORKERS)

    rows = []
    for way in ALL:
        rows.append(
            [
                WAYS[way],
                *(fmt_time(run.per_op(f"metrics-snapshot-{w}", way=way)) for w in WORKERS),
                fmt_time(run.per_op("metrics-snapshot-busy", way=way)),
            ]
        )
    pages["snapshot"] = table(
        ["way", "1 row", "2 rows", "4 rows", "2 rows, one writer busy"],
        rows,
    )

    rows = []
    for way in ALL:
        busy = _busy(run, way)
        torn, read = sum(busy["torn"]), sum(busy["rows_read"])
        rows.append(
            [
                WAYS[way],
                f"{torn} of {read}",
                f"{median(busy['seen']):.0f}",
                f"{median(busy['written']):.0f}",
            ]
        )
    pages["consistency"] = table(
        [
            "way",
            "torn rows read, all rounds",
            "writer's values seen per round (median)",
            "writer's updates per round (median)",
        ],
        rows,
    )

    seq_update = _per_worker(run, "ctypes", 1) / _per_worker(run, "unsafe", 1)
    seq_snapshot = run.per_op("metrics-snapshot-4", way="ctypes") / run.per_op(
        "metrics-snapshot-4", way="unsafe"
    )
    pages["startup"] = startup_table(
        run, {way: WAYS[way] for way in ("ctypes", "ctypes-lock", "queue", "manager")}
    )
    pages["goals"] = goals_table(
        [
            goal(
                seq_update,
                "The seqlock costs an update at most 1.5x the unsynchronised update",
                seq_update <= 1.5,
            ),
            goal(
                seq_snapshot,
                "The seqlock costs a snapshot of 4 idle rows at most 1.5x the "
                "unsynchronised snapshot",
                seq_snapshot <= 1.5,
            ),
        ],
    )
    return pages


def plots(run: Run) -> dict[str, Callable[[Any], None]]:
    update = log_plot(
        WORKERS,
        [Line(WAYS[way], [_per_worker(run, way, w) * 1e6 for w in WORKERS]) for way in ALL],
        xlabel="workers updating at once",
        ylabel="µs per update, as one worker sees it (lower is better)",
        title="Metrics board: one worker update",
    )
    snapshot = log_plot(
        WORKERS,
        [
            Line(WAYS[way], [run.per_op(f"metrics-snapshot-{w}", way=way) * 1e6 for w in WORKERS])
            for way in ALL
        ],
        xlabel="rows (workers)",
        ylabel="µs per snapshot, no writer running (lower is better)",
        title="Metrics board: one snapshot",
    )
    return {"update": update, "snapshot": snapshot}


def summary(run: Run) -> list[list[str]]:
    core = ["ctypes", "queue", "manager"]
    return summary_rows(
        run,
        "Metrics board",
        core,
        {way: f"{WAYS[way]} update" for way in core},
        seconds=lambda way: _per_worker(run, way, 1),
        rate=lambda way: run.rate("metrics-update-2", way=way),
        uses={
            "ctypes": "workers and their monitor on one machine: writers never wait",
            "queue": "a monitor that needs the whole board at one instant",
            "manager": "a board that other hosts read or write",
        },
    )
