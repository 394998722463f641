"""The pages' own sentences about measured behaviour, checked against the stored runs.

Tables, and the sentences that carry numbers, are generated from
docs/bench/*.json by docs/_ext (see benchreport.py). What is left on the
pages is prose that says which way is faster, fair, or scales: each test here
quotes such a sentence as the page has it, so that rewording it leads here,
and fails when the stored run says otherwise. The locks page once said the
lock "changes hands in only a fraction" of acquisitions while its generated
table showed 99 % (issue 11).
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

DOCS = Path(__file__).parent.parent / "docs"


@pytest.fixture(scope="module")
def ext() -> Iterator[dict[str, ModuleType]]:
    """The report modules of docs/_ext, reading the stored runs."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(DOCS / "_ext"))
        names = ["benchreport", "report_arrays", "report_channel", "report_locks", "report_table"]
        yield {name: __import__(name) for name in names}


@pytest.fixture(scope="module")
def run(ext: dict[str, ModuleType]) -> Callable[[str], Any]:
    """A stored run by primitive, as the docs build reads it."""
    runs: dict[str, Any] = {}

    def load(name: str) -> Any:
        if name not in runs:
            runs[name] = ext["benchreport"].Run(name)
        return runs[name]

    return load


def says(page: str, sentence: str) -> None:
    """The page still has ``sentence`` (line breaks and indentation aside)."""
    text = " ".join((DOCS / page).read_text().split())
    assert " ".join(sentence.split()) in text, f"{page} no longer says: {sentence!r}"


# ---------------------------------------------------------------- index


def test_ctypes_ways_are_the_fastest(
    ext: dict[str, ModuleType], run: Callable[[str], Any]
) -> None:
    says("index.md", "Fastest, and limited to one machine and to fixed-size C types.")
    benchreport = ext["benchreport"]
    from claims import PAGES

    for name, report in benchreport.reports().items():
        if name not in PAGES:  # hosts.json: a page of its own, not in the index's summary
            continue
        fastest = [row[1] for row in report.summary(run(name)) if row[3] == "1.0x"]
        assert fastest, name
        assert all(re.match(r"`(Ctypes|Slot|Robust)", way) for way in fastest), (name, fastest)


# ---------------------------------------------------------------- counter


def test_slot_counter_scales_with_writers(run: Callable[[str], Any]) -> None:
    says(
        "counter.md",
        "`SlotCounter`. It scales with writers because they never touch the same memory",
    )
    counter = run("counter")
    assert counter.machine["cores"] >= 2, "a run on one core cannot show scaling"
    one, two = (counter.rate(f"counter-throughput-{p}", way="slots") for p in (1, 2))
    assert two >= 1.3 * one


def test_batching_makes_the_queue_counter_competitive(run: Callable[[str], Any]) -> None:
    says(
        "counter.md",
        "Batching is what makes message passing competitive for small updates "
        "(see the tables below)",
    )
    counter = run("counter")
    batched, single, ctypes = (
        counter.per_op("counter-add", way=w) for w in ("queue-batched", "queue", "ctypes")
    )
    # Competitive: within twice the shared-memory add, which one message per add is not.
    assert batched <= 2 * ctypes < single


def test_the_manager_value_and_lock_pattern_pays_its_round_trips(
    run: Callable[[str], Any],
) -> None:
    says("counter.md", "makes four round trips per add (acquire, read, write, release)")
    says("counter.md", "pattern: it does four round trips where one suffices")
    counter = run("counter")
    naive, manager = (counter.per_op("counter-add", way=w) for w in ("naive-manager", "manager"))
    assert naive >= 3 * manager


# ---------------------------------------------------------------- value


def test_queue_value_reads_are_round_trips(run: Callable[[str], Any]) -> None:
    says(
        "value.md",
        "every read is a round trip through the owner (compare its `get` with "
        "`ManagerValue.get` in the table above)",
    )
    value = run("value")
    queue, manager, ctypes = (
        value.per_op("value-get", way=w) for w in ("queue", "manager", "ctypes")
    )
    assert manager / 3 <= queue <= manager * 3
    assert queue >= 20 * ctypes


