"""The decision guide: its answers agree with the stored runs, and say so only where they do."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

# The report generator reading copies of the stored runs, forgotten after each test.
from tests.test_benchreport import _scale
from tests.test_claims import _forget_report_modules, _table, docs

__all__ = ["_forget_report_modules", "docs"]


def _guide(docs: ModuleType) -> tuple[ModuleType, list[Any]]:
    import choose

    return choose, choose.evaluate(choose.Runs(docs.STORED, docs.Run))


def _contract(docs: ModuleType) -> Path:
    """The copy of the stored run of ``nox -s peers``."""
    return docs.STORED / "contract" / "peers.json"


def _render(docs: ModuleType, out: Path) -> dict[str, str]:
    import choose
    import peers

    runs = choose.Runs(docs.STORED, docs.Run)
    return choose.render(out, runs, peers.stored(_contract(docs)))  # type: ignore[no-any-return]


def test_every_primitive_has_a_choice(docs: ModuleType) -> None:
    import choose
    from claims import PAGES

    assert {c.primitive for c in choose.CHOICES} == set(PAGES)
    assert set(choose.COSTS) == set(PAGES)


def test_every_cheapest_choice_is_the_measured_cheapest(docs: ModuleType) -> None:
    """Fails when a stored run makes another way cheaper than the one a row recommends."""
    choose, rows = _guide(docs)
    checked = 0
    for row in rows:
        assert row is not None, "every primitive has a stored run"
        basis = row.choice.basis
        if not isinstance(basis, choose.Cheapest):
            continue
        assert row.choice.way in basis.among, row.choice
        for measure, seconds in row.measured:
            assert set(seconds) == set(basis.among)
            cheapest = min(seconds, key=seconds.__getitem__)
            assert cheapest == row.choice.way, (row.choice.when, measure.what, seconds)
            checked += 1
    assert checked >= len(choose.CHOICES)


def test_the_page_says_cheapest_only_where_the_run_agrees(docs: ModuleType) -> None:
    choose, _ = _guide(docs)
    out = docs.GENERATED
    _render(docs, out)
    for primitive in choose.COSTS:
        for cells in _table(out / f"choose-{primitive}.md"):
            assert not cells[-1].startswith("**not the cheapest"), (primitive, cells)

    # SlotCounter 100 times slower with 4 writers: its row must stop saying "cheapest".
    _scale(docs.STORED / "counter.json", "counter-throughput-4", "slots", 100.0)
    choose, rows = _guide(docs)
    (row,) = [r for r in rows if r is not None and r.choice.way == "slots"]
    assert [way for _, way in row.cheaper()] == ["queue-batched"]
    _render(docs, out)
    (cells,) = [c for c in _table(out / "choose-counter.md") if c[1] == "`SlotCounter`"]
    assert cells[-1].startswith("**not the cheapest in this run**: `QueueCounter(batch=64)`")


def test_the_charts_have_a_box_per_choice_and_draw(docs: ModuleType, tmp_path: Path) -> None:
    """The top chart has a box per primitive, whose section's chart has a box per way."""
    choose, _ = _guide(docs)
    from claims import PAGES

    written = _render(docs, tmp_path)
    page = (Path(__file__).resolve().parent.parent / "docs" / "choose.md").read_text()
    for primitive, title in PAGES.items():
        assert f"### {title}\n" in page, "a link under the top chart finds its section"
        assert f'  {primitive} [label="' in written["choose.dot"]
        assert f"[{title}](#{choose.section(primitive)})" in written["choose-flowchart.md"]
        assert f"/_generated/choose-{primitive}.dot" in written[f"choose-{primitive}.md"]
    for i, choice in enumerate(choose.CHOICES):
        assert f"  when{i} -> way{i};" in written[f"choose-{choice.primitive}.dot"]
    charts = sorted(name for name in written if name.endswith(".dot"))
    assert len(charts) == 1 + len(PAGES)
    import peers

    peer_rows = choose.evaluate_peers(
        choose.Runs(docs.STORED, docs.Run), peers.stored(_contract(docs))
    )
    for i, row in enumerate(peer_rows):
        chart = written[f"choose-{row.peer.primitive}.dot"]
        box = f"  peer{i} [label="
        assert (box in chart) == row.better(), ("a box for each peer that is the better pick", row)
        if row.better():
            assert f"fillcolor={choose.PEER_FILL}];" in chart.split(box, 1)[1].split("\n", 1)[0]
    if shutil.which("dot") is None:
        pytest.skip("graphviz's dot is not installed (apt-get install graphviz): not drawn")
    for name in charts:
        drawn = subprocess.run(
            ["dot", "-Tsvg", str(tmp_path / name)], capture_output=True, text=True
        )
        assert drawn.returncode == 0, (name, drawn.stderr)
        assert "<svg" in drawn.stdout, name
        # Narrow enough to read on a phone: its width in points, 72 to the inch.
        width = float(drawn.stdout.split('<svg width="', 1)[1].split("pt", 1)[0])
        assert width <= choose.NARROW, (name, width)


