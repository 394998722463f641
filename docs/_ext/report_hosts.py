"""What docs/hosts.md shows of a stored hosts run (see benchreport.py).

The run (tests/benchmarks/test_bench_hosts.py) times each primitive's
representative calls by every way, local and across hosts, on one machine,
the cross-host ways over loopback. The page's model of a call to another
host is its loopback time plus its round trips times the network's
round-trip time (:func:`across`); which way costs least at which round-trip
time is computed here (:func:`winners`), never typed, and the decision guide
(choose.py) asks the same functions.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from benchreport import Run, fmt_rate, fmt_ratio, fmt_share, fmt_time, table
from reportparts import processes, shared_cores

#: The ways' class names, by the primitive's suffix: ``Ctypes`` + ``Counter``.
PREFIX = {
    "ctypes": "Ctypes",
    "queue": "Queue",
    "manager": "Manager",
    "manager-tcp": "Manager",
    "redis": "Redis",
}
SUFFIX = {
    "counter": "Counter",
    "value": "Value",
    "arrays": "Array",
    "metrics": "Metrics",
    "locks": "Lock",
    "table": "Dict",
    "channel": "Channel",
}
#: Where each way's state is reached, after its class name.
WHERE = {"manager": "Unix socket", "manager-tcp": "TCP"}
#: The counter's extra ways: what batching (or no script) gives.
BATCHED = {
    "queue-batched": "`QueueCounter(batch=64)`",
    "redis-incrby": "redis-py `INCRBY`, no script",
    "redis-pipeline": "redis-py pipeline of 64 `INCRBY`",
}
LOCAL = ["ctypes", "queue", "manager"]
#: The ways that reach other hosts, shmref's own.
ACROSS = ["manager-tcp", "redis"]
#: The calls, in the page's order, as the page names them.
CALLS = {
    ("counter", "add"): "`add`",
    ("counter", "get"): "`get`",
    ("value", "set"): "`set`",
    ("value", "get"): "`get`",
    ("arrays", "read"): "`read` of 4 KiB",
    ("arrays", "write"): "`write` of 4 KiB",
    ("metrics", "add"): "`add` to a row",
    ("metrics", "snapshot"): "`snapshot` of 4 rows",
    ("locks", "acquire+release"): "`acquire` + `release`",
    ("table", "set"): "`d[key] = value`",
    ("table", "get"): "`get`",
    ("channel", "put+get"): "`put` + `get` of 64 B",
}
#: The network round-trip times of the model, in seconds.
RTTS = (0.1e-3, 0.5e-3, 2e-3)
#: A link's bandwidth for the page's bandwidth note, in bits per second.
LINK = 1e9


def label(primitive: str, way: str) -> str:
    """A way's name on the page: its class, and how it is reached."""
    if way in BATCHED:
        return BATCHED[way]
    name = f"`{PREFIX[way]}{SUFFIX[primitive]}`"
    return f"{name} ({WHERE[way]})" if way in WHERE else name


def call_label(primitive: str, call: str) -> str:
    return f"{SUFFIX[primitive]} {CALLS[primitive, call]}"


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1e3:g} ms"


def _bench(run: Run, primitive: str, call: str, way: str) -> dict[str, Any] | None:
    return run.find(f"hosts-{primitive}-{call}", way=way)


def measured(run: Run, primitive: str, call: str, way: str) -> bool:
    return _bench(run, primitive, call, way) is not None


def seconds(run: Run, primitive: str, call: str, way: str) -> float:
    """Seconds per call at loopback (the fastest round)."""
    return run.per_op(f"hosts-{primitive}-{call}", way=way)


def trips(run: Run, primitive: str, call: str, way: str) -> float:
    """The call's network round trips, as the run recorded them (counted there)."""
    value = run.get(f"hosts-{primitive}-{call}", way=way)["extra"]["trips"]
    if value is None:
        raise LookupError(f"{way} crosses no network: it has no round trips")
    return float(value)


# ---------------------------------------------------------------- the model


class Cost(NamedTuple):
    """A way's call, as the model sees it: loopback seconds plus trips x RTT."""

    way: str
    loopback: float
    trips: float

    def at(self, rtt: float) -> float:
        return self.loopback + self.trips * rtt


