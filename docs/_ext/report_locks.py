"""What docs/locks.md shows of a stored locks run (see benchreport.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchreport import Run, fmt_rate, fmt_ratio, fmt_share, fmt_time, goal, table
from reportparts import (
    PEER_STYLES,
    Line,
    cores,
    goals_table,
    has_way,
    log_plot,
    peers_part,
    shared_cores,
    startup_table,
    summary_rows,
)

CLASSES = {
    "lock": {"ctypes": "CtypesLock", "robust": "RobustLock", "queue": "QueueLock"},
    "rlock": {"ctypes": "CtypesRLock", "queue": "QueueRLock"},
    "semaphore": {"ctypes": "CtypesSemaphore", "queue": "QueueSemaphore"},
}
for _primitive, _name in (("lock", "Lock"), ("rlock", "RLock"), ("semaphore", "Semaphore")):
    CLASSES[_primitive]["manager"] = f"Manager{_name}"
STDLIB = {
    "lock": "multiprocessing.Lock",
    "rlock": "multiprocessing.RLock",
    "semaphore": "multiprocessing.BoundedSemaphore",
}
WAYS = {
    "ctypes": "ctypes shared memory",
    "robust": "ctypes shared memory, robust",
    "queue": "Queue",
    "manager": "Manager",
    "stdlib": "bare `multiprocessing` object (baseline)",
    "none": "no lock (baseline)",
    "posix-ipc": "peer: posix_ipc",
    # Threads of one process, for the article's advice to them (claims.py, threading-lock).
    "threading": "`threading.Lock` (threads of one process only)",
    "stdlib-threads": "bare `multiprocessing.Lock` taken by threads of one process",
}
#: The ways threads of one process use, for the article's advice to them; only
#: runs since they were added have them.
THREAD_WAYS = ["threading", "stdlib-threads"]
PEER_INTROS = {
    "posix-ipc": (
        "a C extension over POSIX IPC: named semaphores (`sem_open`), shared memory and "
        "message queues. A `posix_ipc.Semaphore` at value 1 serves as a lock, with "
        "`acquire(timeout)` and `with`; measured as a lock and as the Semaphore(2), passed "
        "to the workers as it is."
    ),
}
ORDER = ["ctypes", "robust", "queue", "manager"]


#: The ways of the hold benchmarks, as the table and the plot show them.
HOLD_WAYS = ["ctypes", "queue", "manager", "none"]


def holds(run: Run) -> list[float]:
    """The times held that every hold way was measured at, shortest first.

    Runs since they were added have 1 and 10 µs among them.
    """
    measured: dict[float, set[str]] = {}
    for b in run.data["benchmarks"]:
        if b["group"] == "locks-hold":
            measured.setdefault(b["extra"]["hold"], set()).add(b["extra"]["way"])
    return sorted(hold for hold, ways in measured.items() if ways >= set(HOLD_WAYS))


def threads_measured(run: Run) -> bool:
    """Whether the run has the locks of threads of one process (runs since they were added)."""
    return has_way(run, "locks-uncontended", "threading") and all(
        has_way(run, "locks-handoff", way) for way in THREAD_WAYS
    )


def peers(run: Run) -> list[str]:
    """The peer ways this run measured (a peer not installed then was skipped)."""
    return [w for w in ("posix-ipc",) if has_way(run, "locks-uncontended", w)]


def label(primitive: str, way: str) -> str:
    if way == "posix-ipc":
        return "peer: `posix_ipc.Semaphore`"
    if way == "stdlib":
        return f"bare `{STDLIB[primitive]}`"
    if way == "none":
        return "no lock"
    if way == "threading":
        return "`threading.Lock`"
    if way == "stdlib-threads":
        return f"bare `{STDLIB[primitive]}`"
    return f"`{CLASSES[primitive][way]}`"


def fmt_hold(seconds: float) -> str:
    return "0 (empty)" if seconds == 0 else fmt_time(seconds)


def _uncontended(run: Run, primitive: str, way: str, style: str) -> float:
    return run.per_op("locks-uncontended", primitive=primitive, way=way, style=style)


def pages(run: Run) -> dict[str, str]:
    pages: dict[str, str] = {}

    rows = []
    for primitive in CLASSES:
        base = _uncontended(run, primitive, "stdlib", "with")
        mine = [w for w in ORDER if w in CLASSES[primitive]]
        others = ["stdlib"] + [w for w in peers(run) if primitive != "rlock"]
        # threading.Lock last: a lock for threads only, beside the ones processes share.
        threads = ["threading"] if primitive == "lock" and threads_measured(run) else []
        for way in [*mine, *others, *threads]:
            calls = _uncontended(run, primitive, way, "calls")
            block = _uncontended(run, primitive, way, "with")
            name = label(primitive, way) + (" (threads only)" if way in THREAD_WAYS else "")
            rows.append([name, fmt_time(calls), fmt_time(block), fmt_ratio(block / base)])
    pages["uncontended"] = table(
        ["primitive", "`acquire()` + `release()`", "`with` block", "`with` vs bare"], rows
    )

    rows = []
    for primitive in ("lock", "rlock"):
        ways = [w for w in ORDER if w in CLASSES[primitive]]
        if primitive == "lock":
            ways += [w for w in ("stdlib", *peers(run)) if has_way(run, "locks-handoff", w)]
        for way in ways:
            t = run.per_op("locks-handoff", primitive=primitive, way=way)
            rows.append([label(primitive, way), fmt_time(t), fmt_rate(1 / t)])
    pages["handoff"] = table(["primitive", "per acquisition", "acquisitions, 2 processes"], rows)
    pages["handoff-threads"] = _handoff_threads(run)

    rows = []
    for way in ORDER:
        turns = run.get("locks-turns", way=way)["extra"]
        rows.append(
            [
                label("lock", way),
                f"{turns['changes']} of {turns['ops']}",
                fmt_share(turns["handovers"]),
            ]
        )
    pages["turns"] = table(
        ["primitive", "acquisitions by the other process than the previous one", "share"],
        rows,
    )

    rows = []
    for way in ("ctypes", "queue", "manager", "stdlib", *peers(run)):
        if not has_way(run, "locks-semaphore", way):
            continue
        t = run.per_op("locks-semaphore", way=way)
        rows.append([_semaphore_name(way), fmt_time(t), fmt_rate(1 / t)])
    processes = run.get("locks-semaphore", way="ctypes")["extra"]["processes"]
    pages["semaphore"] = table(
        ["primitive", "per acquisition", f"acquisitions, {processes} processes"], rows
    ) + shared_cores(run.machine["cores"], [processes])

    rows = []
    for hold in holds(run):
        rates = [run.rate("locks-hold", way=way, hold=hold) for way in HOLD_WAYS]
        ideal = fmt_rate(1 / hold) if hold else "-"
        rows.append([fmt_hold(hold), *map(fmt_rate, rates), ideal])
    pages["hold"] = table(
        [
            "time held",
            "`CtypesLock`",
            "`QueueLock`",
            "`ManagerLock`",
            "no lock",
            "one holder at a time: 1 / time held",
        ],
        rows,
    )

    pages["serialised"] = _serialised(run)

    pages["peers"] = peers_part(run, PEER_INTROS)
    pages["uncontended-plot"] = _uncontended_sentence(run)
    ctypes = _uncontended(run, "lock", "ctypes", "with")
    bare = _uncontended(run, "lock", "stdlib", "with")
    pair = _uncontended(run, "lock", "ctypes", "calls") / _uncontended(
        run, "lock", "stdlib", "calls"
    )
    handoff = run.per_op("locks-handoff", primitive="lock", way="ctypes")
    bare_handoff = (
        run.per_op("locks-handoff", primitive="lock", way="stdlib")
        if has_way(run, "locks-handoff", "stdlib")
        else None
    )
    robust = _uncontended(run, "lock", "robust", "with")
    pages["startup"] = startup_table(
        run, {way: label("lock", way) for way in ("ctypes", "robust", "queue", "manager")}
    )
    pages["goals"] = goals_table(
        [
            goal(
                ctypes / bare,
                "`CtypesLock`'s `with` costs at most 2x a bare `multiprocessing.Lock`'s",
                ctypes / bare <= 2,
            ),
            goal(
                robust / ctypes,
                "`RobustLock`'s `with` costs at most 4x `CtypesLock`'s: surviving "
                "a dead holder is cheap",
                robust / ctypes <= 4,
            ),
            goal(
                pair,
                "`CtypesLock` `acquire()` + `release()` costs at most 1.3x a bare "
                "`multiprocessing.Lock`'s (issue 12)",
                pair <= 1.3,
            ),
            goal(
                ctypes / bare,
                "`with CtypesLock()` costs at most 1.3x `with multiprocessing.Lock()` (issue 12)",
                ctypes / bare <= 1.3,
            ),
            *(
                [
                    [
                        "`CtypesLock` 2-process hand-off against a bare `multiprocessing.Lock`'s "
                        "(measured, no goal)",
                        fmt_ratio(handoff / bare_handoff),
                        "-",
                    ]
                ]
                if bare_handoff
                else []
            ),
        ],
    )
    return pages


def _semaphore_name(way: str) -> str:
    if way in CLASSES["semaphore"]:
        return f"`{CLASSES['semaphore'][way]}(2)`"
    if way == "stdlib":
        return f"bare `{STDLIB['semaphore']}(2)`"
    return "peer: `posix_ipc.Semaphore` (value 2)"


def _handoff_threads(run: Run) -> str:
    """Two threads of one process taking turns: `threading.Lock` and the bare lock."""
    if not threads_measured(run):
        return "The stored run is older than this measurement; `nox -s bench -- locks` makes it.\n"
    rows = []
    for way in THREAD_WAYS:
        t = run.per_op("locks-handoff", primitive="lock", way=way)
        rows.append([label("lock", way), fmt_time(t), fmt_rate(1 / t)])
    return table(["lock", "per acquisition", "acquisitions, 2 threads of one process"], rows)


def _uncontended_sentence(run: Run) -> str:
    """Which lock's `with` block is fastest in the uncontended plot, and the others against it."""
    # The locks processes share: threading.Lock is no choice for them.
    ways = [*ORDER, "stdlib", *peers(run)]
    times = {way: _uncontended(run, "lock", way, "with") for way in ways}
    fastest = min(times, key=times.__getitem__)
    text = (
        f"Among the locks that processes share, {label('lock', fastest)} has the fastest "
        "`with` block"
    )
    others = [w for w in ("ctypes", "stdlib", *peers(run)) if w != fastest]
    text += "; " + ", ".join(
        f"{label('lock', w).removeprefix('peer: ')} takes {fmt_ratio(times[w] / times[fastest])}"
        " its time"
        for w in others
    )
    text += (
        ". `CtypesLock` wraps the same kind of semaphore as the bare lock in Python code "
        "(the `with` form's timeout among it); the bare lock's `acquire` and `release` are "
        "its C semaphore's own, but its `with` goes through two Python methods of "
        "multiprocessing's wrapper, where posix_ipc's `with` is C both ways"
    )
    return text + ".\n"


