"""The docs' numbers come from the stored runs: change a run, the page changes."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

EXT = Path(__file__).parent.parent / "docs" / "_ext"


@pytest.fixture
def benchreport(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The report generator, reading and writing copies under tmp_path."""
    monkeypatch.syspath_prepend(str(EXT))
    import benchreport

    stored = tmp_path / "bench"
    shutil.copytree(benchreport.STORED, stored)
    # tmp_path stands for docs/, which store() names its output relative to.
    monkeypatch.setattr(benchreport, "DOCS", tmp_path)
    monkeypatch.setattr(benchreport, "STORED", stored)
    monkeypatch.setattr(benchreport, "GENERATED", tmp_path / "_generated")
    return benchreport


def _scale(path: Path, group: str, way: str, factor: float) -> None:
    run = json.loads(path.read_text())
    for b in run["benchmarks"]:
        if b["group"] == group and b["extra"].get("way") == way:
            for key in ("min", "median", "mean", "max"):
                b["stats"][key] *= factor
    path.write_text(json.dumps(run))


def _line(page: Path, start: str) -> str:
    return next(line for line in page.read_text().splitlines() if start in line)


def test_every_stored_run_renders(benchreport: ModuleType) -> None:
    benchreport.render(plots=False)
    pages = sorted(p.name for p in benchreport.GENERATED.iterdir())
    assert "summary.md" in pages
    for stored in benchreport.STORED.glob("*.json"):
        assert any(p.startswith(f"{stored.stem}-") for p in pages), stored.stem


def test_changing_the_run_changes_the_page(benchreport: ModuleType) -> None:
    benchreport.render(["counter"], plots=False)
    add = benchreport.GENERATED / "counter-add.md"
    goals = benchreport.GENERATED / "counter-goals.md"
    before = add.read_text()
    goal_before = _line(goals, "`CtypesCounter.add` costs")

    # Make CtypesCounter.add ten times slower in the stored run.
    _scale(benchreport.STORED / "counter.json", "counter-add", "ctypes", 10.0)
    benchreport.render(["counter"], plots=False)

    assert add.read_text() != before
    goal_after = _line(goals, "`CtypesCounter.add` costs")
    assert goal_after != goal_before
    assert goal_after.endswith("| **not met** |")


def test_machine_is_stored_with_the_run(benchreport: ModuleType) -> None:
    for stored in benchreport.STORED.glob("*.json"):
        machine = json.loads(stored.read_text())["machine"]
        assert machine["cpu"] and machine["cores"] and machine["python"]
        assert machine["start_method"] in ("fork", "forkserver", "spawn")


def _raw(path: Path, **machine_info: Any) -> Path:
    """A --benchmark-json file of one benchmark, as pytest-benchmark writes it."""
    stats = {"min": 1e-3, "median": 1e-3, "mean": 1e-3, "max": 1e-3, "stddev": 0.0, "rounds": 3}
    benchmark = {
        "name": "test_add[ctypes]",
        "group": "counter-add",
        "extra_info": {"way": "ctypes", "ops": 1000},
        "stats": stats,
    }
    raw = {
        "machine_info": {
            "cpu": {"brand_raw": "Test CPU"},
            "python_implementation": "CPython",
            "python_version": "3.11.0",
            **machine_info,
        },
        "commit_info": {"id": "0123456789abcdef", "dirty": False},
        "datetime": "2025-01-01T00:00:00",
        "version": "5.0.0",
        "benchmarks": [benchmark],
    }
    path.write_text(json.dumps(raw))
    return path


def test_store_keeps_the_start_method_and_cores_the_run_recorded(
    benchreport: ModuleType, tmp_path: Path
) -> None:
    # A start method and core counts that this process is unlikely to have,
    # so that a value taken from the storing process would show.
    raw = _raw(tmp_path / "raw.json", start_method="spawn", cpu_count={"logical": 96, "usable": 3})
    machine = json.loads(benchreport.store("fake", str(raw)).read_text())["machine"]

    assert machine["start_method"] == "spawn"
    assert (machine["cores"], machine["logical_cores"]) == (3, 96)
    assert "from_storing_process" not in machine
    line = benchreport.machine_line(benchreport.Run("fake"))
    assert "(3 of 96 cores usable" in line
    assert "start method `spawn`" in line
    assert "did not record" not in line


