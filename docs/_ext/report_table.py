"""What docs/table.md shows of a stored table run (see benchreport.py)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from benchreport import Run, fmt_rate, fmt_ratio, fmt_time, goal, table
from reportparts import (
    NOT_MEASURED,
    PEER_STYLES,
    PROCESSES,
    Line,
    goals_table,
    has_way,
    legend_below,
    log_plot,
    peers_part,
    processes,
    shared_cores,
    startup_table,
    summary_rows,
)

WAYS = {
    "ctypes": "`CtypesDict`",
    "queue": "`QueueDict`",
    "manager": "`ManagerDict`",
    "manager-dict": "stdlib `manager.dict()`, `update` under a `manager.Lock()`",
    "dict": "plain `dict` (one process, nothing shared)",
    "ultradict": "peer: UltraDict (default)",
    "ultradict-shared-lock": "peer: UltraDict, `shared_lock=True`",
    "shared-memory-dict": "peer: shared-memory-dict",
}
#: The peers' ways (tests/benchmarks/peers_table.py), after shmref's in the tables.
PEERS = ["ultradict", "ultradict-shared-lock", "shared-memory-dict"]
PEER_INTROS = {
    "ultradict": (
        "a dict synchronised through shared memory: every process keeps a full replica, "
        "a write appends to a shared stream (10 kB by default, a full re-dump of the dict "
        "when it fills) and a `get` first checks two counters in shared memory and applies "
        "what is new. Its lock is each process's own unless `shared_lock=True` (which "
        "needs atomics); measured both ways, `update` as its docs say, `with d.lock:` a "
        "read and a write."
    ),
    "shared-memory-dict": (
        "a dict pickled whole into one `shared_memory` segment: every `get` unpickles the "
        "whole dict, every set pickles it again. It has no lock between processes, so its "
        "`update` here is a read and a write."
    ),
}
CORE = ["ctypes", "queue", "manager"]
OPS = ["get", "set", "update"]
#: (processes, keys) of the throughput runs, in column order.
RUNS = [(1, "distinct"), (2, "distinct"), (2, "shared"), (4, "distinct"), (4, "shared")]


#: What a peer's cell shows where its benchmark did not finish (a worker of
#: the peer died: the run's log says how; the benchmark stores nothing).
DID_NOT_FINISH = "did not finish"


def _peer_rate(run: Run, group: str, way: str, **extra: Any) -> float:
    """``run.rate``, or NaN for a peer's benchmark that did not finish."""
    if way in PEERS and run.find(group, way=way, **extra) is None:
        return math.nan
    return run.rate(group, way=way, **extra)


def _latency(run: Run, way: str, op: str) -> float:
    return 1 / _peer_rate(run, f"table-{op}", way)


def _rate(run: Run, way: str, op: str, processes: int, keys: str) -> float:
    return _peer_rate(run, f"table-throughput-{op}", way, processes=processes, keys=keys)


def _or_not_finished(value: float, fmt: Callable[[float], str]) -> str:
    return DID_NOT_FINISH if math.isnan(value) else fmt(value)


def peers(run: Run) -> list[str]:
    """The peer ways this run measured (a peer not installed then was skipped)."""
    return [way for way in PEERS if has_way(run, "table-get", way)]


def _goal_rate(run: Run, work: str, way: str) -> float:
    """Operations per second of ``way`` in the goal benchmark ``work`` (read-mostly, mix)."""
    return _peer_rate(run, f"table-{work}", way)


def _vs_peers(run: Run) -> str:
    """The goal benchmarks' table, every way through the same spawned processes."""
    ways = ["ctypes", *peers(run)]
    if len(ways) == 1:
        return f"The peers: {NOT_MEASURED}.\n"
    rows = []
    for way in ways:
        rates = [_goal_rate(run, work, way) for work in ("read-mostly", "mix")]
        ratios = [
            _goal_rate(run, work, "ctypes") / r
            for work, r in zip(("read-mostly", "mix"), rates, strict=True)
        ]
        rows.append(
            [
                WAYS[way],
                *(
                    _or_not_finished(r, lambda r, x=x: f"{fmt_rate(r)} ({fmt_ratio(x)})")
                    for r, x in zip(rates, ratios, strict=True)
                ),
            ]
        )
    keys = run.get("table-read-mostly", way="ctypes")["extra"]["keys"]
    return table(
        [
            "way",
            f"`get`, 1 process, {keys:,} keys (`CtypesDict` over it)",
            "half `get`, half set, 2 processes, 8 shared keys (`CtypesDict` over it)",
        ],
        rows,
    ) + shared_cores(run.machine["cores"], [2])


