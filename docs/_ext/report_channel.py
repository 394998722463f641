"""What docs/channel.md shows of a stored channel run (see benchreport.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchreport import STAT, Run, fmt_rate, fmt_ratio, goal, table
from reportparts import (
    NOT_MEASURED,
    PEER_STYLES,
    Line,
    goals_table,
    has_way,
    log_plot,
    peers_part,
    shared_cores,
    summary_rows,
)

WAYS = {
    "ctypes": "`CtypesChannel`",
    "queue": "`QueueChannel`",
    "manager": "`ManagerChannel`",
    "mp-queue": "bare `multiprocessing.Queue()`",
    "manager-queue": "bare `manager.Queue()`",
    "faster-fifo": "peer: faster-fifo, raw bytes",
    "faster-fifo-pickle": "peer: faster-fifo, pickled (its default)",
}
CORE = ["ctypes", "queue", "manager"]
BARE = ["mp-queue", "manager-queue"]
#: The peers' ways (tests/benchmarks/peers.py), in the tables after shmref's.
PEERS = ["faster-fifo", "faster-fifo-pickle"]
PEER_INTROS = {
    "faster-fifo": (
        "a replacement for `multiprocessing.Queue` (Cython over C++) that keeps "
        "messages in a circular buffer in shared memory, bounded in bytes, guarded by a "
        "process-shared mutex and condition variables; `put_many`/`get_many` move several "
        "messages per call. It pickles every message unless given `dumps`/`loads`: measured "
        "both ways (raw bytes: the message as it is)."
    ),
}
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


def peers(run: Run) -> list[str]:
    """The peer ways this run measured (a peer not installed then was skipped)."""
    return [way for way in PEERS if has_way(run, GROUP, way)]


def _throughput(run: Run, topology: str) -> str:
    rows = []
    for way in [*CORE, *peers(run)]:
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

    pages["peers"] = peers_part(run, PEER_INTROS)
    pages["throughput-plot"] = _plot_sentence(run)
    pages["vs-peers"] = (
        _vs_faster_fifo(run) if "faster-fifo" in peers(run) else f"faster-fifo: {NOT_MEASURED}.\n"
    )

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
            *_peer_goals(run),
        ],
    )
    return pages


def _cells() -> list[tuple[int, str, bool]]:
    return [(s, t, b) for t in TOPOLOGIES for b in (False, True) for s in SIZES]


def _versus(run: Run, peer: str) -> dict[tuple[int, str, bool], float]:
    """``CtypesChannel`` over ``peer`` in every cell, each side batched alike."""
    return {
        (s, t, b): rate(run, "ctypes", s, t, b) / rate(run, peer, s, t, b) for s, t, b in _cells()
    }


def _vs_faster_fifo(run: Run) -> str:
    """The table of CtypesChannel over faster-fifo, and the sentence saying who wins."""
    rows = []
    for peer in peers(run):
        ratios = _versus(run, peer)
        for topology in TOPOLOGIES:
            for batched in (False, True):
                how = "batched" if batched else "single calls"
                rows.append(
                    [
                        f"over {WAYS[peer].removeprefix('peer: ')}, {topology}, {how}",
                        *(fmt_ratio(ratios[s, topology, batched]) for s in SIZES),
                    ]
                )
    text = table(["`CtypesChannel`", *SIZES.values()], rows)
    raw = _versus(run, "faster-fifo")
    wins = sum(r > 1 for r in raw.values())
    small = [r for (s, _, _), r in raw.items() if s == min(SIZES)]
    large = [r for (s, _, _), r in raw.items() if s == max(SIZES)]
    text += (
        f"\n`CtypesChannel` moved more messages per second than faster-fifo with raw bytes in "
        f"{wins} of its {len(raw)} cells ({fmt_ratio(min(raw.values()))} to "
        f"{fmt_ratio(max(raw.values()))}). {_why_faster_fifo(small, large)}"
    )
    if "faster-fifo-pickle" in peers(run):
        cost = [
            rate(run, "faster-fifo", s, t, b) / rate(run, "faster-fifo-pickle", s, t, b)
            for s, t, b in _cells()
        ]
        text += (
            f" faster-fifo's default pickling costs it {fmt_ratio(min(cost))} to "
            f"{fmt_ratio(max(cost))} the time of raw bytes: a pickle and an unpickle per message "
            "on top of the copy."
        )
    return text + "\n"


def _why_faster_fifo(small: list[float], large: list[float]) -> str:
    """Why the ratio moves with the message size, as this run's figures show it."""
    near = [r for r in large if 0.9 <= r <= 1.1]
    if min(small) > max(large):
        reason = (
            "The gap is widest for small messages, where each call's own cost counts most, and "
            "narrows as the message grows and copying it, which both do once per message, "
            "takes most of the time"
        )
        if len(near) == len(large):
            reason += f" (at {SIZES[max(SIZES)]} they are within 10 % of each other)"
        return reason + "."
    return (
        "Both copy each message once into a ring buffer in shared memory; what differs is each "
        "call's own cost, and no size shows a clear trend here."
    )


