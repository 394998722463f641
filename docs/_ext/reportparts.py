"""The parts of a benchmark page that several primitives' pages share.

A ``report_<primitive>.py`` builds its page from these and from the formats
and verdicts of benchreport.py, and keeps only what is its own: its ways'
labels, its goals, the tables no other primitive has (the article's claims
are claims.py's, once for every page).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from benchreport import Run, fmt_rate, fmt_ratio, fmt_time, table

#: The process counts of every ``<group>-<P>`` throughput benchmark.
PROCESSES = (1, 2, 4)


def processes(n: int) -> str:
    return "1 process" if n == 1 else f"{n} processes"


def cores(n: int) -> str:
    return "1 core" if n == 1 else f"{n} cores"


def goals_table(rows: Iterable[list[str]]) -> str:
    """shmref's own design goals, each row from benchreport.goal()."""
    return table(["design goal", "measured", "verdict"], rows)


def throughput_table(run: Run, group: str, ways: Iterable[str], labels: Mapping[str, str]) -> str:
    """Operations per second of each way, all its processes together.

    One column per benchmark ``<group>-<P>`` of PROCESSES, and the line
    saying so where P is more than the run's cores.
    """
    rows = [
        [labels[way], *(fmt_rate(run.rate(f"{group}-{p}", way=way)) for p in PROCESSES)]
        for way in ways
    ]
    header = ["way", *map(processes, PROCESSES)]
    return table(header, rows) + shared_cores(run.machine["cores"], PROCESSES)


#: The height a row of legend adds below a plot, in inches at the plots' font size.
LEGEND_ROW = 0.25


def legend_below(ax: Any, *, columns: int = 1, size: str = "medium") -> None:
    """Puts the plot's legend under it, out of the data, and makes the figure taller for it.

    Inside the axes a legend covers some data wherever it goes, the more so
    on a phone, and where the lines run changes with every stored run: below,
    it covers none. The legend has at most ``columns`` columns, fewer where
    its labels would not fit the figure's width; the axes keep their height
    and the figure grows a row per line of the legend.
    """
    fig = ax.figure
    entries = len(ax.get_legend_handles_labels()[1])
    renderer = fig.canvas.get_renderer()
    for fitted in range(columns, 0, -1):
        legend = fig.legend(loc="outside lower center", ncols=fitted, fontsize=size, frameon=False)
        if fitted == 1 or legend.get_window_extent(renderer).width <= fig.bbox.width:
            break
        legend.remove()
    width, height = fig.get_size_inches()
    fig.set_size_inches(width, height + math.ceil(entries / fitted) * LEGEND_ROW)


class Line(NamedTuple):
    """One curve of a log_plot."""

    #: Markdown, as the tables write it; the legend drops the backticks.
    label: str
    values: list[float]
    #: matplotlib's format string (marker, line, colour): dots joined by a line.
    style: str = "o-"


def log_plot(
    x: Sequence[float],
    lines: Iterable[Line],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    ticks: Mapping[float, str] | None = None,
    base: int = 2,
    legend_size: str = "medium",
    legend_columns: int = 2,
    markersize: float | None = None,
) -> Callable[[Any], None]:
    """Draws ``lines`` over ``x`` (processes, sizes: each step a multiple), both axes log.

    The x axis is marked at ``ticks``, by default at every x with its number,
    so that processes read 1, 2, 4 and not powers of two.
    """
    lines = list(lines)
    marks = {v: str(v) for v in x} if ticks is None else ticks
    options = {} if markersize is None else {"markersize": markersize}

    def draw(ax: Any) -> None:
        for line in lines:
            ax.plot(x, line.values, line.style, label=line.label.replace("`", ""), **options)
        ax.set_xscale("log", base=base)
        ax.set_xticks(list(marks), list(marks.values()))
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        legend_below(ax, columns=legend_columns, size=legend_size)

    return draw


def throughput_plot(
    run: Run,
    group: str,
    ways: Iterable[str],
    labels: Mapping[str, str],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    styles: Mapping[str, str] | None = None,
) -> Callable[[Any], None]:
    """throughput_table's numbers as a plot: one line per way, by process count.

    ``styles`` gives some ways a line style of their own (a peer's, PEER_STYLES).
    """
    styles = styles or {}
    lines = [
        Line(
            labels[way],
            [run.rate(f"{group}-{p}", way=way) for p in PROCESSES],
            styles.get(way, "o-"),
        )
        for way in ways
    ]
    return log_plot(PROCESSES, lines, xlabel=xlabel, ylabel=ylabel, title=title)