def test_a_missing_run_leaves_its_rows_out(docs: ModuleType) -> None:
    (docs.STORED / "channel.json").unlink()
    choose, rows = _guide(docs)
    missing = [c for c, r in zip(choose.CHOICES, rows, strict=True) if r is None]
    assert missing and {c.primitive for c in missing} == {"channel"}
    written = _render(docs, docs.GENERATED)
    assert "nox -s bench -- channel" in written["choose-channel.md"]


def _startup_cells(docs: ModuleType, primitive: str) -> dict[str, str]:
    """The start-up cell of each of the primitive's rows in its rendered table, by way."""
    import choose

    _render(docs, docs.GENERATED)
    ways = [c.way for c in choose.CHOICES if c.primitive == primitive]
    cells = _table(docs.GENERATED / f"choose-{primitive}.md")[: len(ways)]
    return {way: row[4] for way, row in zip(ways, cells, strict=True)}


def test_each_choice_gets_its_own_start_up_where_its_run_times_it(docs: ModuleType) -> None:
    """A copy of locks.json without ``locks-startup`` borrows the Counter's; with it, its own."""
    path = docs.STORED / "locks.json"
    run = json.loads(path.read_text())
    run["benchmarks"] = [b for b in run["benchmarks"] if b["group"] != "locks-startup"]
    path.write_text(json.dumps(run))
    old = _startup_cells(docs, "locks")
    assert all(cell.endswith(" (Counter's)") for cell in old.values()), old

    # Times no Counter's way has, so the cells can only be read from these.
    timed = {"ctypes": 1.11e-3, "robust": 2.22e-3, "queue": 3.33e-3, "manager": 4.44e-3}
    method = run["machine"]["start_method"]
    run["benchmarks"] += [
        {
            "group": "locks-startup",
            "name": f"test_startup[{way}]",
            "extra": {"way": way, "method": method, "ops": 1, "primitive": "lock"},
            "stats": dict.fromkeys(("min", "median", "mean", "max"), seconds),
        }
        for way, seconds in timed.items()
    ]
    path.write_text(json.dumps(run))
    assert _startup_cells(docs, "locks") == {
        way: f"{timed[way] * 1e3:.3g} ms" for way in ("ctypes", "robust", "queue")
    }


def test_section_anchors_are_the_ones_sphinx_makes(docs: ModuleType) -> None:
    nodes = pytest.importorskip(
        "docutils.nodes", reason="docutils is not installed: pip install -e .[docs]"
    )
    import choose

    for primitive, title in choose.PAGES.items():
        assert choose.section(primitive) == nodes.make_id(title)


# ---------------------------------------------------------------- the peers


def _per_op(run: dict[str, Any], group: str, **extra: Any) -> float:
    """Seconds per operation, read straight from a stored run's JSON."""
    (b,) = [
        b
        for b in run["benchmarks"]
        if b["group"] == group and all(b["extra"].get(k) == v for k, v in extra.items())
    ]
    return float(b["stats"]["median"]) / b["extra"]["ops"]


def _peer_rows(docs: ModuleType) -> tuple[ModuleType, list[Any]]:
    import choose
    import peers

    runs = choose.Runs(docs.STORED, docs.Run)
    return choose, choose.evaluate_peers(runs, peers.stored(_contract(docs)))


def _row(rows: list[Any], way: str, versus: str) -> Any:
    (row,) = [r for r in rows if r.peer.way == way and r.peer.versus == versus]
    return row