# ---------------------------------------------------------------- arrays


def test_arrays_rounds_and_sizes(ext: dict[str, ModuleType], run: Callable[[str], Any]) -> None:
    says(
        "arrays.md",
        "Every way is measured at every size, from 100 rounds for small arrays to 7 at 64 MiB",
    )
    arrays = run("arrays")
    trips = [b for b in arrays.data["benchmarks"] if b["group"] == "arrays-round-trip"]
    sizes = sorted({b["extra"]["bytes"] for b in trips})
    ways = {b["extra"]["way"] for b in trips}
    assert {(b["extra"]["way"], b["extra"]["bytes"]) for b in trips} == {
        (w, n) for w in ways for n in sizes
    }
    assert ext["report_arrays"].size_label(sizes[-1]) == "64 MiB"
    rounds = {n: {b["stats"]["rounds"] for b in trips if b["extra"]["bytes"] == n} for n in sizes}
    assert rounds[sizes[0]] == {100}
    assert rounds[sizes[-1]] == {7}


def test_a_plain_queue_put_costs_more_the_larger_the_array(run: Callable[[str], Any]) -> None:
    says(
        "arrays.md", "it is fine for small arrays and costly for large ones (see the table above)"
    )
    arrays = run("arrays")
    sizes = sorted(
        {
            b["extra"]["bytes"]
            for b in arrays.data["benchmarks"]
            if b["group"] == "arrays-round-trip"
        }
    )

    def plain_vs_ctypes(n: int) -> float:
        return arrays.per_op("arrays-round-trip", way="queue-plain", bytes=n) / arrays.per_op(
            "arrays-round-trip", way="ctypes", bytes=n
        )

    assert plain_vs_ctypes(sizes[-1]) >= 2 * plain_vs_ctypes(sizes[0])


# ---------------------------------------------------------------- metrics


def test_the_seqlock_snapshot_is_cheap(run: Callable[[str], Any]) -> None:
    says("metrics.md", "writers never wait, and the monitor's snapshot is cheap")
    metrics = run("metrics")
    for group in ("metrics-snapshot-2", "metrics-snapshot-busy"):
        ctypes = metrics.per_op(group, way="ctypes")
        assert all(ctypes < metrics.per_op(group, way=w) for w in ("queue", "manager")), group


def test_a_busy_writer_delays_the_queue_monitor(run: Callable[[str], Any]) -> None:
    says(
        "metrics.md",
        "if updates are not so frequent that they bury the monitor's requests "
        "(see the busy-writer column above)",
    )
    metrics = run("metrics")

    def busy_vs_idle(way: str) -> float:
        return metrics.per_op("metrics-snapshot-busy", way=way) / metrics.per_op(
            "metrics-snapshot-2", way=way
        )

    assert busy_vs_idle("queue") > busy_vs_idle("ctypes")


# ---------------------------------------------------------------- locks


def test_shared_memory_locks_change_hands_in_only_a_part(run: Callable[[str], Any]) -> None:
    says("locks.md", "the lock changes hands in only a part of the acquisitions")
    says("locks.md", "Do not count on fairness: a process looping on the lock can keep it")
    locks = run("locks")
    for way in ("ctypes", "robust"):
        assert locks.get("locks-turns", way=way)["extra"]["handovers"] < 0.5, way


def test_the_queue_lock_changes_hands_nearly_every_time(run: Callable[[str], Any]) -> None:
    says("locks.md", "so there it changes hands nearly every time")
    assert run("locks").get("locks-turns", way="queue")["extra"]["handovers"] >= 0.9