def costs(run: Run, primitive: str, call: str, ways: Iterable[str] = ACROSS) -> list[Cost]:
    """The model's costs of the call by each of ``ways`` the run measured."""
    return [
        Cost(way, seconds(run, primitive, call, way), trips(run, primitive, call, way))
        for way in ways
        if measured(run, primitive, call, way)
    ]


def across(cost: Cost, rtt: float) -> float:
    """Seconds per call to another host ``rtt`` seconds away, by the model."""
    return cost.at(rtt)


def crossing(a: Cost, b: Cost) -> float | None:
    """The RTT above 0 at which ``a`` and ``b`` cost the same, or None if there is none."""
    if a.trips == b.trips:
        return None
    rtt = (b.loopback - a.loopback) / (a.trips - b.trips)
    return rtt if rtt > 0 else None


def cheapest(candidates: list[Cost], rtt: float) -> Cost:
    """The candidate that costs least at ``rtt``; of two equal, the one with fewer round
    trips, which stays ahead as the RTT grows."""
    return min(candidates, key=lambda c: (c.at(rtt), c.trips))


class Span(NamedTuple):
    """The cheapest way from ``low`` to ``high`` seconds of RTT (``high`` None: no end)."""

    way: str
    low: float
    high: float | None


def winners(candidates: list[Cost]) -> list[Span]:
    """Which candidate costs least at each RTT from 0 up: the lower envelope of lines."""
    if not candidates:
        return []
    rtt, spans = 0.0, []
    while True:
        best = cheapest(candidates, rtt)
        later = [
            r
            for c in candidates
            if (r := crossing(best, c)) is not None and r > rtt and c is not best
        ]
        if not later:
            spans.append(Span(best.way, rtt, None))
            return spans
        nxt = min(later)
        spans.append(Span(best.way, rtt, nxt))
        rtt = nxt


def winner_sentence(run: Run, primitive: str, call: str) -> str:
    """Which of shmref's cross-host ways costs least for the call, at which RTT."""
    found = costs(run, primitive, call)
    name = call_label(primitive, call)
    if not found:
        return f"{name}: no way across hosts in this run."
    if len(found) == 1:
        (only,) = found
        missing = [label(primitive, w) for w in ACROSS if w != only.way]
        return (
            f"{name}: only {label(primitive, only.way)} ran ({', '.join(missing)} "
            "not in this run)."
        )
    spans = winners(found)
    if len(spans) == 1:
        (span,) = spans
        best = next(c for c in found if c.way == span.way)
        other = min((c for c in found if c is not best), key=lambda c: c.at(RTTS[-1]))
        gap = other.at(0) - best.at(0)
        share = gap / other.at(RTTS[-1])
        same = "the same round trips, so" if other.trips == best.trips else "and"
        return (
            f"{name}: {label(primitive, best.way)} at every round-trip time; {same} the "
            f"{fmt_time(gap)} it saves per call is {fmt_share(share)} of a "
            f"{label(primitive, other.way)} call at {fmt_ms(RTTS[-1])}."
        )
    parts = []
    for span in spans:
        where = (
            f"up to {fmt_ms(span.high)}"
            if span.low == 0 and span.high is not None
            else f"from {fmt_ms(span.low)}"
            + ("" if span.high is None else f" to {fmt_ms(span.high)}")
        )
        parts.append(f"{label(primitive, span.way)} {where}")
    return f"{name}: " + ", then ".join(parts) + "."


# ---------------------------------------------------------------- the tables


def _calls_table(run: Run) -> str:
    ways = [*LOCAL, *ACROSS]
    header = ["call", "round trips", *(_way_header(w) for w in ways)]
    rows = []
    for primitive, call in CALLS:
        cells = []
        for way in ways:
            cells.append(
                fmt_time(seconds(run, primitive, call, way))
                if measured(run, primitive, call, way)
                else "not in this run"
            )
        trip = _trips_cell(run, primitive, call)
        rows.append([call_label(primitive, call), trip, *cells])
    return table(header, rows)


def _way_header(way: str) -> str:
    kind = {"ctypes": "ctypes", "queue": "Queue", "manager": "Manager", "redis": "Redis"}
    return {"manager": "Manager, Unix socket", "manager-tcp": "Manager, TCP"}.get(
        way, kind.get(way, way)
    )