def summary_rows(
    run: Run,
    title: str,
    ways: Iterable[str],
    labels: Mapping[str, str],
    *,
    seconds: Callable[[str], float],
    rate: Callable[[str], float],
    uses: Mapping[str, str],
    call: str = "",
) -> list[list[str]]:
    """The index page's rows for one primitive, in the columns of benchreport.SUMMARY_HEADER.

    ``seconds(way)`` is the time of the way's one operation, ``rate(way)``
    the operations per second of 2 processes together, ``uses[way]`` what to
    use the way for (any measured fact in it computed from ``run``); ``call``
    names the operation where the labels do not. Every cell of a column has
    one unit: a time, a ratio, operations per second. "vs fastest" compares
    the ways given here, so pick like with like.
    """
    times = {way: seconds(way) for way in ways}
    fastest = min(times.values())
    named = f" ({call})" if call else ""
    return [
        [
            f"[{title}]({run.name}.md)",
            labels[way],
            fmt_time(t) + named,
            fmt_ratio(t / fastest),
            fmt_rate(rate(way)),
            uses[way],
        ]
        for way, t in times.items()
    ]


def shared_cores(usable: int, counts: Iterable[int]) -> str:
    """The line under a table some of whose columns ran more processes than ``usable`` cores.

    ``usable`` is the run's own (``run.machine["cores"]``, as stored), never
    this machine's; "" when every count fits.
    """
    over = sorted({n for n in counts if n > usable})
    if not over:
        return ""
    ran = " and ".join(processes(n) for n in over)
    return f"\n{ran[0].upper()}{ran[1:]} ran on {cores(usable)}, so they took turns on them.\n"


# ---------------------------------------------------------------- peers
#
# The libraries people pick instead (tests/benchmarks/peers.py) run in the
# same benchmark runs; their rows carry ``peer`` and ``version`` in extra.

#: Line styles of the peers in the plots: grey, pink and olive crosses on
#: dash-dot lines, apart from shmref's ways (solid or dashed, C0-C3, dots).
PEER_STYLES = ("C7x-.", "C6x-.", "C8x-.", "C9x-.")

#: The line a page shows for a peer its run did not measure.
NOT_MEASURED = "not in this run (it was not installed: `pip install shmref[peers]`)"


#: How the pages name each peer (the keys are the ``peer`` the benchmarks store).
PEER_NAMES = {
    "faster-fifo": "faster-fifo",
    "ultradict": "UltraDict",
    "shared-memory-dict": "shared-memory-dict",
    "atomics": "atomics",
    "sharedarray": "SharedArray",
    "posix-ipc": "posix_ipc",
}


def peer_version(run: Run, peer: str) -> str | None:
    """The version of ``peer`` that ``run`` measured, as its benchmarks stored it."""
    for b in run.data["benchmarks"]:
        if b["extra"].get("peer") == peer:
            return str(b["extra"]["version"])
    return None


def has_way(run: Run, group: str, way: str) -> bool:
    """Whether ``run`` measured ``way`` in ``group`` (a peer may have been skipped)."""
    return run.find(group, way=way) is not None


def startup_table(run: Run, labels: Mapping[str, str]) -> str:
    """Seconds to create and close each way of ``labels`` that ``<run>-startup`` timed.

    The run times start-up under its own start method, named in the column.
    A run stored before it timed start-up says so instead of a table, so the
    page builds with it.
    """
    group = f"{run.name}-startup"
    timed = [b for b in run.data["benchmarks"] if b["group"] == group]
    if not timed:
        return (
            "Not in this stored run, made before the runs timed start-up "
            f"(`nox -s bench -- {run.name}` times it).\n"
        )
    method = timed[0]["extra"]["method"]
    rows = [
        [label, fmt_time(run.per_op(group, way=way, method=method))]
        for way, label in labels.items()
        if run.find(group, way=way, method=method) is not None
    ]
    return table(["create + close", f"start method `{method}`"], rows)


def peers_part(run: Run, intros: Mapping[str, str]) -> str:
    """One line per peer: its name, the version this run measured, what it is."""
    lines = []
    for peer, what in intros.items():
        version = peer_version(run, peer)
        measured = f"{version}, measured here" if version else NOT_MEASURED
        lines.append(f"- **{PEER_NAMES[peer]}** {measured}: {what}\n")
    return "".join(lines)
