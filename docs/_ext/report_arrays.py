"""What docs/arrays.md shows of a stored arrays run (see benchreport.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchreport import Run, fmt_ratio, fmt_time, goal, table
from reportparts import Line, goals_table, log_plot, summary_rows

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
    "raw-array": "hand-written `RawArray[i]` (no lock)",
    "synchronized-array": "hand-written `multiprocessing.Array[i]` (locked)",
    "numpy-view": "`view[i]` on `as_numpy()`",
    "list": "a Python `list[i]` (one process, no sharing)",
}
TRANSFERS = ["ctypes", "ctypes-read", "queue", "manager", "queue-plain"]
REFERENCES = ["memcpy", "memcpy-fresh", "pickle", "pickle-list"]
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
}
CORE = {"ctypes": "`CtypesArray`", "queue": "`QueueArray`", "manager": "`ManagerArray`"}


def size_label(nbytes: int) -> str:
    return f"{nbytes // MiB} MiB" if nbytes >= MiB else f"{nbytes // KiB} KiB"


def fmt_bandwidth(bytes_per_second: float) -> str:
    return f"{bytes_per_second / 1e9:.3g} GB/s"


def _trip(run: Run, way: str, nbytes: int) -> float:
    group = "arrays-reference" if way in REFERENCES else "arrays-round-trip"
    return run.per_op(group, way=way, bytes=nbytes)


def _sizes(run: Run) -> list[int]:
    return sorted(
        {b["extra"]["bytes"] for b in run.data["benchmarks"] if b["group"] == "arrays-round-trip"}
    )


def pages(run: Run) -> dict[str, str]:
    pages: dict[str, str] = {}
    sizes = _sizes(run)
    # Two tables, not one of nine columns: each fits a desktop's column.
    for part, ways in (("round-trip", TRANSFERS), ("round-trip-references", REFERENCES)):
        rows = [[size_label(n), *(fmt_time(_trip(run, w, n)) for w in ways)] for n in sizes]
        pages[part] = table(["size", *(WAYS[w] for w in ways)], rows)

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

    queue = _trip(run, "queue", largest)
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
        ],
    )
    return pages


def _plain_row(run: Run, nbytes: int, memcpy: float, ctypes: float) -> list[str]:
    t = _trip(run, "queue-plain", nbytes)
    return [fmt_time(t), fmt_bandwidth(nbytes / t), "(pickles and pipes)", fmt_ratio(t / ctypes)]


def plots(run: Run) -> dict[str, Callable[[Any], None]]:
    sizes = _sizes(run)
    return {
        part: log_plot(
            sizes,
            [Line(WAYS[way], [_trip(run, way, n) for n in sizes], STYLES[way]) for way in ways],
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