def test_every_peer_in_the_stored_runs_has_a_row(docs: ModuleType) -> None:
    """A peer measured in a stored run, or named by its page's report, is in the guide."""
    import report_arrays
    import report_channel
    import report_table

    choose, rows = _peer_rows(docs)
    measured = set()
    for path in docs.STORED.glob("*.json"):
        for b in json.loads(path.read_text())["benchmarks"]:
            if "peer" in b["extra"]:
                measured.add((path.stem, b["extra"]["way"]))
    named = {
        *(("arrays", w) for w in report_arrays.PEERS),
        *(("channel", w) for w in report_channel.PEERS),
        *(("table", w) for w in report_table.PEERS),
        ("channel", "mp-queue"),  # the bare multiprocessing.Queue
        ("locks", "stdlib"),  # the bare multiprocessing.Lock
    }
    assert measured, "the stored runs measure peers"
    assert measured | named <= {(p.primitive, p.way) for p in choose.PEERS}
    assert measured | named <= {(r.peer.primitive, r.peer.way) for r in rows}


def test_each_peer_verdict_agrees_with_the_stored_runs(docs: ModuleType) -> None:
    """The better pick only where the peer is cheaper on every measure and keeps its clauses.

    The contract is read straight from peers.json; the verdict's "slower by" figures
    from the run's seconds, which the measures of the guide read.
    """
    choose, rows = _peer_rows(docs)
    from verdicts import times

    report = json.loads(_contract(docs).read_text())
    results = {p["key"]: p["results"] for p in report["peers"]}
    runs = choose.Runs(docs.STORED, docs.Run)
    for row in rows:
        peer, run = row.peer, runs[row.peer.primitive]
        ratios = [m.seconds(run, peer.way) / m.seconds(run, peer.versus) for m in peer.measures]
        if isinstance(peer.contract, choose.Checked):
            kept = all(
                results[peer.contract.key][clause].get(method, {}).get("state") == "holds"
                for clause in peer.contract.clauses
                for method in ("spawn", "fork")
            )
        else:
            kept = isinstance(peer.contract, choose.Wraps)
        text = choose.verdict(row)
        if text.startswith("**the better pick**"):
            assert kept, row
            assert all(r < 1 or times(r) == "1.0x" for r in ratios), row
            assert any(times(1 / r) != "1.0x" for r in ratios if r < 1), row
            continue
        use = choose.COSTS[peer.primitive].label(peer.versus)
        assert text.startswith(f"{use}: the peer "), text
        slower = [times(r) for r in ratios if r > 1 and times(r) != "1.0x"]
        assert slower or not kept, ("the shmref way only with a reason", text)
        for figure in slower:
            assert figure in text, (figure, text)


def test_the_verdicts_the_stored_runs_give(docs: ModuleType) -> None:
    """Pins what the stored runs say, read from their JSON, to the verdicts shown."""
    choose, rows = _peer_rows(docs)
    from verdicts import times

    locks = json.loads((docs.STORED / "locks.json").read_text())
    bare = _per_op(locks, "locks-uncontended", way="stdlib", primitive="lock", style="calls")
    ours = _per_op(locks, "locks-uncontended", way="ctypes", primitive="lock", style="calls")
    (calls,) = [r for r in rows if r.peer.way == "stdlib" and len(r.peer.measures) == 1]
    cheaper = bare < ours and times(ours / bare) != "1.0x"
    text = choose.verdict(calls)
    assert text.startswith("**the better pick**") == cheaper, (bare, ours, text)
    if cheaper:  # when to take it
        assert "where every wait is an `acquire(timeout=...)` of your own" in text

    report = json.loads(_contract(docs).read_text())
    (ultradict,) = [p for p in report["peers"] if p["key"] == "ultradict"]
    if ultradict["results"]["distinct-keys"]["spawn"]["state"] != "holds":
        text = choose.verdict(_row(rows, "ultradict", "ctypes"))
        assert text.startswith("`CtypesDict`: the peer "), text
        assert "does not keep, under spawn: *2 writers, each incrementing its own key" in text


def _scale_way(docs: ModuleType, primitive: str, way: str, factor: float) -> None:
    """Every figure of ``way`` in the copy of ``primitive``'s run, times ``factor``."""
    path = docs.STORED / f"{primitive}.json"
    groups = {
        b["group"]
        for b in json.loads(path.read_text())["benchmarks"]
        if b["extra"].get("way") == way
    }
    for group in groups:
        _scale(path, group, way, factor)


