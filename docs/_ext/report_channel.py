"""What docs/channel.md shows of a stored channel run (see benchreport.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchreport import STAT, Run, fmt_rate, fmt_ratio, goal, table
from reportparts import Line, goals_table, log_plot, shared_cores, summary_rows

WAYS = {
    "ctypes": "`CtypesChannel`",
    "queue": "`QueueChannel`",
    "manager": "`ManagerChannel`",
    "mp-queue": "bare `multiprocessing.Queue()`",
    "manager-queue": "bare `manager.Queue()`",
}
CORE = ["ctypes", "queue", "manager"]
BARE = ["mp-queue", "manager-queue"]
MIB = 1024 * 1024
SIZES = {64: "64 B", 4096: "4 KiB", MIB: "1 MiB"}
TOPOLOGIES = {"1x1": (1, 1), "2x2": (2, 2)}
GROUP = "channel-throughput"


def _bench(run: Run, way: str, size: int, topology: str, batched: bool) -> dict[str, Any]:
    wanted = (way, size, *TOPOLOGIES[topology], batched)
    for b in run.data["benchmarks"]:
        e = b["extra"]
        found = (e["way"], e["size"], e["producers"], e["consumers"], e["batch"] > 1)
        if b["group"] == GROUP and found == wanted:
            return b  # type: ignore[no-any-return]
    raise LookupError(f"channel.json has no {way} {size} B {topology} batched={batched} run")


def rate(run: Run, way: str, size: int, topology: str = "1x1", batched: bool = False) -> float:
    """Messages per second, all consumers together, in the fastest round."""
    b = _bench(run, way, size, topology, batched)
    return float(b["extra"]["ops"] / b["stats"][STAT])


def _batch(run: Run, size: int) -> int:
    return int(_bench(run, "ctypes", size, "1x1", True)["extra"]["batch"])


def _label(run: Run, way: str, batched: bool) -> str:
    if not batched:
        return WAYS[way]
    sizes = sorted({_batch(run, s) for s in SIZES}, reverse=True)
    return f"{WAYS[way]}, batches of {' or '.join(map(str, sizes))}"


def _throughput(run: Run, topology: str) -> str:
    rows = []
    for way in CORE:
        for batched in (False, True):
            rates = [rate(run, way, s, topology, batched) for s in SIZES]
            rows.append([_label(run, way, batched), *map(fmt_rate, rates)])
    if topology == "1x1":
        for way in BARE:
            rows.append([WAYS[way], *(fmt_rate(rate(run, way, s)) for s in SIZES)])
    processes = sum(TOPOLOGIES[topology])
    return table(["way", *SIZES.values()], rows) + shared_cores(run.machine["cores"], [processes])


def _batching_by_size(run: Run) -> str:
    """The sentence under the batching table: the gain from the smallest size to the largest."""
    small, large = min(SIZES), max(SIZES)
    gains = {
        way: [rate(run, way, s, batched=True) / rate(run, way, s) for s in (small, large)]
        for way in ("queue", "manager", "ctypes")
    }
    moves = ", ".join(
        f"from {fmt_ratio(first)} to {fmt_ratio(last)} for {WAYS[way]}"
        for way, (first, last) in gains.items()
    )
    why = []
    if all(last < first for first, last in gains.values()):
        why.append("the larger the message, the more its copies weigh against what a batch saves")
    if any(last < 1 for _, last in gains.values()):
        why.append(
            "below 1, a batch of large fresh buffers is harder on the allocator and the caches "
            "than one message at a time"
        )
    sizes = f"from {SIZES[small]} to {SIZES[large]} messages"
    because = ": " + "; ".join(why) if why else ""
    return f"\nWith 1 producer and 1 consumer, {sizes} the gain goes {moves}{because}.\n"


def pages(run: Run) -> dict[str, str]:
    pages: dict[str, str] = {}
    pages["throughput-1x1"] = _throughput(run, "1x1")
    pages["throughput-2x2"] = _throughput(run, "2x2")

    rows = []
    for way in CORE:
        for topology in TOPOLOGIES:
            gains = [
                rate(run, way, s, topology, True) / rate(run, way, s, topology, False)
                for s in SIZES
            ]
            rows.append([f"{WAYS[way]}, {topology}", *map(fmt_ratio, gains)])
    pages["batching"] = table(["way, producers x consumers", *SIZES.values()], rows)
    pages["batching"] += _batching_by_size(run)

    rows = []
    for way in CORE:
        for batched in (False, True):
            ratios = [rate(run, way, s, batched=batched) / rate(run, "mp-queue", s) for s in SIZES]
            rows.append([_label(run, way, batched), *map(fmt_ratio, ratios)])
    pages["vs-queue"] = table(["way", *SIZES.values()], rows)

    small = rate(run, "ctypes", 64) / rate(run, "mp-queue", 64)
    manager_cost = rate(run, "manager-queue", 64) / rate(run, "manager", 64)
    pages["goals"] = goals_table(
        [
            goal(
                small,
                "`CtypesChannel`, 64 B, 1 producer and 1 consumer: at least as many "
                "messages per second as a bare `multiprocessing.Queue()`",
                small >= 1,
            ),
            goal(
                manager_cost,
                "`ManagerChannel` costs at most 1.3x a bare `manager.Queue()` (64 B, 1x1)",
                manager_cost <= 1.3,
            ),
        ],
    )
    return pages


def plots(run: Run) -> dict[str, Callable[[Any], None]]:
    sizes = list(SIZES)
    # A way keeps its colour; batching changes only the line.
    lines = [
        Line(_label(run, way, batched), [rate(run, way, s, batched=batched) for s in sizes], style)
        for way, color in zip(CORE, ("C0", "C1", "C2"), strict=True)
        for batched, style in ((False, f"{color}o-"), (True, f"{color}o--"))
    ]
    lines.append(Line(WAYS["mp-queue"], [rate(run, "mp-queue", s) for s in sizes], "ks:"))
    throughput = log_plot(
        sizes,
        lines,
        ticks=SIZES,
        xlabel="message size",
        ylabel="messages per second (higher is better)",
        title="Channel throughput, 1 producer and 1 consumer",
    )
    return {"throughput": throughput}


def summary(run: Run) -> list[list[str]]:
    return summary_rows(
        run,
        "Channel",
        CORE,
        WAYS,
        seconds=lambda way: 1 / rate(run, way, 64),
        rate=lambda way: rate(run, way, 64),
        uses={
            "ctypes": (
                "one machine, messages small or large: "
                f"{fmt_ratio(rate(run, 'ctypes', 64) / rate(run, 'mp-queue', 64))} the messages "
                "per second of a bare `multiprocessing.Queue()`"
            ),
            "queue": (
                "messages of very different sizes; `put_many` in batches gives "
                f"{fmt_ratio(rate(run, 'queue', 64, batched=True) / rate(run, 'queue', 64))} "
                "the messages per second"
            ),
            "manager": "consumers on other hosts, always with `put_many` and `get_many`",
        },
        call="64 B, 1 producer to 1 consumer",
    )