def _peer_goals(run: Run) -> list[list[str]]:
    if "faster-fifo" not in peers(run):
        return []
    worst = min(_versus(run, "faster-fifo").values())
    return [
        goal(
            worst,
            "`CtypesChannel` at least 1.25x faster-fifo (raw bytes, batched alike) in every "
            "cell: 64 B / 4 KiB / 1 MiB, 1x1 and 2x2, single and batched (the lowest shown)",
            worst >= 1.25,
        )
    ]


def _plot_sentence(run: Run) -> str:
    """The sentence under the throughput plot: whose line is on top, and against the peer."""
    plotted = [(way, batched) for way in CORE for batched in (False, True)]
    plotted += [("mp-queue", False), *((way, False) for way in peers(run))]
    tops = {
        s: max(plotted, key=lambda line: rate(run, line[0], s, batched=line[1])) for s in SIZES
    }
    names = {line: _label(run, *line) for line in tops.values()}
    if len(names) == 1:
        (name,) = names.values()
        text = f"{name} is on top at every size"
    else:
        text = "On top: " + "; ".join(f"{names[tops[s]]} at {SIZES[s]}" for s in SIZES)
    if all(batched for _, batched in tops.values()):
        text += ": a batch pays each call's fixed costs once for several messages"
    elif any(batched for _, batched in tops.values()):
        text += ". Where a batched way is on top, it pays each call's fixed costs once for "
        text += "several messages; where a way with single calls is, the copies of large "
        text += "messages outweigh what a batch saves"
    text += "."
    if "faster-fifo" in peers(run):
        ratios = {s: rate(run, "ctypes", s) / rate(run, "faster-fifo", s) for s in SIZES}
        low, high = min(ratios.values()), max(ratios.values())
        verb = (
            "more messages per second than faster-fifo's raw bytes at every size"
            if low > 1
            else "fewer messages per second than faster-fifo's raw bytes at every size"
            if high < 1
            else "more messages per second than faster-fifo's raw bytes at some sizes and "
            "fewer at others"
        )
        text += (
            f" One message per call, `CtypesChannel` moves {verb} "
            f"({', '.join(f'{fmt_ratio(r)} at {SIZES[s]}' for s, r in ratios.items())})."
        )
    return text + "\n"


def plots(run: Run) -> dict[str, Callable[[Any], None]]:
    sizes = list(SIZES)
    # A way keeps its colour; batching changes only the line.
    lines = [
        Line(_label(run, way, batched), [rate(run, way, s, batched=batched) for s in sizes], style)
        for way, color in zip(CORE, ("C0", "C1", "C2"), strict=True)
        for batched, style in ((False, f"{color}o-"), (True, f"{color}o--"))
    ]
    lines.append(Line(WAYS["mp-queue"], [rate(run, "mp-queue", s) for s in sizes], "ks:"))
    lines += [
        Line(WAYS[way], [rate(run, way, s) for s in sizes], style)
        for way, style in zip(peers(run), PEER_STYLES, strict=False)
    ]
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