def _uncontended_bars(run: Run) -> list[tuple[str, float, bool]]:
    """(label, µs per `with` block, a peer's?) for the uncontended plot, top to bottom."""
    bars = []
    for primitive in CLASSES:
        for way in [w for w in ORDER if w in CLASSES[primitive]]:
            bars.append((label(primitive, way), _uncontended(run, primitive, way, "with"), False))
    bars.append((label("lock", "stdlib"), _uncontended(run, "lock", "stdlib", "with"), False))
    for way in peers(run):
        bars.append((label("lock", way), _uncontended(run, "lock", way, "with"), True))
    if threads_measured(run):
        t = _uncontended(run, "lock", "threading", "with")
        bars.append((label("lock", "threading") + " (threads only)", t, False))
    return bars


def _serialised(run: Run) -> str:
    """Acquisitions per time held by the locks and by no lock, at the shortest and longest hold."""
    held = [h for h in holds(run) if h]
    processes = run.get("locks-hold", way="none", hold=held[-1])["extra"]["processes"]

    def per_hold(way: str, hold: float) -> float:
        return run.rate("locks-hold", way=way, hold=hold) * hold

    def span(hold: float) -> str:
        reached = sorted(per_hold(way, hold) for way in ("ctypes", "queue", "manager"))
        return f"{reached[0]:.2g} to {reached[-1]:.2g}"

    return (
        f"Held {fmt_time(held[-1])}, the three locks reach {span(held[-1])} acquisitions per "
        f"time held, and the same sections without a lock {per_hold('none', held[-1]):.2g}, "
        f"{processes} processes on this run's {cores(run.machine['cores'])}; held "
        f"{fmt_time(held[0])}, the locks reach {span(held[0])}.\n"
    )


