"""What docs/arrays.md shows of a stored arrays run (see benchreport.py)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

from benchreport import Run, about, fmt_ratio, fmt_time, goal, table
from reportparts import Line, claims_table, goals_table, log_plot, summary_rows

KiB, MiB, MB = 1024, 1024 * 1024, 1e6
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
CORE = {"ctypes": "`CtypesArray`", "queue": "`QueueArray`", "manager": "`ManagerArray`"}


def size_label(nbytes: int) -> str:
    return f"{nbytes // MiB} MiB" if nbytes >= MiB else f"{nbytes // KiB} KiB"


def fmt_bandwidth(bytes_per_second: float) -> str:
    return f"{bytes_per_second / 1e9:.3g} GB/s"


def in_range(measured: float, low: float, high: float, fmt: Callable[[float], str]) -> str:
    """Verdict for a claim 'between low and high' of a quantity (not a ratio)."""
    if low <= measured <= high:
        return f"**Confirmed**: {fmt(measured)} here"
    side = "below" if measured < low else "above"
    factor = low / measured if measured < low else measured / high
    return f"**Not confirmed**: {fmt(measured)} here, {fmt_ratio(factor)} {side} the range"


def _trip(run: Run, way: str, nbytes: int) -> float:
    group = "arrays-reference" if way in REFERENCES else "arrays-round-trip"
    return run.per_op(group, way=way, bytes=nbytes)


def _sizes(run: Run) -> list[int]:
    return sorted(
        {b["extra"]["bytes"] for b in run.data["benchmarks"] if b["group"] == "arrays-round-trip"}
    )


def _size_for(run: Run, way: str, seconds: float) -> float:
    """The transfer size whose time would be ``seconds`` (log-log interpolation)."""
    points = [(n, _trip(run, way, n)) for n in _sizes(run)]
    for (n0, t0), (n1, t1) in itertools.pairwise(points):
        if t0 <= seconds <= t1:
            f = (math.log(seconds) - math.log(t0)) / (math.log(t1) - math.log(t0))
            return math.exp(math.log(n0) + f * (math.log(n1) - math.log(n0)))
    return math.nan


def pages(run: Run) -> dict[str, str]:
    pages: dict[str, str] = {}
    sizes = _sizes(run)
    ways = [*TRANSFERS, "memcpy", "pickle"]
    rows = [[size_label(n), *(fmt_time(_trip(run, w, n)) for w in ways)] for n in sizes]
    pages["round-trip"] = table(["size", *(WAYS[w] for w in ways)], rows)

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

    rows = []
    for nbytes in sorted(
        {b["extra"]["bytes"] for b in run.data["benchmarks"] if b["group"] == "arrays-create"}
    ):
        raw = run.per_op("arrays-create", way="raw", bytes=nbytes)
        seg = run.per_op("arrays-create", way="segment", bytes=nbytes)
        rows.append([size_label(nbytes), fmt_time(raw), fmt_time(seg)])
    pages["create"] = table(["size", "`RawArray` (heap)", "`shared_memory` segment"], rows)

    pages["claims"] = claims_table(_claims(run, largest))

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


def _claims(run: Run, largest: int) -> list[list[str]]:
    def per_mb(way: str, nbytes: int) -> float:
        return _trip(run, way, nbytes) / (nbytes / MB)

    def ms(seconds: float) -> str:
        return f"{seconds * 1e3:.3g} ms"

    rows = []
    for way, nbytes, what in [
        ("pickle", largest, "a numpy array"),
        ("pickle-list", MiB, "a list of floats"),
        ("pickle-list", largest, "a list of floats"),
    ]:
        rows.append(
            [
                f"Pickling costs 5-50 ms per MB ({what}, {size_label(nbytes)}, `dumps` + `loads`)",
                f"{ms(per_mb(way, nbytes))} per MB",
                in_range(per_mb(way, nbytes), 5e-3, 50e-3, ms),
            ]
        )
    plain = run.get("arrays-round-trip", way="queue-plain", bytes=largest)
    delivered = _trip(run, "queue-plain", largest)
    at_claim = _size_for(run, "queue-plain", 0.110)
    where = (
        f"; 110 ms is the time of about {at_claim / MiB:.0f} MiB"
        if not math.isnan(at_claim)
        else ""
    )
    rows.append(
        [
            "`Queue.put(large_array)` takes about 110 ms (size not given: checked at "
            f"{size_label(largest)} of float64)",
            f"`put` returns in {fmt_time(plain['extra']['put_call'])} (a feeder thread "
            f"pickles); the array reaches `get` in another process after "
            f"{fmt_time(delivered)}{where}",
            about(delivered, 0.110, fmt_time),
        ]
    )
    for label, seconds in [
        ("Python indexing, `a[i]`", run.per_op("arrays-item", way="ctypes", op="get")),
        (
            "Python indexing of a numpy view, `view[i]`",
            run.per_op("arrays-item", way="numpy-view"),
        ),
        ("slicing, `a[:]`", run.per_op("arrays-element", way="slice")),
        ("numpy, vectorised, `view.sum()`", run.per_op("arrays-element", way="numpy-sum")),
    ]:
        rows.append(
            [
                f"Shared memory costs about 1 ns per element: {label}",
                f"{fmt_time(seconds)} per element",
                about(seconds, 1e-9, fmt_time),
            ]
        )
    return rows


def plots(run: Run) -> dict[str, Callable[[Any], None]]:
    sizes = _sizes(run)
    round_trip = log_plot(
        sizes,
        [
            Line(WAYS[way], [_trip(run, way, n) for n in sizes], style)
            for way, style in [
                ("ctypes", "o-"),
                ("ctypes-read", "o--"),
                ("queue", "s-"),
                ("manager", "^-"),
                ("queue-plain", "s--"),
                ("pickle", "x:"),
                ("pickle-list", "+:"),
                ("memcpy", "k-"),
                ("memcpy-fresh", "k--"),
            ]
        ],
        ticks={n: size_label(n) for n in sizes[::2]},
        xlabel="bytes moved (numpy float64)",
        ylabel="seconds per round trip (lower is better)",
        title="Producer to consumer: one array, one round trip",
        legend_size="x-small",
        legend_columns=2,
        markersize=4,
    )
    return {"round-trip": round_trip}


def summary(run: Run) -> list[list[str]]:
    largest = _sizes(run)[-1]
    return summary_rows(
        run,
        "Array",
        CORE.keys(),
        CORE,
        seconds=lambda way: run.per_op("arrays-item", way=way, op="get"),
        throughput=lambda way: (
            f"{fmt_bandwidth(largest / _trip(run, way, largest))} "
            f"({size_label(largest)} round trip)"
        ),
        call="`a[i]`",
    )
