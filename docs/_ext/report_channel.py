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
    startup_table,
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
#: 1 MiB batches with glibc keeping what it frees (test_large_batches_by_allocator).
ALLOCATOR_GROUP = "channel-allocator"


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

    pages["allocator"] = _allocator(run)
    pages["peers"] = peers_part(run, PEER_INTROS)
    pages["throughput-plot"] = _plot_sentence(run)
    pages["vs-peers"] = (
        _vs_faster_fifo(run) if "faster-fifo" in peers(run) else f"faster-fifo: {NOT_MEASURED}.\n"
    )

    small = rate(run, "ctypes", 64) / rate(run, "mp-queue", 64)
    manager_cost = rate(run, "manager-queue", 64) / rate(run, "manager", 64)
    pages["startup"] = startup_table(run, {way: WAYS[way] for way in CORE})
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


def _tuned(run: Run, way: str, topology: str) -> float:
    """Messages per second of 1 MiB batches with glibc keeping what it frees."""
    producers, consumers = TOPOLOGIES[topology]
    b = run.get(
        ALLOCATOR_GROUP, way=way, allocator="keep", producers=producers, consumers=consumers
    )
    return float(b["extra"]["ops"] / b["stats"][STAT])


def _allocator(run: Run) -> str:
    """1 MiB batches under glibc's defaults and tuned: the table, and what it says."""
    ways = [way for way in ("ctypes", "faster-fifo") if has_way(run, ALLOCATOR_GROUP, way)]
    if "ctypes" not in ways:
        return (
            "Batches with glibc's malloc tuned: not in this run "
            "(`nox -s bench -- channel` measures them where the C library is glibc).\n"
        )
    settings = run.get(ALLOCATOR_GROUP, way="ctypes")["extra"]["settings"]
    shown = " ".join(f"{name}={value}" for name, value in settings.items())
    rows = []
    for way in ways:
        for topology in TOPOLOGIES:
            default, tuned = rate(run, way, MIB, topology, True), _tuned(run, way, topology)
            rows.append(
                [
                    f"{WAYS[way]}, {topology}",
                    fmt_rate(default),
                    f"{fmt_rate(tuned)} ({fmt_ratio(tuned / default)})",
                ]
            )
    header = [
        f"1 MiB, batches of {_batch(run, MIB)}",
        "glibc's defaults",
        f"glibc keeping what it frees: `{shown}`",
    ]
    text = table(header, rows) + "\n"

    # CtypesChannel's batches under the defaults, tuned, and its single calls.
    batched = {t: rate(run, "ctypes", MIB, t, True) for t in TOPOLOGIES}
    tuned = {t: _tuned(run, "ctypes", t) for t in TOPOLOGIES}
    single = {t: rate(run, "ctypes", MIB, t, False) for t in TOPOLOGIES}
    listed = " and ".join(f"{fmt_ratio(tuned[t] / batched[t])} with {t}" for t in TOPOLOGIES)
    moves = (
        f"with glibc keeping what it frees, `CtypesChannel`'s batches move {listed} the "
        "messages per second they move under glibc's defaults"
    )
    if any(single[t] <= batched[t] for t in TOPOLOGIES):
        text += f"Here 1 MiB batches lose nothing against single calls; {moves}"
    else:
        # The share of what batches lose against single calls that the tuning wins back.
        least = min((tuned[t] - batched[t]) / (single[t] - batched[t]) for t in TOPOLOGIES)
        how_much = (
            "All" if least >= 1 else "Most" if least >= 0.5 else "Part" if least >= 0.1 else None
        )
        if how_much is None:
            text += f"The allocator is not what slows large batches here: {moves}"
        else:
            text += (
                f"{how_much} of what 1 MiB batches lose against single calls in the tables above "
                f"is the allocator's, not the channel's: {moves}"
            )
    over_single = [tuned[t] / single[t] for t in TOPOLOGIES]
    text += (
        f", which is {fmt_ratio(min(over_single))} to {fmt_ratio(max(over_single))} its single "
        "calls' rate"
    )
    if "faster-fifo" in ways:
        versus = [tuned[t] / _tuned(run, "faster-fifo", t) for t in TOPOLOGIES]
        text += (
            f", and {fmt_ratio(min(versus))} to {fmt_ratio(max(versus))} faster-fifo's raw bytes "
            "under the same settings"
        )
    text += (
        f". A consumer of large batches gets this by starting with `{shown}` in its environment "
        f"(its glibc then holds on to up to {settings['MALLOC_TRIM_THRESHOLD_'] // MIB} MiB of "
        "freed memory), or by calling `mallopt` as the benchmark does. Set "
        "both: setting either one turns off glibc's moving mmap threshold where it stands "
        "(mallopt(3)), which at start-up is 128 KiB, and each 1 MiB message then becomes an "
        "mmap of its own.\n"
    )
    return text


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
