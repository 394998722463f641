"""The decision guide: its answers agree with the stored runs, and say so only where they do."""

from __future__ import annotations

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
    choose.render(out, choose.Runs(docs.STORED, docs.Run))
    for primitive in choose.COSTS:
        for cells in _table(out / f"choose-{primitive}.md"):
            assert not cells[-1].startswith("**not the cheapest"), (primitive, cells)

    # SlotCounter 100 times slower with 4 writers: its row must stop saying "cheapest".
    _scale(docs.STORED / "counter.json", "counter-throughput-4", "slots", 100.0)
    choose, rows = _guide(docs)
    (row,) = [r for r in rows if r is not None and r.choice.way == "slots"]
    assert [way for _, way in row.cheaper()] == ["queue-batched"]
    choose.render(out, choose.Runs(docs.STORED, docs.Run))
    (cells,) = [c for c in _table(out / "choose-counter.md") if c[1] == "`SlotCounter`"]
    assert cells[-1].startswith("**not the cheapest in this run**: `QueueCounter(batch=64)`")


def test_the_charts_have_a_box_per_choice_and_draw(docs: ModuleType, tmp_path: Path) -> None:
    """The top chart has a box per primitive, whose section's chart has a box per way."""
    choose, _ = _guide(docs)
    from claims import PAGES

    written = choose.render(tmp_path, choose.Runs(docs.STORED, docs.Run))
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
    dashed = sum(written[name].count("style=dashed];") for name in charts)
    assert dashed == len(choose.LATER), "a dashed box for every way to come"
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
    written = choose.render(docs.GENERATED, choose.Runs(docs.STORED, docs.Run))
    assert "nox -s bench -- channel" in written["choose-channel.md"]


def test_section_anchors_are_the_ones_sphinx_makes(docs: ModuleType) -> None:
    nodes = pytest.importorskip(
        "docutils.nodes", reason="docutils is not installed: pip install -e .[docs]"
    )
    import choose

    for primitive, title in choose.PAGES.items():
        assert choose.section(primitive) == nodes.make_id(title)