def _trips_cell(run: Run, primitive: str, call: str) -> str:
    found = {c.trips for c in costs(run, primitive, call)}
    return " or ".join(f"{t:g}" for t in sorted(found)) if found else ""


def _batching_table(run: Run) -> str:
    rows = []
    ways = ["queue", "queue-batched", "manager-tcp", "redis", "redis-incrby", "redis-pipeline"]
    for way in ways:
        if not measured(run, "counter", "add", way):
            continue
        bench = _bench(run, "counter", "add", way)
        assert bench is not None
        trip = bench["extra"]["trips"]
        rows.append(
            [
                label("counter", way),
                fmt_time(seconds(run, "counter", "add", way)),
                "none (one host)" if trip is None else _fraction(trip),
            ]
        )
    return table(["way", "one add at loopback", "round trips per add"], rows)


def _fraction(trips: float) -> str:
    return f"{trips:g}" if trips >= 1 else f"1/{round(1 / trips)}"


def _model_table(run: Run) -> str:
    header = ["call", "way", "loopback", "round trips", *(f"at {fmt_ms(r)} RTT" for r in RTTS)]
    rows = []
    for primitive, call in CALLS:
        ways = [*ACROSS, "redis-pipeline"] if (primitive, call) == ("counter", "add") else ACROSS
        for cost in costs(run, primitive, call, ways):
            rows.append(
                [
                    call_label(primitive, call),
                    label(primitive, cost.way),
                    fmt_time(cost.loopback),
                    _fraction(cost.trips),
                    *(fmt_time(across(cost, r)) for r in RTTS),
                ]
            )
    return table(header, rows)


def _winners(run: Run) -> str:
    lines = [f"- {winner_sentence(run, p, c)}" for p, c in CALLS]
    return "\n".join(lines) + "\n"


def _against_local(run: Run) -> str:
    """How a call across hosts compares with the local ways, for the counter's add."""
    ctypes_add = seconds(run, "counter", "add", "ctypes")
    manager = seconds(run, "counter", "add", "manager")
    parts = []
    for cost in costs(run, "counter", "add"):
        near = across(cost, RTTS[0])
        parts.append(
            f"{label('counter', cost.way)} at {fmt_ms(RTTS[0])} takes {fmt_time(near)} per add, "
            f"{fmt_ratio(near / ctypes_add)} a `CtypesCounter` add and "
            f"{fmt_ratio(near / manager)} a `ManagerCounter` on its Unix socket"
        )
    return "By the model, " + "; ".join(parts) + ".\n" if parts else ""


def _pipeline(run: Run) -> str:
    """What a pipeline gives the counter's add, at each RTT, against the script."""
    found = {c.way: c for c in costs(run, "counter", "add", ["redis", "redis-pipeline"])}
    if len(found) < 2:
        return ""
    script, pipe = found["redis"], found["redis-pipeline"]
    at = ", ".join(f"{fmt_ratio(script.at(r) / pipe.at(r))} at {fmt_ms(r)}" for r in RTTS)
    return (
        f"A pipeline of 64 `INCRBY` sends them in one round trip: per add it costs "
        f"{fmt_ratio(script.at(0) / pipe.at(0))} less than `RedisCounter.add` at loopback, and "
        f"{at} RTT, because the network's part is shared by 64 adds.\n"
    )


def _throughput_table(run: Run) -> str:
    calls = sorted(
        {
            (b["extra"]["primitive"], b["extra"]["call"])
            for b in run.data["benchmarks"]
            if b["group"].startswith("hosts-throughput-")
        },
        key=list(CALLS).index,
    )
    counts = sorted(
        {
            b["extra"]["processes"]
            for b in run.data["benchmarks"]
            if b["group"].startswith("hosts-throughput-")
        }
    )
    header = ["call", "way", *(processes(p) for p in counts)]
    rows = []
    for primitive, call in calls:
        for way in [*LOCAL, *ACROSS, *BATCHED]:
            rates = []
            for p in counts:
                group = f"hosts-throughput-{primitive}-{call}-{p}"
                rates.append(
                    fmt_rate(run.rate(group, way=way)) if run.find(group, way=way) else ""
                )
            if any(rates):
                rows.append([call_label(primitive, call), label(primitive, way), *rates])
    return table(header, rows) + shared_cores(run.machine["cores"], counts)


