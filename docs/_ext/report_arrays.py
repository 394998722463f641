"""What docs/arrays.md shows of a stored arrays run (see benchreport.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchreport import Run, fmt_ratio, fmt_time, goal, table
from reportparts import (
    NOT_MEASURED,
    PEER_STYLES,
    Line,
    goals_table,
    has_way,
    log_plot,
    peers_part,
    startup_table,
    summary_rows,
)

KiB, MiB = 1024, 1024 * 1024
LARGEST = 64 * MiB

WAYS = {
    "ctypes": "`CtypesArray` (`readinto`)",
    "ctypes-read": "`CtypesArray` (`read`)",
    "segment": "`CtypesArray(segment=True)`",
    "queue": "`QueueArray`",
    "manager": "`ManagerArray`",
    "queue-plain": "`Queue.put` / `get` of the numpy array",
    "memcpy": "memcpy (`numpy.copyto`, reused memory)",
    "memcpy-fresh": "memcpy into fresh memory (`numpy.copy`)",
    "pickle": "pickle `dumps` + `loads`, numpy array",
    "pickle-list": "pickle `dumps` + `loads`, list of floats",
    "pickle-dumps": "`pickle.dumps`",
    "transmit": "the pipe (`send_bytes` to `recv_bytes`, answered)",
    "pickle-loads": "`pickle.loads`",
    "raw-array": "hand-written `RawArray[i]` (no lock)",
    "synchronized-array": "hand-written `multiprocessing.Array[i]` (locked)",
    "numpy-view": "`view[i]` on `as_numpy()`",
    "list": "a Python `list[i]` (one process, no sharing)",
    "sharedarray": "peer: SharedArray, numpy copies in and out",
    "shared-memory": "by hand: `shared_memory` + numpy view, copies in and out",
}
#: Ways that are not shmref's: the peer, and the same thing written by hand.
PEERS = ["sharedarray", "shared-memory"]
PEER_INTROS = {
    "sharedarray": (
        "a C extension that creates a numpy array in a named POSIX shared memory segment "
        '(`SharedArray.create("shm://name", n)`) and maps it in another process by name '
        "(`attach`); the round trip copies with numpy (`a[:] = data`, `out[:] = a`), with no "
        "lock, so a reader can see half of a concurrent write. Beside it, the same by hand: "
        "a `multiprocessing.shared_memory` segment and a numpy view of it."
    ),
}
TRANSFERS = ["ctypes", "ctypes-read", "queue", "manager", "queue-plain"]
REFERENCES = ["memcpy", "memcpy-fresh", "pickle", "pickle-list"]
#: A `Queue.put` / `get`'s three parts, each timed alone (in `arrays-reference` too).
PUT_PARTS = ["pickle-dumps", "transmit", "pickle-loads"]
#: A way's colour, marker and line in every round-trip plot, so it reads the same in each.
STYLES = {
    "ctypes": "C0o-",
    "ctypes-read": "C1o--",
    "queue": "C2s-",
    "manager": "C3^-",
    "queue-plain": "C4s--",
    "pickle": "C5x:",
    "pickle-list": "C6+:",
    "memcpy": "k-",
    "memcpy-fresh": "k--",
    "sharedarray": PEER_STYLES[0],
    "shared-memory": PEER_STYLES[1],
}
#: The round-trip plots, a few ways each: nine lines in one plot cannot be
#: told apart on a phone. memcpy, the floor, is in each.
ROUND_TRIP_PLOTS = {
    "round-trip": (
        ["ctypes", "queue", "manager", "queue-plain", "memcpy"],
        "Between processes: the three ways, a bare Queue",
    ),
    "round-trip-copies": (
        ["ctypes", "ctypes-read", "memcpy", "memcpy-fresh"],
        "CtypesArray's two copies beside one memcpy",
    ),
    "round-trip-pickle": (
        ["queue-plain", "pickle", "pickle-list", "memcpy"],
        "A Queue's transfer beside pickling alone",
    ),
    "round-trip-peers": (
        ["ctypes", "sharedarray", "shared-memory", "memcpy"],
        "CtypesArray beside SharedArray and shared_memory + numpy",
    ),
}


def peers(run: Run) -> list[str]:
    """The peer ways this run measured (a peer not installed then was skipped)."""
    return [way for way in PEERS if has_way(run, "arrays-round-trip", way)]


def _peers_sentence(run: Run) -> str:
    """Who wins the round trip against the peers, at the largest size and overall."""
    if "sharedarray" not in peers(run):
        return f"SharedArray: {NOT_MEASURED}.\n"
    sizes = _sizes(run)
    largest = sizes[-1]
    ratios = {way: _trip(run, "ctypes", largest) / _trip(run, way, largest) for way in peers(run)}
    names = {"sharedarray": "SharedArray's", "shared-memory": "`shared_memory` + numpy's"}
    over = " and ".join(f"{fmt_ratio(r)} {names[w]}" for w, r in ratios.items())
    tied = all(0.9 <= r <= 1.1 for r in ratios.values())
    small = sizes[0]
    at_small = _trip(run, "ctypes", small) / _trip(run, "sharedarray", small)
    text = f"At {size_label(largest)}, `CtypesArray`'s round trip takes {over} time: "
    if tied:
        text += (
            "within 10 %, as all three make the same two copies of the data and the copies "
            "take nearly all the time"
        )
    else:
        faster = "faster" if max(ratios.values()) < 1 else "slower"
        text += f"`CtypesArray` is {faster} where all three make the same two copies"
    text += (
        f". At {size_label(small)}, where the copies are short, it takes {fmt_ratio(at_small)} "
        "SharedArray's time: "
    )
    text += (
        "its `write` and `readinto` check their argument and take the array's lock, which the "
        "peers' bare copies do not.\n"
        if at_small > 1
        else "its checks and lock cost no more than numpy's own call overhead.\n"
    )
    return text


CORE = {"ctypes": "`CtypesArray`", "queue": "`QueueArray`", "manager": "`ManagerArray`"}
#: The ways whose start-up the run times, an 8 KiB array each: the heap or a segment.
STARTUP = {
    "ctypes": "`CtypesArray` (heap)",
    "segment": WAYS["segment"],
    "queue": CORE["queue"],
    "manager": CORE["manager"],
}


def size_label(nbytes: int) -> str:
    return f"{nbytes // MiB} MiB" if nbytes >= MiB else f"{nbytes // KiB} KiB"


def fmt_bandwidth(bytes_per_second: float) -> str:
    return f"{bytes_per_second / 1e9:.3g} GB/s"


def _trip(run: Run, way: str, nbytes: int) -> float:
    group = "arrays-reference" if way in REFERENCES or way in PUT_PARTS else "arrays-round-trip"
    return run.per_op(group, way=way, bytes=nbytes)


def _sizes(run: Run) -> list[int]:
    return sorted(
        {b["extra"]["bytes"] for b in run.data["benchmarks"] if b["group"] == "arrays-round-trip"}
    )


def pages(run: Run) -> dict[str, str]:
    pages: dict[str, str] = {}
    sizes = _sizes(run)
    # Two tables, not one of nine columns: each fits a desktop's column.
    sides = [
        ("round-trip", TRANSFERS),
        ("round-trip-references", REFERENCES),
        ("round-trip-peers", ["ctypes", *peers(run)]),
    ]
    for part, ways in sides:
        rows = [[size_label(n), *(fmt_time(_trip(run, w, n)) for w in ways)] for n in sizes]
        pages[part] = table(["size", *(WAYS[w] for w in ways)], rows)

    pages["put-parts"] = _put_parts(run, sizes)

    largest = sizes[-1]
    ctypes, read = _trip(run, "ctypes", largest), _trip(run, "ctypes-read", largest)
    memcpy, fresh = _trip(run, "memcpy", largest), _trip(run, "memcpy-fresh", largest)
    rows = []
    for way, copies in [("ctypes", 2), ("ctypes-read", 2), ("queue", None), ("manager", None)]:
        t = _trip(run, way, largest)
        rows.append(
            [
                WAYS[way],
                fmt_time(t),
                fmt_bandwidth(largest / t),
                fmt_ratio(copies * memcpy / t) if copies else "(pickles and pipes)",
                fmt_ratio(t / ctypes),
            ]
        )
    rows.append([WAYS["queue-plain"], *_plain_row(run, largest, memcpy, ctypes)])
    for way in peers(run):
        t = _trip(run, way, largest)
        rows.append(
            [
                WAYS[way],
                fmt_time(t),
                fmt_bandwidth(largest / t),
                fmt_ratio(2 * memcpy / t),
                fmt_ratio(t / ctypes),
            ]
        )
    pages["largest"] = table(
        [
            f"way, {size_label(largest)}",
            "round trip",
            "bytes delivered per second",
            "share of memcpy bandwidth, for 2 copies",
            "time vs `CtypesArray`",
        ],
        rows,
    )
    pages["fresh"] = (
        f"With `read()`, the consumer copies {size_label(largest)} into fresh memory and "
        f"pays its page faults: the round trip takes {fmt_time(read)} instead of "
        f"{fmt_time(ctypes)}, and a plain copy into fresh memory takes {fmt_time(fresh)} "
        f"instead of {fmt_time(memcpy)} (into memory already touched).\n"
    )

    rows = []
    for way in ["ctypes", "segment", "queue", "manager"]:
        get = run.per_op("arrays-item", way=way, op="get")
        put = run.per_op("arrays-item", way=way, op="set")
        rows.append([WAYS[way].replace(" (`readinto`)", ""), fmt_time(get), fmt_time(put)])
    for way in ["synchronized-array", "raw-array", "numpy-view", "list"]:
        rows.append([WAYS[way], fmt_time(run.per_op("arrays-item", way=way, op="get")), ""])
    pages["item"] = table(["way", "`a[i]`", "`a[i] = x`"], rows)

    index = run.per_op("arrays-item", way="ctypes", op="get")
    rows = [
        ["`a[i]` in a Python loop", fmt_time(index)],
        ["`view[i]` in a Python loop", fmt_time(run.per_op("arrays-item", way="numpy-view"))],
        ["`a[:]` (a list)", fmt_time(run.per_op("arrays-element", way="slice"))],
        ["`a.read()` (an `array.array`)", fmt_time(run.per_op("arrays-element", way="read"))],
        ["`a.readinto(out)`", fmt_time(run.per_op("arrays-element", way="readinto"))],
        [
            "`view.sum()` (numpy, vectorised)",
            fmt_time(run.per_op("arrays-element", way="numpy-sum")),
        ],
        [
            f"memcpy of {size_label(largest)}, per float64",
            fmt_time(memcpy / (largest / 8)),
        ],
    ]
    pages["element"] = table(["access to a `CtypesArray`", "per element"], rows)

    rows, segment_vs_heap = [], {}
    for nbytes in sorted(
        {b["extra"]["bytes"] for b in run.data["benchmarks"] if b["group"] == "arrays-create"}
    ):
        raw = run.per_op("arrays-create", way="raw", bytes=nbytes)
        seg = run.per_op("arrays-create", way="segment", bytes=nbytes)
        rows.append([size_label(nbytes), fmt_time(raw), fmt_time(seg)])
        segment_vs_heap[size_label(nbytes)] = fmt_ratio(seg / raw)
    (small, x), *_, (large, y) = segment_vs_heap.items()
    pages["create"] = table(["size", "`RawArray` (heap)", "`shared_memory` segment"], rows) + (
        f"\nA segment takes {x} the heap's time at {small} and {y} at {large}: it costs a "
        "few system calls more to set up, where the heap writes every byte of the array.\n"
    )

    pages["peers"] = peers_part(run, PEER_INTROS)
    pages["round-trip-peers-plot"] = _peers_sentence(run)

    queue = _trip(run, "queue", largest)
    pages["startup"] = startup_table(run, STARTUP)
    pages["goals"] = goals_table(
        [
            goal(
                2 * memcpy / ctypes,
                f"`CtypesArray` round trip of {size_label(largest)} reaches at least 0.4x "
                "the memcpy bandwidth for the 2 copies it makes",
                2 * memcpy / ctypes >= 0.4,
            ),
            goal(
                queue / ctypes,
                f"`CtypesArray` round trip of {size_label(largest)} at least 15x faster "
                "than `QueueArray`",
                queue / ctypes >= 15,
            ),
            *_peer_goals(run, largest),
        ],
    )
    return pages


def put_parts_timed(run: Run) -> bool:
    """Whether the run times a `Queue.put`'s parts apart (runs since they were added)."""
    return all(has_way(run, "arrays-reference", way) for way in PUT_PARTS)