def test_store_marks_what_the_run_did_not_record(benchreport: ModuleType, tmp_path: Path) -> None:
    # A raw file from before tests/benchmarks/conftest.py recorded these.
    raw = _raw(tmp_path / "raw.json")
    machine = json.loads(benchreport.store("fake", str(raw)).read_text())["machine"]

    assert machine["from_storing_process"] == ["cores", "logical_cores", "start_method"]
    assert machine["start_method"] == multiprocessing.get_start_method(allow_none=False)
    assert machine["logical_cores"] == os.cpu_count()
    line = benchreport.machine_line(benchreport.Run("fake"))
    assert "did not record its start method and core count" in line


def test_the_benchmark_hook_records_this_process(tmp_path: Path) -> None:
    from tests.benchmarks.conftest import pytest_benchmark_update_machine_info

    machine_info: dict[str, Any] = {}
    pytest_benchmark_update_machine_info(config=None, machine_info=machine_info)  # type: ignore[arg-type]
    assert machine_info["start_method"] == multiprocessing.get_start_method(allow_none=False)
    usable, logical = machine_info["cpu_count"]["usable"], machine_info["cpu_count"]["logical"]
    assert logical == os.cpu_count()
    assert 1 <= usable <= logical


@pytest.fixture(autouse=True)
def _forget_report_modules() -> None:
    # Each test imports the generator afresh, against its own copies.
    modules = ("benchreport", "reportparts", "claims", "figures", "verdicts")
    for name in [m for m in sys.modules if m in modules or m.startswith("report_")]:
        del sys.modules[name]


# ---------------------------------------------------------------- the index summary


def _summary(benchreport: ModuleType) -> tuple[list[list[str]], str]:
    """The summary table's rows, split into cells, and the text under it."""
    benchreport.render(plots=False)
    lines = (benchreport.GENERATED / "summary.md").read_text().splitlines()
    rows = [line.strip("|").split(" | ") for line in lines if line.startswith("| [")]
    return [[cell.strip() for cell in row] for row in rows], lines[-1]


def _menu() -> list[str]:
    """The pages of index.md's toctree, in the menu's order."""
    index = (EXT.parent / "index.md").read_text()
    block = index.split("```{toctree}", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.splitlines() if line.strip() and ":" not in line]


def test_summary_rows_are_in_menu_order(benchreport: ModuleType) -> None:
    rows, _ = _summary(benchreport)
    pages = list(dict.fromkeys(row[0].split("(")[1].removesuffix(".md)") for row in rows))
    assert pages == [page for page in _menu() if page in pages]
    assert pages != sorted(pages)  # the file order would not do


def test_summary_columns_have_one_unit_each(benchreport: ModuleType) -> None:
    rows, _ = _summary(benchreport)
    header = benchreport.SUMMARY_HEADER
    assert all(len(row) == len(header) for row in rows)
    units = {
        "one operation": r"[\d.]+ (s|ms|µs|ns)( \(.+\))?",
        "vs fastest": r"[\d.]+x",
        f"operations per second, {benchreport.SUMMARY_PROCESSES} processes": r"[\d.]+ [Mk]?/s",
    }
    for column, unit in units.items():
        cells = [row[header.index(column)] for row in rows]
        assert all(re.fullmatch(unit, cell) for cell in cells), (column, cells)


def test_summary_array_row_shows_the_access_its_page_recommends(benchreport: ModuleType) -> None:
    rows, _ = _summary(benchreport)
    arrays = [" ".join(row) for row in rows if "(arrays.md)" in row[0]]
    assert arrays
    assert all("readinto" in row and "a[i]" not in row for row in arrays)


def test_summary_says_each_way_what_it_is_for(benchreport: ModuleType) -> None:
    rows, _ = _summary(benchreport)
    assert all(row[-1] for row in rows)