def _nagle(run: Run) -> tuple[str, str]:
    """The array writes by size over TCP, with TCP_NODELAY and without, and their sentence."""
    ways = {
        "manager": "`ManagerArray`, Unix socket",
        "manager-tcp": "`ManagerArray`, TCP (shmref sets TCP_NODELAY)",
        "manager-tcp-stdlib": "`ManagerArray`, TCP as the standard library leaves it",
        "redis": "`RedisArray`, TCP",
    }
    sizes = sorted(
        {b["extra"]["bytes"] for b in run.data["benchmarks"] if b["group"] == "hosts-nagle"}
    )
    rows = []
    for way, name in ways.items():
        if not run.find("hosts-nagle", way=way):
            continue
        nodelay = run.get("hosts-nagle", way=way)["extra"]["nodelay"]
        flag = "" if nodelay is None else ("set" if nodelay else "not set")
        rows.append(
            [
                name,
                flag,
                *(fmt_time(run.per_op("hosts-nagle", way=way, bytes=n)) for n in sizes),
            ]
        )
    header = ["way", "TCP_NODELAY on the client", *(f"write of {n // 1024} KiB" for n in sizes)]
    text = table(header, rows)

    def t(way: str, n: int) -> float:
        return run.per_op("hosts-nagle", way=way, bytes=n)

    said = []
    for n in sizes:
        tcp, unix = t("manager-tcp", n), t("manager", n)
        line = f"at {n // 1024} KiB, TCP takes {fmt_ratio(tcp / unix)} the Unix socket's time"
        if run.find("hosts-nagle", way="manager-tcp-stdlib", bytes=n):
            line += f" ({fmt_ratio(t('manager-tcp-stdlib', n) / unix)} without TCP_NODELAY)"
        said.append(line)
    sentence = "For a `ManagerArray` write, " + "; ".join(said) + ".\n"
    return text, sentence


def _load(run: Run) -> str:
    loads = [b["extra"]["load"] for b in run.data["benchmarks"] if "load" in b["extra"]]
    if not loads:
        return ""
    cores = run.machine["cores"]
    return (
        f"The machine was shared while this ran: its load average (processes wanting a core, "
        f"on {cores} cores) was {min(loads):.1f} to {max(loads):.1f}, median "
        f"{statistics.median(loads):.1f}, as each benchmark started. Other work slowed every "
        "way; compare ways by their ratios within this run, not with other runs.\n"
    )


def _bandwidth(run: Run) -> str:
    """What sending the payload takes on a link of LINK bits per second, against the call."""
    primitive, call = "arrays", "write"
    found = costs(run, primitive, call)
    if not found:
        return ""
    bench = _bench(run, primitive, call, found[0].way)
    assert bench is not None
    payload = bench["extra"]["payload"]
    wire = payload * 8 / LINK
    return (
        f"The model leaves out the time the bytes take on the wire: a {payload // 1024} KiB "
        f"array at {LINK / 1e9:g} Gbit/s adds {fmt_time(wire)} per call, "
        f"{wire / RTTS[0]:.0%} of a {fmt_ms(RTTS[0])} round trip; a call that moves "
        "megabytes is bound by bandwidth, not by round trips.\n"
    )


def pages(run: Run) -> dict[str, str]:
    nagle, nagle_sentence = _nagle(run)
    return {
        "load": _load(run),
        "calls": _calls_table(run),
        "against-local": _against_local(run),
        "batching": _batching_table(run) + "\n" + _pipeline(run),
        "model": _model_table(run),
        "winners": _winners(run),
        "throughput": _throughput_table(run),
        "nagle": nagle + "\n" + nagle_sentence,
        "bandwidth": _bandwidth(run),
    }


def plots(run: Run) -> dict[str, Callable[[Any], None]]:
    return {}


def summary(run: Run) -> list[list[str]]:
    """None: the index's summary is the primitive pages'; this run is a page of its own."""
    return []
