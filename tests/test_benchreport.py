"""The docs' numbers come from the stored runs: change a run, the page changes."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

EXT = Path(__file__).parent.parent / "docs" / "_ext"


@pytest.fixture
def benchreport(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The report generator, reading and writing copies under tmp_path."""
    monkeypatch.syspath_prepend(str(EXT))
    import benchreport

    stored = tmp_path / "bench"
    shutil.copytree(benchreport.STORED, stored)
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


@pytest.fixture(autouse=True)
def _forget_report_modules() -> None:
    # Each test imports the generator afresh, against its own copies.
    for name in [m for m in sys.modules if m == "benchreport" or m.startswith("report_")]:
        del sys.modules[name]