def test_summary_use_cells_take_their_figures_from_the_run(benchreport: ModuleType) -> None:
    def slot_counter(rows: list[list[str]]) -> str:
        return next(row[-1] for row in rows if row[1] == "`SlotCounter`")

    before = slot_counter(_summary(benchreport)[0])
    _scale(benchreport.STORED / "counter.json", "counter-throughput-2", "slots", 2.0)
    after = slot_counter(_summary(benchreport)[0])
    assert re.search(r"[\d.]+x the adds per second", before)
    assert after != before


def test_summary_states_the_stored_core_count(benchreport: ModuleType) -> None:
    # A core count no machine here has, and fewer cores than the column's processes.
    for stored in benchreport.STORED.glob("*.json"):
        run = json.loads(stored.read_text())
        run["machine"]["cores"] = 1
        stored.write_text(json.dumps(run))
    _, under = _summary(benchreport)
    assert "1 core (every run)" in under
    assert f"{benchreport.SUMMARY_PROCESSES} processes ran on 1 core" in under


# ---------------------------------------------------------------- sentences from the run


def test_the_batching_sentence_follows_the_run(benchreport: ModuleType) -> None:
    batching = benchreport.GENERATED / "channel-batching.md"
    benchreport.render(["channel"], plots=False)
    assert "below 1, a batch of large fresh buffers" in batching.read_text()

    # Batched 1 MiB messages through CtypesChannel ten times as fast: no gain is below 1 now.
    path = benchreport.STORED / "channel.json"
    run = json.loads(path.read_text())
    for b in run["benchmarks"]:
        e = b["extra"]
        # .get: the start-up rows have no size or batch.
        if (e["way"], e.get("size"), e.get("batch", 1) > 1) == ("ctypes", 1024 * 1024, True):
            for key in ("min", "median", "mean", "max"):
                b["stats"][key] /= 10
    path.write_text(json.dumps(run))
    benchreport.render(["channel"], plots=False)
    assert "below 1" not in batching.read_text()


# ---------------------------------------------------------------- peers


def _set_peer_version(path: Path, peer: str, version: str) -> None:
    run = json.loads(path.read_text())
    for b in run["benchmarks"]:
        if b["extra"].get("peer") == peer:
            b["extra"]["version"] = version
    path.write_text(json.dumps(run))


def _drop_way(path: Path, way: str) -> None:
    run = json.loads(path.read_text())
    run["benchmarks"] = [b for b in run["benchmarks"] if b["extra"].get("way") != way]
    path.write_text(json.dumps(run))


def test_a_peer_is_introduced_with_the_version_its_run_measured(
    benchreport: ModuleType,
) -> None:
    stored = benchreport.STORED / "channel.json"
    _set_peer_version(stored, "faster-fifo", "9.8.7")
    benchreport.render(["channel"], plots=False)
    line = _line(benchreport.GENERATED / "channel-peers.md", "faster-fifo")
    assert "9.8.7, measured here" in line


def test_a_run_without_a_peer_renders_and_says_how_to_install_it(
    benchreport: ModuleType,
) -> None:
    stored = benchreport.STORED / "counter.json"
    _drop_way(stored, "atomics")
    benchreport.render(["counter"], plots=False)
    peers = (benchreport.GENERATED / "counter-peers.md").read_text()
    assert "pip install shmref[peers]" in peers
    assert "atomics" not in (benchreport.GENERATED / "counter-throughput.md").read_text()
    goals = _line(benchreport.GENERATED / "counter-goals.md", "20x atomics")
    assert "pip install shmref[peers]" in goals