def _put_parts(run: Run, sizes: list[int]) -> str:
    """A `Queue.put` / `get` part by part, beside the whole round trip it makes up."""
    if not put_parts_timed(run):
        return (
            "Not in this run: it was made before the benchmarks timed the parts apart "
            "(`nox -s bench -- arrays` measures them).\n"
        )
    rows = []
    for n in sizes:
        parts = [_trip(run, way, n) for way in PUT_PARTS]
        whole = _trip(run, "queue-plain", n)
        rows.append([size_label(n), *map(fmt_time, parts), fmt_time(sum(parts)), fmt_time(whole)])
    return table(
        ["size", *(WAYS[w] for w in PUT_PARTS), "the three together", "`Queue.put` / `get`"],
        rows,
    )


def _peer_goals(run: Run, largest: int) -> list[list[str]]:
    text = f"`CtypesArray` round trip of {size_label(largest)} within 1.1x of SharedArray's"
    if "sharedarray" not in peers(run):
        return [[text, "-", NOT_MEASURED]]
    ratio = _trip(run, "ctypes", largest) / _trip(run, "sharedarray", largest)
    return [goal(ratio, text, ratio <= 1.1)]


def _plain_row(run: Run, nbytes: int, memcpy: float, ctypes: float) -> list[str]:
    t = _trip(run, "queue-plain", nbytes)
    return [fmt_time(t), fmt_bandwidth(nbytes / t), "(pickles and pipes)", fmt_ratio(t / ctypes)]