def _latency_sentence(run: Run) -> str:
    """Who wins each operation of the latency plot, and why, as this run shows it."""
    plotted = [*CORE, "manager-dict", *peers(run)]
    best = {
        op: min(
            (way for way in plotted if not math.isnan(_latency(run, way, op))),
            key=lambda way: _latency(run, way, op),
        )
        for op in OPS
    }
    names = {op: WAYS[way].removeprefix("peer: ") for op, way in best.items()}
    if len(set(names.values())) == 1:
        text = f"{names[OPS[0]]} is fastest at every operation"
    else:
        text = "Fastest: " + ", ".join(f"{name} at `{op}`" for op, name in names.items())
    ultra = _latency(run, "ultradict", "get") / _latency(run, "ctypes", "get")
    put = _latency(run, "ultradict", "set") / _latency(run, "ctypes", "set")
    if "ultradict" in peers(run) and not math.isnan(ultra + put):
        text += f". UltraDict's `get` takes {fmt_ratio(ultra)} the time of `CtypesDict`'s"
        text += (
            ": it reads a plain dict of its own after checking two counters in shared memory"
            if ultra < 1
            else " here, though it reads a plain dict of its own after checking two counters "
            "(the goal table below runs both through the same processes)"
        )
        text += f"; its set takes {fmt_ratio(put)}"
        if put > 1:
            text += ", as each one pickles into the shared stream and re-dumps the whole dict "
            text += "when the stream is full"
    return text + ".\n"


def _unfinished_sentence(run: Run) -> str:
    """What the run says of the peers' benchmarks that did not finish."""
    missing = sorted(
        {
            (way, op)
            for way in peers(run)
            for op in OPS
            for p, k in RUNS
            if math.isnan(_rate(run, way, op, p, k))
        }
    )
    if not missing:
        return ""
    which = ", ".join(f"{WAYS[way].removeprefix('peer: ')} `{op}`" for way, op in missing)
    text = f"\nWith more than one process, {which} did not finish: a worker died. "
    if any(way == "ultradict" for way, _ in missing):
        text += (
            "Without `shared_lock=True`, UltraDict's writers each replace the full dump of the "
            "dict under a lock of their own, and one fails to attach the segment the other has "
            "just removed (`CannotAttachSharedMemory`), which `shared_lock=True` prevents.\n"
        )
    return text


def pages(run: Run) -> dict[str, str]:
    pages: dict[str, str] = {}
    pages["peers"] = peers_part(run, PEER_INTROS)
    pages["vs-peers"] = _vs_peers(run)
    pages["latency-plot"] = _latency_sentence(run)

    rows = []
    for way in [*CORE, "manager-dict", "dict", *peers(run)]:
        cells = []
        for op in OPS:
            t = _latency(run, way, op)
            ref = _latency(run, "ctypes", op)
            cells.append(
                _or_not_finished(t, lambda t, ref=ref: f"{fmt_time(t)} ({fmt_ratio(t / ref)})")
            )
        rows.append([WAYS[way], *cells])
    pages["latency"] = table(["way", *(f"`{op}` (time vs `CtypesDict`)" for op in OPS)], rows)

    rows = [
        [
            WAYS[way],
            f"`{op}`",
            *(_or_not_finished(_rate(run, way, op, p, k), fmt_rate) for p, k in RUNS),
        ]
        for way in [*CORE, *peers(run)]
        for op in OPS
    ]
    columns = [f"{processes(p)}, {k} keys" for p, k in RUNS]
    header = ["way", "operation", *columns]
    pages["throughput"] = (
        table(header, rows)
        + shared_cores(run.machine["cores"], [p for p, _ in RUNS])
        + _unfinished_sentence(run)
    )

    pages["startup"] = startup_table(run, {way: WAYS[way] for way in CORE})

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
            *_peer_goals(run),
        ],
    )
    return pages


def _peer_goals(run: Run) -> list[list[str]]:
    read = "`CtypesDict.get` at least on par with UltraDict's `get`: 10,000 str keys, no writer"
    mix = "`CtypesDict` at least 3x UltraDict's default on a 50/50 get/set mix, 2 processes"
    if "ultradict" not in peers(run):
        return [[read, "-", NOT_MEASURED], [mix, "-", NOT_MEASURED]]
    on_par = _goal_rate(run, "read-mostly", "ctypes") / _goal_rate(run, "read-mostly", "ultradict")
    mixed = _goal_rate(run, "mix", "ctypes") / _goal_rate(run, "mix", "ultradict")
    return [
        [text, DID_NOT_FINISH, "-"] if math.isnan(ratio) else goal(ratio, text, ratio >= least)
        for text, ratio, least in ((read, on_par, 1), (mix, mixed, 3))
    ]


def plots(run: Run) -> dict[str, Callable[[Any], None]]:
    def latency(ax: Any) -> None:
        ways = [*CORE, "manager-dict", *peers(run)]
        width = 0.8 / len(ways)
        # The peers' bars in the peers' colours, hatched: apart from shmref's.
        looks = {way: {} for way in ways} | {
            way: {"color": style[:2], "hatch": "//"}
            for way, style in zip(peers(run), PEER_STYLES, strict=False)
        }
        for i, way in enumerate(ways):
            ax.bar(
                [x + i * width for x in range(len(OPS))],
                [_latency(run, way, op) * 1e6 for op in OPS],
                width,
                label=WAYS[way].replace("`", ""),
                **looks[way],
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