def test_the_peer_goal_and_sentence_follow_the_run(benchreport: ModuleType) -> None:
    stored = benchreport.STORED / "channel.json"
    benchreport.render(["channel"], plots=False)
    # faster-fifo made 1000 times slower: CtypesChannel wins every cell.
    _scale(stored, "channel-throughput", "faster-fifo", 1000.0)
    benchreport.render(["channel"], plots=False)
    goal = _line(benchreport.GENERATED / "channel-goals.md", "faster-fifo")
    assert goal.endswith("| met |"), goal
    text = (benchreport.GENERATED / "channel-vs-peers.md").read_text()
    assert "in 12 of its 12 cells" in text
    plot = (benchreport.GENERATED / "channel-throughput-plot.md").read_text()
    assert "more messages per second than faster-fifo's raw bytes at every size" in plot
    # faster-fifo 1000 times faster than measured: it wins every cell.
    _scale(stored, "channel-throughput", "faster-fifo", 1e-6)
    benchreport.render(["channel"], plots=False)
    goal = _line(benchreport.GENERATED / "channel-goals.md", "faster-fifo")
    assert goal.endswith("| **not met** |"), goal
    assert "in 0 of its 12 cells" in (benchreport.GENERATED / "channel-vs-peers.md").read_text()


# ---------------------------------------------------------------- channel: allocator

MIB = 1024 * 1024
KEEP = {"MALLOC_MMAP_THRESHOLD_": 32 * MIB, "MALLOC_TRIM_THRESHOLD_": 128 * MIB}


def _allocator_rows(path: Path, gains: dict[str, tuple[bool, float]]) -> None:
    """Replace the run's rows with glibc keeping what it frees.

    ``gains[way] = (from_single, factor)``: the 1 MiB batched row of each
    topology (or, with ``from_single``, the single-call row), ``factor``
    times faster.
    """
    run = json.loads(path.read_text())
    run["benchmarks"] = [b for b in run["benchmarks"] if b["group"] != "channel-allocator"]
    added = []
    for b in run["benchmarks"]:
        e = b["extra"]
        if b["group"] != "channel-throughput" or e["size"] != MIB or e["way"] not in gains:
            continue
        from_single, factor = gains[e["way"]]
        if from_single != (e["batch"] == 1):
            continue
        row = json.loads(json.dumps(b))
        row["group"] = "channel-allocator"
        row["extra"].update(allocator="keep", settings=KEEP, batch=4)
        for key in ("min", "median", "mean", "max"):
            row["stats"][key] /= factor
        added.append(row)
    run["benchmarks"] += added
    path.write_text(json.dumps(run))


def test_the_allocator_sentence_follows_the_run(benchreport: ModuleType) -> None:
    stored = benchreport.STORED / "channel.json"
    page = benchreport.GENERATED / "channel-allocator.md"
    # Tuned batches as fast as single calls: all of the loss was the allocator's.
    _allocator_rows(
        stored,
        {"ctypes": (True, 1.0), "faster-fifo": (False, 1.0)},
    )
    benchreport.render(["channel"], plots=False)
    text = page.read_text()
    if "lose nothing against single calls" in text:
        pytest.fail("the stored run has 1 MiB batches no slower than single calls: rewrite this")
    assert "All of what 1 MiB batches lose against single calls" in text
    assert "which is 1.0x to 1.0x its single calls' rate" in text
    assert "`MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=134217728`" in text
    assert "holds on to up to 128 MiB of freed memory" in text
    assert "faster-fifo's raw bytes under the same settings" in text

    # The tuned allocator gains nothing, and faster-fifo was not measured with it.
    _allocator_rows(stored, {"ctypes": (False, 1.0)})
    benchreport.render(["channel"], plots=False)
    text = page.read_text()
    assert "The allocator is not what slows large batches here" in text
    assert "move 1.0x with 1x1 and 1.0x with 2x2" in text
    assert "faster-fifo" not in text

    # A run without the tuned rows (another C library) says so.
    _allocator_rows(stored, {})
    benchreport.render(["channel"], plots=False)
    assert "not in this run" in page.read_text()


#: The ways each primitive's ``<primitive>-startup`` group times (tests/benchmarks/).
STARTUP_WAYS = {
    "value": ["ctypes", "queue", "manager"],
    "arrays": ["ctypes", "segment", "queue", "manager"],
    "metrics": ["ctypes", "ctypes-lock", "queue", "manager"],
    "locks": ["ctypes", "robust", "queue", "manager"],
    "channel": ["ctypes", "queue", "manager"],
    "table": ["ctypes", "queue", "manager"],
}