def plots(run: Run) -> dict[str, Callable[[Any], None]]:
    sizes = _sizes(run)
    return {
        part: log_plot(
            sizes,
            [
                Line(WAYS[way], [_trip(run, way, n) for n in sizes], STYLES[way])
                for way in ways
                if way not in PEERS or way in peers(run)
            ],
            ticks={n: size_label(n) for n in sizes[::2]},
            xlabel="bytes moved (numpy float64)",
            ylabel="seconds per round trip (lower is better)",
            title=title,
        )
        for part, (ways, title) in ROUND_TRIP_PLOTS.items()
    }


#: The array the index summary moves: large enough to be data, small enough to be common.
SUMMARY_BYTES = MiB


def summary(run: Run) -> list[list[str]]:
    # Bulk calls, as "Which one should I use" says: write() in the producer,
    # readinto() a reused buffer in the consumer; never a[i] in a loop.
    trip = {way: _trip(run, way, SUMMARY_BYTES) for way in CORE}
    return summary_rows(
        run,
        "Array",
        CORE.keys(),
        CORE,
        seconds=trip.__getitem__,
        rate=lambda way: 1 / trip[way],
        uses={
            "ctypes": (
                "large numeric data on one machine: "
                f"{fmt_ratio(trip['queue'] / trip['ctypes'])} the round trips per second "
                "of `QueueArray`"
            ),
            "queue": "small arrays, occasional access: an owner orders every change",
            "manager": "other hosts, or beside other objects in a manager",
        },
        call=f"`write` + `readinto` of {size_label(SUMMARY_BYTES)}, round trip",
    )