def plots(run: Run) -> dict[str, Callable[[Any], None]]:
    held = [h for h in holds(run) if h]
    ms = [h * 1e3 for h in held]
    lines = [
        Line(label("lock", way), [run.rate("locks-hold", way=way, hold=h) for h in held])
        for way in HOLD_WAYS
    ]
    lines += [
        Line("1 / time held (one holder at a time)", [1 / h for h in held], "k--"),
        Line("2 / time held (2 processes, no lock)", [2 / h for h in held], "k:"),
    ]
    hold = log_plot(
        ms,
        lines,
        ticks={m: f"{m:g}" for m in ms},
        base=10,
        xlabel="time held inside the lock, ms",
        ylabel="acquisitions per second, 2 processes (higher is better)",
        title="Lock throughput by time held",
    )

    def uncontended(ax: Any) -> None:
        bars = _uncontended_bars(run)[::-1]
        names = [name.replace("`", "") for name, _, _ in bars]
        times = [t * 1e6 for _, t, _ in bars]
        # A peer's bar in the peers' grey, hatched: apart from shmref's.
        colors = [PEER_STYLES[0][:2] if peer else "C0" for _, _, peer in bars]
        hatches = ["//" if peer else "" for _, _, peer in bars]
        for name, t, color, hatch in zip(names, times, colors, hatches, strict=True):
            ax.barh(name, t, color=color, hatch=hatch)
        ax.set_xscale("log")
        ax.set_xlabel("µs per with block, one process (lower is better)")
        ax.set_title("Uncontended acquire + release")

    return {"hold": hold, "uncontended": uncontended}


def summary(run: Run) -> list[list[str]]:
    return summary_rows(
        run,
        "Lock",
        ORDER,
        {way: label("lock", way) for way in ORDER},
        seconds=lambda way: _uncontended(run, "lock", way, "with"),
        rate=lambda way: run.rate("locks-handoff", primitive="lock", way=way),
        uses={
            "ctypes": f"processes on one machine, without fairness: {_turns(run, 'ctypes')}",
            "robust": "a holder that may die, on Linux: the next one takes over and is told",
            "queue": f"fairness, or a dead holder's lock freed off Linux: {_turns(run, 'queue')}",
            "manager": "other hosts, with sections long enough to hide two round trips",
        },
    )


def _turns(run: Run, way: str) -> str:
    """The share of acquisitions by the other process, from the turns benchmark."""
    share = run.get("locks-turns", way=way)["extra"]["handovers"]
    return f"{fmt_share(share)} of acquisitions change hands"