@pytest.mark.parametrize("primitive", list(STARTUP_WAYS))
def test_the_startup_table_follows_the_run(benchreport: ModuleType, primitive: str) -> None:
    """A run without start-up says so; with it, each way's own figure, in the run's order."""
    path = benchreport.STORED / f"{primitive}.json"
    run = json.loads(path.read_text())
    group = f"{primitive}-startup"
    run["benchmarks"] = [b for b in run["benchmarks"] if b["group"] != group]
    path.write_text(json.dumps(run))
    benchreport.render([primitive], plots=False)
    page = benchreport.GENERATED / f"{primitive}-startup.md"
    assert "Not in this stored run" in page.read_text()
    assert f"`nox -s bench -- {primitive}`" in page.read_text()

    # A figure per way no other way has: 1.1 ms, 2.2 ms, ...
    method = run["machine"]["start_method"]
    timed = {way: (i + 1) * 1.1e-3 for i, way in enumerate(STARTUP_WAYS[primitive])}
    run["benchmarks"] += [
        {
            "group": group,
            "name": f"test_startup[{way}]",
            "extra": {"way": way, "method": method, "ops": 1},
            "stats": dict.fromkeys(("min", "median", "mean", "max"), seconds),
        }
        for way, seconds in timed.items()
    ]
    path.write_text(json.dumps(run))
    benchreport.render([primitive], plots=False)
    text = page.read_text()
    assert f"start method `{method}`" in text
    rows = [line.split(" | ")[-1].rstrip(" |") for line in text.splitlines()[3:]]
    assert rows == [f"{s * 1e3:.3g} ms" for s in timed.values()]


# ---------------------------------------------------------------- arrays: a Queue.put's parts


def _copy_way(path: Path, group: str, way: str, to: str, factor: float) -> None:
    """Add ``to`` to the run: ``way``'s benchmarks in ``group``, ``factor`` times as long."""
    run = json.loads(path.read_text())
    for b in [b for b in run["benchmarks"] if b["group"] == group and b["extra"]["way"] == way]:
        stats = {k: v * factor if k != "rounds" else v for k, v in b["stats"].items()}
        extra = {**b["extra"], "way": to}
        run["benchmarks"].append(
            {**b, "name": b["name"].replace(way, to), "extra": extra, "stats": stats}
        )
    path.write_text(json.dumps(run))


def _cells(page: Path) -> list[list[str]]:
    lines = [line for line in page.read_text().splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines]


def test_the_put_parts_table_follows_the_run(benchreport: ModuleType) -> None:
    stored = benchreport.STORED / "arrays.json"
    parts = {"pickle-dumps": 0.5, "transmit": 0.25, "pickle-loads": 0.25}
    for way in parts:
        _drop_way(stored, way)
    benchreport.render(["arrays"], plots=False)
    page = benchreport.GENERATED / "arrays-put-parts.md"
    assert "Not in this run" in page.read_text()
    assert "`nox -s bench -- arrays`" in page.read_text()

    # The parts a half and two quarters of the stored pickle round trip: their sum is it.
    for way, share in parts.items():
        _copy_way(stored, "arrays-reference", "pickle", way, share)
    benchreport.render(["arrays"], plots=False)
    header, *rows = _cells(page)
    assert (header[1], header[3]) == ("`pickle.dumps`", "`pickle.loads`")
    assert "pipe" in header[2]
    references = _cells(benchreport.GENERATED / "arrays-round-trip-references.md")
    pickle = references[0].index("pickle `dumps` + `loads`, numpy array")
    trips = _cells(benchreport.GENERATED / "arrays-round-trip.md")
    queue = trips[0].index("`Queue.put` / `get` of the numpy array")
    assert [r[0] for r in rows] == [r[0] for r in references[1:]]
    assert [r[4] for r in rows] == [r[pickle] for r in references[1:]]
    assert [r[5] for r in rows] == [r[queue] for r in trips[1:]]
    assert all(r[1] != r[2] for r in rows)  # each part its own figure