def test_the_semaphore_run_is_the_one_the_page_describes(run: Callable[[str], Any]) -> None:
    says(
        "locks.md",
        "The Semaphore(2) of the examples shared by 4 processes, each holding it for "
        "10 µs of work at a time",
    )
    locks = run("locks")
    for b in locks.data["benchmarks"]:
        if b["group"] == "locks-semaphore":
            extra = b["extra"]
            assert (extra["value"], extra["processes"], extra["hold"]) == (2, 4, 10e-6), extra


def test_ctypes_locks_are_far_cheaper(
    ext: dict[str, ModuleType], run: Callable[[str], Any]
) -> None:
    says("locks.md", "`CtypesSemaphore`. Far cheaper than the other ways (see the measurements)")
    locks = run("locks")
    for primitive in ext["report_locks"].CLASSES:
        times = {
            way: locks.per_op("locks-uncontended", primitive=primitive, way=way, style="with")
            for way in ("ctypes", "queue", "manager")
        }
        assert times["ctypes"] * 10 <= min(times["queue"], times["manager"]), primitive


def test_a_lock_allows_one_acquisition_per_time_held(
    ext: dict[str, ModuleType], run: Callable[[str], Any]
) -> None:
    says("locks.md", "cannot exceed one per time held, however many processes there are")
    locks = run("locks")
    for hold in [h for h in ext["report_locks"].holds(locks) if h]:
        for way in ("ctypes", "queue", "manager"):
            # 5 % for the clock: a round's first acquisition starts before it.
            assert locks.rate("locks-hold", way=way, hold=hold) * hold <= 1.05, (way, hold)


def test_shared_memory_contention_is_cheap(
    ext: dict[str, ModuleType], run: Callable[[str], Any]
) -> None:
    says("locks.md", "which keeps contention cheap but can make a waiter wait")
    locks = run("locks")
    for primitive in ext["report_locks"].CLASSES:
        if not locks.find("locks-handoff", primitive=primitive, way="ctypes"):
            continue
        times = {
            way: locks.per_op("locks-handoff", primitive=primitive, way=way)
            for way in ("ctypes", "queue", "manager")
        }
        assert times["ctypes"] * 10 <= min(times["queue"], times["manager"]), primitive


def test_without_a_lock_each_process_adds_as_many_again(
    ext: dict[str, ModuleType], run: Callable[[str], Any]
) -> None:
    says(
        "locks.md",
        "while without a lock each process with a core of its own adds up to as many again",
    )
    locks = run("locks")
    processes = locks.get("locks-hold", way="none", hold=0.0)["extra"]["processes"]
    assert locks.machine["cores"] >= processes, "a core each, or the sentence does not apply"
    # "once the time held dominates": the millisecond holds; at 1 and 10 µs the
    # loop around the section costs as much as the section.
    for hold in [h for h in ext["report_locks"].holds(locks) if h >= 1e-3]:
        # Two processes in parallel: near two sections per time held (20 % for the clock).
        assert locks.rate("locks-hold", way="none", hold=hold) * hold >= 0.8 * processes, hold


def test_the_cost_of_the_lock_matters_only_for_short_sections(
    ext: dict[str, ModuleType], run: Callable[[str], Any]
) -> None:
    says("locks.md", "The cost of the lock itself only matters for short sections")
    locks = run("locks")
    holds = ext["report_locks"].holds(locks)
    longest, shortest = max(holds), min(holds)
    ways = ("ctypes", "queue", "manager")
    for way in ways:
        # At the longest hold every way reaches the bound of one acquisition per time held.
        assert locks.rate("locks-hold", way=way, hold=longest) * longest >= 0.9, way
    # With empty sections the lock is all there is, and the ways differ by far.
    rates = {way: locks.rate("locks-hold", way=way, hold=shortest) for way in ways}
    assert max(rates["queue"], rates["manager"]) * 10 <= rates["ctypes"], rates


# ---------------------------------------------------------------- table


