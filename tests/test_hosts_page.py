"""docs/hosts.md and the decision guide's several-hosts branch, against the model and the run.

The model (docs/_ext/report_hosts.py) is checked on costs made up here, where
the answer is known; the page's sentences about Nagle's algorithm and
batching, and the guide's table, against the stored run docs/bench/hosts.json.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

DOCS = Path(__file__).parent.parent / "docs"


@pytest.fixture(scope="module")
def ext() -> Iterator[dict[str, ModuleType]]:
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(DOCS / "_ext"))
        names = ["benchreport", "report_hosts", "choose", "figures"]
        yield {name: __import__(name) for name in names}


@pytest.fixture(scope="module")
def run(ext: dict[str, ModuleType]) -> Any:
    assert (DOCS / "bench" / "hosts.json").exists(), "nox -s bench -- hosts stores it"
    return ext["benchreport"].Run("hosts")


def says(sentence: str) -> None:
    text = " ".join((DOCS / "hosts.md").read_text().split())
    assert " ".join(sentence.split()) in text, f"hosts.md no longer says: {sentence!r}"


# ---------------------------------------------------------------- the model


def test_ways_with_the_same_trips_keep_their_order(ext: dict[str, ModuleType]) -> None:
    hosts = ext["report_hosts"]
    says("Two ways with the same round trips per call keep the same order at every RTT")
    a, b = hosts.Cost("a", 30e-6, 1.0), hosts.Cost("b", 50e-6, 1.0)
    assert hosts.crossing(a, b) is None
    assert hosts.winners([b, a]) == [hosts.Span("a", 0.0, None)]


def test_fewer_trips_win_from_the_crossing_on(ext: dict[str, ModuleType]) -> None:
    hosts = ext["report_hosts"]
    # a: 10 µs + 2 trips, b: 50 µs + 1 trip: equal at 40 µs of RTT.
    a, b = hosts.Cost("a", 10e-6, 2.0), hosts.Cost("b", 50e-6, 1.0)
    assert hosts.crossing(a, b) == pytest.approx(40e-6)
    spans = hosts.winners([a, b])
    assert [s.way for s in spans] == ["a", "b"]
    assert spans[0].high == pytest.approx(40e-6) and spans[1].high is None
    # Already ahead at 0 with fewer trips: no crossing above 0.
    c = hosts.Cost("c", 5e-6, 1.0)
    assert hosts.crossing(a, c) is None
    assert hosts.winners([a, c]) == [hosts.Span("c", 0.0, None)]
    # A tie at 0 goes to fewer trips, which stays ahead.
    assert hosts.cheapest([a, hosts.Cost("d", 10e-6, 1.0)], 0.0).way == "d"


def test_three_ways_give_three_spans(ext: dict[str, ModuleType]) -> None:
    hosts = ext["report_hosts"]
    # Cheapest at loopback, then the middle one, then the pipeline.
    fast = hosts.Cost("fast", 10e-6, 2.0)
    middle = hosts.Cost("middle", 30e-6, 1.0)
    pipe = hosts.Cost("pipe", 300e-6, 1 / 64)
    spans = hosts.winners([pipe, middle, fast])
    assert [s.way for s in spans] == ["fast", "middle", "pipe"]
    for span in spans:
        inside = span.low + (1e-6 if span.high is None else (span.high - span.low) / 2)
        assert hosts.cheapest([fast, middle, pipe], inside).way == span.way


# ---------------------------------------------------------------- the run


def test_the_run_counts_the_round_trips_the_model_uses(
    ext: dict[str, ModuleType], run: Any
) -> None:
    hosts = ext["report_hosts"]
    for primitive, call in hosts.CALLS:
        assert hosts.measured(run, primitive, call, "manager-tcp"), (primitive, call)
        for cost in hosts.costs(run, primitive, call):
            assert cost.trips == (2.0 if "+" in call else 1.0), (primitive, call, cost)
    if hosts.measured(run, "counter", "add", "redis-pipeline"):
        assert hosts.trips(run, "counter", "add", "redis-pipeline") == 1 / 64


def test_nagle_holds_only_the_large_managers_messages(run: Any) -> None:
    says(
        "redis-py sets it, and so does shmref on its Manager ways' TCP connections; the "
        "standard library's `multiprocessing.connection` does not."
    )
    # As each call's connection had it, in every benchmark that recorded it.
    nodelay: dict[str, set[bool | None]] = {}
    for b in run.data["benchmarks"]:
        if "nodelay" in b["extra"]:
            nodelay.setdefault(b["extra"]["way"], set()).add(b["extra"]["nodelay"])
    assert nodelay["manager-tcp"] == {True}, "shmref sets TCP_NODELAY"
    assert nodelay["manager-tcp-stdlib"] == {False}, "the standard library sets none"
    assert nodelay["manager"] == {None}  # a Unix socket
    assert nodelay["ctypes"] == nodelay["queue"] == {None}
    if "redis" in nodelay:  # with redis-server and redis-py
        assert nodelay["redis"] == {True}, "redis-py sets TCP_NODELAY"
    says("It writes a message of up to 16 KiB in one send, which Nagle never holds")
    says("the payload then waits for the header's acknowledgement, which the receiver may delay")

    def ratio(nbytes: int) -> float:
        return run.per_op("hosts-nagle", way="manager-tcp-stdlib", bytes=nbytes) / run.per_op(
            "hosts-nagle", way="manager-tcp", bytes=nbytes
        )

    # One send: TCP_NODELAY changes little. Header and payload apart, under
    # one segment: the payload waits for a delayed acknowledgement.
    assert ratio(4 * 1024) < 2
    assert ratio(32 * 1024) > 10


def _nagle(run: Any) -> list[dict[str, Any]]:
    return [b for b in run.data["benchmarks"] if b["group"] == "hosts-nagle"]


def test_a_pipeline_wins_as_the_rtt_grows(ext: dict[str, ModuleType], run: Any) -> None:
    says("Fewer round trips win as the RTT grows: a pipeline")
    hosts = ext["report_hosts"]
    found = hosts.costs(run, "counter", "add", [*hosts.ACROSS, "redis-pipeline"])
    if not any(c.way == "redis-pipeline" for c in found):
        pytest.skip("no Redis in the stored run: pip install shmref[redis] and redis-server")
    assert hosts.cheapest(found, hosts.RTTS[-1]).way == "redis-pipeline"


def test_the_guide_names_the_models_cheapest(ext: dict[str, ModuleType], run: Any) -> None:
    """Each cell of the several-hosts table is the way report_hosts.winners finds there."""
    hosts, choose = ext["report_hosts"], ext["choose"]
    text = choose.hosts(choose.Runs(DOCS / "bench", ext["benchreport"].Run))
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in text.splitlines()[2:]
        if line.startswith("|")
    ]
    assert len(rows) == len(hosts.CALLS)
    for (primitive, call), cells in zip(hosts.CALLS, rows, strict=True):
        assert cells[0] == hosts.call_label(primitive, call)
        spans = hosts.winners(hosts.costs(run, primitive, call))
        for rtt, cell in zip(hosts.RTTS, cells[1:], strict=False):
            (span,) = [s for s in spans if s.low <= rtt and (s.high is None or rtt < s.high)]
            assert cell.startswith(hosts.label(primitive, span.way) + ":"), (primitive, call, cell)


def test_the_flowchart_leads_several_hosts_to_the_branch(ext: dict[str, ModuleType]) -> None:
    choose = ext["choose"]
    chart = choose.flowchart()
    (label,) = re.findall(r'  across \[label="(.*)"\];', chart)
    assert label.replace("\\n", " ") == "Manager over TCP or Redis", chart
    assert '  hosts -> across [xlabel="yes"];' in chart
    assert "dashed" not in chart, "no box to come: other hosts are measured now"
    page = (DOCS / "choose.md").read_text()
    assert "## Several hosts\n" in page and "_generated/choose-hosts.md" in page
    assert "(#several-hosts)" in choose.top()