def test_a_better_pick_slower_in_the_run_loses_its_verdict(docs: ModuleType) -> None:
    """Each peer the stored runs make the better pick, 100 times slower in a copy of its run:
    the guide's way instead, with the figure, and its box goes from the chart."""
    choose, rows = _peer_rows(docs)
    if not any(r.better() for r in rows):  # make one: atomics keeps its clause
        _scale_way(docs, "counter", "atomics", 0.001)
        choose, rows = _peer_rows(docs)
    better = [(i, r) for i, r in enumerate(rows) if r.better()]
    assert better
    written = _render(docs, docs.GENERATED)
    for i, row in better:
        assert f"  peer{i} [label=" in written[f"choose-{row.peer.primitive}.dot"]
    for peer in {(r.peer.primitive, r.peer.way) for _, r in better}:
        _scale_way(docs, *peer, 100.0)

    choose, rows = _peer_rows(docs)
    written = _render(docs, docs.GENERATED)
    for i, _ in better:
        row, label = rows[i], choose.COSTS[rows[i].peer.primitive].label
        text = choose.verdict(row)
        assert text.startswith(f"{label(row.peer.versus)}: the peer is slower by "), text
        assert f"  peer{i} [label=" not in written[f"choose-{row.peer.primitive}.dot"]
        cells = [
            c
            for c in _table(docs.GENERATED / f"choose-{row.peer.primitive}.md")
            if c[:2] == [row.peer.when, label(row.peer.way)]
        ]
        assert text in [c[-1] for c in cells]


def test_a_peer_that_loses_writes_loses_its_verdict(docs: ModuleType) -> None:
    """UltraDict(shared_lock=True) losing writes under spawn in a copy of peers.json."""
    choose, rows = _peer_rows(docs)
    read_mostly = _row(rows, "ultradict-shared-lock", "ctypes")
    if not read_mostly.cheaper():  # make it the better pick first, in the copy
        _scale_way(docs, "table", "ultradict-shared-lock", 0.001)
        choose, rows = _peer_rows(docs)
        read_mostly = _row(rows, "ultradict-shared-lock", "ctypes")
    assert choose.verdict(read_mostly).startswith("**the better pick**")

    report = json.loads(_contract(docs).read_text())
    (peer,) = [p for p in report["peers"] if p["key"] == "ultradict-shared-lock"]
    peer["results"]["distinct-keys"]["spawn"]["state"] = "fails"
    _contract(docs).write_text(json.dumps(report))
    choose, rows = _peer_rows(docs)
    text = choose.verdict(_row(rows, "ultradict-shared-lock", "ctypes"))
    assert text == (
        "`CtypesDict`: the peer is cheaper, but does not keep, under spawn: "
        "*2 writers, each incrementing its own key: no write lost*"
    )


def test_a_peer_cheaper_in_the_run_and_kept_becomes_the_better_pick(docs: ModuleType) -> None:
    """atomics, which keeps its clause, a hundred times faster in a copy of the run."""
    choose, rows = _peer_rows(docs)
    assert not _row(rows, "atomics", "ctypes").better()
    for group in ("counter-add", "counter-throughput-4"):
        _scale(docs.STORED / "counter.json", group, "atomics", 0.01)
    choose, rows = _peer_rows(docs)
    assert choose.verdict(_row(rows, "atomics", "ctypes")).startswith("**the better pick**")


def test_without_the_contract_run_no_peer_is_the_better_pick(docs: ModuleType) -> None:
    _contract(docs).unlink()
    choose, rows = _peer_rows(docs)
    checked = [r for r in rows if isinstance(r.peer.contract, choose.Checked)]
    assert checked and not any(r.better() for r in checked)
    written = _render(docs, docs.GENERATED)
    assert "spawn: not run, fork: not run" in written["choose-table.md"]


def test_the_page_names_the_peers_it_weighs(docs: ModuleType) -> None:
    from reportparts import PEER_NAMES

    page = " ".join(
        (Path(__file__).resolve().parent.parent / "docs" / "choose.md").read_text().split()
    )
    (listed,) = re.findall(r"The libraries people pick instead \(([^)]*)\)", page)
    named = {n.strip() for n in listed.replace(" and ", ", ").split(",")}
    assert set(PEER_NAMES.values()) <= named, listed