def test_ctypes_dict_reads_are_the_cheapest(
    ext: dict[str, ModuleType], run: Callable[[str], Any]
) -> None:
    says("table.md", "Reads take no lock and are the cheapest of the three (see the tables above)")
    table, report = run("table"), ext["report_table"]
    for way in ("queue", "manager"):
        assert table.per_op("table-get", way="ctypes") < table.per_op("table-get", way=way)
        for processes, keys in report.RUNS:
            ctypes, other = (
                table.rate("table-throughput-get", way=w, processes=processes, keys=keys)
                for w in ("ctypes", way)
            )
            assert ctypes > other, (way, processes, keys)


def test_ctypes_dict_writers_queue_on_one_lock(
    ext: dict[str, ModuleType], run: Callable[[str], Any]
) -> None:
    says("table.md", "writes share one lock, so heavy writing from many processes queues on it")
    table, report = run("table"), ext["report_table"]
    most = max(p for p, _ in report.RUNS)
    for op in ("set", "update"):
        group = f"table-throughput-{op}"
        one = table.rate(group, way="ctypes", processes=1, keys="distinct")
        assert table.rate(group, way="ctypes", processes=most, keys="shared") <= one, op


def test_queue_dict_calls_cost_ten_times_shared_memory(
    ext: dict[str, ModuleType], run: Callable[[str], Any]
) -> None:
    says("table.md", "more than ten times the cost of shared memory here")
    table = run("table")
    for op in ext["report_table"].OPS:
        queue = table.per_op(f"table-{op}", way="queue")
        assert queue > 10 * table.per_op(f"table-{op}", way="ctypes"), op


# ---------------------------------------------------------------- channel


def test_queue_channel_single_calls_are_slower_than_shared_memory(
    ext: dict[str, ModuleType], run: Callable[[str], Any]
) -> None:
    says("channel.md", "a round trip per message is what makes it slower than shared memory")
    channel, report = run("channel"), ext["report_channel"]
    for topology in report.TOPOLOGIES:
        for size in report.SIZES:
            queue = report.rate(channel, "queue", size, topology)
            assert queue < report.rate(channel, "ctypes", size, topology), (topology, size)


def test_manager_channel_single_calls_pay_a_round_trip_each(
    ext: dict[str, ModuleType], run: Callable[[str], Any]
) -> None:
    says(
        "channel.md",
        "always with `put_many`/`get_many`: each single call is a round trip to the server",
    )
    channel, report = run("channel"), ext["report_channel"]
    for topology in report.TOPOLOGIES:
        for size in report.SIZES:
            single = report.rate(channel, "manager", size, topology)
            assert report.rate(channel, "manager", size, topology, batched=True) > single


def test_queue_channel_pays_a_round_trip_the_bare_queue_does_not(
    ext: dict[str, ModuleType], run: Callable[[str], Any]
) -> None:
    says(
        "channel.md",
        "`QueueChannel` pays a round trip per call for what the bare Queue cannot give",
    )
    channel, report = run("channel"), ext["report_channel"]
    smallest = min(report.SIZES)
    assert report.rate(channel, "queue", smallest) < report.rate(channel, "mp-queue", smallest)


# ---------------------------------------------------------------- examples


def test_the_articles_clock_is_mostly_start_up_under_spawn(run: Callable[[str], Any]) -> None:
    says(
        "examples.md",
        "for the shared-memory way under spawn, more than nine tenths of the time from "
        "`start()` to `join()` goes to starting and ending the child process",
    )
    # The script's own figures: how many sets its child makes between start() and join().
    spec = importlib.util.spec_from_file_location(
        "queue_vs_value", DOCS / "examples" / "queue_vs_value.py"
    )
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)  # only definitions: the script has a main guard
    start_up = run("counter").per_op("counter-startup", way="process", method="spawn")
    sets = example.ROUNDS * example.SETS * run("value").per_op("value-set", way="ctypes")
    assert start_up / (start_up + sets) > 0.9, (start_up, sets)
