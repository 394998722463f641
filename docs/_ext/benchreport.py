"""Stored benchmark runs -> the tables, plots and verdicts on the docs pages.

The only source of the docs' numbers is ``docs/bench/<primitive>.json``, a
slim summary of one pytest-benchmark run plus the machine it ran on::

    python docs/_ext/benchreport.py store counter RAW.json   # after a run
    python docs/_ext/benchreport.py render [counter ...]     # tables + plots

``render`` writes ``docs/_generated/`` (not committed; the pages include it).
What a primitive's page shows is in ``report_<primitive>.py`` beside this
file: its ``pages(run)`` returns markdown parts (``render`` adds the
``machine`` part every page has), ``plots(run)`` drawing functions,
``summary(run)`` rows for the index page, ``WAYS`` the labels.
The parts several pages share (throughput by processes, the goals table,
log-scale line plots, the index rows) are in ``reportparts.py``, so a report
module holds only what is its own. The article's claims are not a page's own:
``claims.py`` lists each once and writes the claims page and every page's
claims table (``<primitive>-claims.md``) from all the stored runs.
As a Sphinx extension this module renders every stored run when a build
starts, so the pages always show what the JSON says.
"""

from __future__ import annotations

import importlib
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

from verdicts import times

DOCS = Path(__file__).resolve().parent.parent
STORED = DOCS / "bench"
GENERATED = DOCS / "_generated"

STATS = ("min", "median", "mean", "max", "stddev", "rounds")

#: The statistic the pages show. The fastest round is the one least disturbed
#: by other work on the machine (timeit's advice too); every round is stored.
STAT = "min"


# ---------------------------------------------------------------- storing


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def usable_cores() -> int | None:
    """The cores this process may run on, which a container or taskset can limit."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count()


def _ran_with(info: dict[str, Any]) -> dict[str, Any]:
    """The start method and cores of the process that ran the benchmarks.

    tests/benchmarks/conftest.py records them in the raw file's machine_info.
    A raw file without them gets this (the storing) process's values instead,
    and ``from_storing_process`` names those fields: they are a guess about
    the run, right only if it ran here with the same defaults.
    """
    counts = info.get("cpu_count") or {}
    ran = {
        "start_method": info.get("start_method"),
        "cores": counts.get("usable"),
        "logical_cores": counts.get("logical"),
    }
    guessed = {
        "start_method": multiprocessing.get_start_method(allow_none=False),
        "cores": usable_cores(),
        "logical_cores": os.cpu_count(),
    }
    missing = sorted(key for key, value in ran.items() if value is None)
    ran.update({key: guessed[key] for key in missing})
    if missing:
        ran["from_storing_process"] = missing
    return ran


def _dirty(commit: dict[str, Any]) -> bool:
    """Whether the run's code differed from its commit.

    pytest-benchmark's flag counts every change to the tree, and a run of
    several primitives changes docs/bench/ itself, one file after another:
    only changes elsewhere make the run differ from its commit.
    """
    if not commit.get("dirty"):
        return False
    try:
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", ".", ":(exclude)docs/bench"],
            cwd=DOCS.parent,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return True  # no way to tell: say so
    return bool(changed.strip())


def store(name: str, raw_path: str) -> Path:
    """Keep the statistics and the machine of a raw --benchmark-json file."""
    raw = json.loads(Path(raw_path).read_text())
    info = raw.get("machine_info", {})
    cpu = info.get("cpu", {})
    commit = raw.get("commit_info", {})
    summary = {
        "primitive": name,
        "generated_by": f"nox -s bench -- {name}",
        "datetime": raw.get("datetime"),
        "commit": (commit.get("id") or "")[:12] + ("+dirty" if _dirty(commit) else ""),
        "machine": {
            "cpu": cpu.get("brand_raw") or info.get("processor") or platform.processor(),
            "memory_gib": _memory_gib(),
            "arch": info.get("machine") or platform.machine(),
            "os": f"{info.get('system', platform.system())} {info.get('release', '')}".strip(),
            "python": f"{info.get('python_implementation', '')} {info.get('python_version', '')}",
            "pytest_benchmark": raw.get("version"),
            **_ran_with(info),
        },
        "benchmarks": [
            {
                "name": b["name"],
                "group": b["group"],
                "extra": b.get("extra_info", {}),
                "stats": {k: b["stats"][k] for k in STATS},
            }
            for b in raw["benchmarks"]
        ],
    }
    STORED.mkdir(exist_ok=True)
    out = STORED / f"{name}.json"
    out.write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    print(f"stored {len(summary['benchmarks'])} benchmarks in {out.relative_to(DOCS.parent)}")
    return out


# ---------------------------------------------------------------- reading


class Run:
    """One stored run, with look-ups by group and extra_info."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.data = json.loads((STORED / f"{name}.json").read_text())
        self.machine = self.data["machine"]

    def find(self, group: str, **extra: Any) -> dict[str, Any] | None:
        for b in self.data["benchmarks"]:
            if b["group"] == group and all(b["extra"].get(k) == v for k, v in extra.items()):
                return b
        return None

    def get(self, group: str, **extra: Any) -> dict[str, Any]:
        b = self.find(group, **extra)
        if b is None:
            raise LookupError(f"{self.name}.json has no {group} benchmark with {extra}")
        return b

    def per_op(self, group: str, **extra: Any) -> float:
        """Seconds per operation in the round the pages show (STAT: the fastest)."""
        b = self.get(group, **extra)
        return float(b["stats"][STAT]) / b["extra"]["ops"]

    def rate(self, group: str, **extra: Any) -> float:
        """Operations per second in the round the pages show (STAT: the fastest)."""
        return 1.0 / self.per_op(group, **extra)


def fmt_time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if seconds >= scale or unit == "ns":
            value = seconds / scale
            return f"{value:.3g} {unit}" if value < 100 else f"{value:.0f} {unit}"
    raise AssertionError


def fmt_rate(per_second: float) -> str:
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if per_second >= scale:
            return f"{per_second / scale:.3g} {unit}/s"
    return f"{per_second:.3g} /s"


def fmt_share(part: float) -> str:
    """A fraction as a percentage, 3 significant digits: 0.0325 %, 78.1 %, 99.8 %."""
    return f"{100 * part:.3g} %"


def fmt_ratio(x: float) -> str:
    # One way to write a ratio on every page: verdicts.times keeps two significant
    # digits, so a tie reads "1.0x", never the "1x" a reader takes for rounding.
    return times(x)


def table(header: list[str], rows: Iterable[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


#: How machine_line names the fields ``from_storing_process`` can list, in its order.
GUESSED = {"start_method": "start method", "cores": "core count", "logical_cores": "core count"}


def machine_line(run: Run) -> str:
    m = run.machine
    mem = f", {m['memory_gib']} GiB" if m.get("memory_gib") else ""
    # Runs stored before the benchmarks recorded their cores have no
    # "logical_cores" and no "from_storing_process": they read as before.
    logical = m.get("logical_cores", m["cores"])
    cores = (
        f"{m['cores']} cores"
        if logical == m["cores"]
        else f"{m['cores']} of {logical} cores usable"
    )
    unrecorded = m.get("from_storing_process", ())
    guessed = list(dict.fromkeys(name for key, name in GUESSED.items() if key in unrecorded))
    guessed_note = (
        f" The run did not record its {' and '.join(guessed)}: these are the storing process's."
        if guessed
        else ""
    )
    return (
        f"Measured with `{run.data['generated_by']}` on {m['cpu']} ({cores}{mem}), "
        f"{m['os']}, {m['python'].strip()}, start method `{m['start_method']}`, "
        f"at {run.data['datetime']} (commit `{run.data['commit'] or 'unknown'}`). "
        "Each figure is from the fastest of its rounds, the one least disturbed by other work "
        f"on the machine; docs/bench has the median, mean and spread too.{guessed_note}\n"
    )


def goal(measured: float, text: str, ok: bool) -> list[str]:
    return [text, fmt_ratio(measured), "met" if ok else "**not met**"]


# ---------------------------------------------------------------- rendering

HEADER = (
    "<!-- generated by docs/_ext/benchreport.py from docs/bench/{name}.json: do not edit -->\n"
)
#: The processes of the index summary's throughput column (each report's ``-2`` benchmarks).
SUMMARY_PROCESSES = 2
#: The columns of reportparts.summary_rows, which every report's summary() uses.
SUMMARY_HEADER = [
    "primitive",
    "way",
    "one operation",
    "vs fastest",
    f"operations per second, {SUMMARY_PROCESSES} processes",
    "use it for",
]


def reports() -> dict[str, ModuleType]:
    """The report module of every primitive that has a stored run."""
    here = Path(__file__).parent
    names = sorted(p.stem for p in STORED.glob("*.json"))
    return {
        name: importlib.import_module(f"report_{name}")
        for name in names
        if (here / f"report_{name}.py").exists()
    }


def render(names: list[str] | None = None, plots: bool = True, echo: bool = False) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    # claims.py imports the report modules: it is imported once they are on the path.
    import claims

    found = reports()
    GENERATED.mkdir(exist_ok=True)
    summary: dict[str, list[list[str]]] = {}
    runs: list[Run] = []
    for name, report in found.items():
        run = Run(name)
        runs.append(run)
        summary[name] = report.summary(run)
        if names and name not in names:
            continue
        # Every page says where its numbers were measured.
        parts = {"machine": machine_line(run), **report.pages(run)}
        for part, text in parts.items():
            _write(GENERATED / f"{name}-{part}.md", HEADER.format(name=name) + text)
            if echo:
                print(f"\n## {name}: {part}\n\n{text}")
        if plots:
            for part, draw in report.plots(run).items():
                _plot(GENERATED / f"{name}-{part}.png", draw)
    # The index lists the primitives in the menu's order, which claims.PAGES keeps.
    rows = [row for name in in_menu_order(summary) for row in summary[name]]
    text = table(SUMMARY_HEADER, rows) + summary_machines(runs)
    _write(GENERATED / "summary.md", HEADER.format(name="*") + text)
    # One verdict per claim, from every stored run: rendered whole whichever runs were named.
    written = claims.render(GENERATED, claims.Runs(STORED, Run))
    if echo:
        print(f"\n## claims\n\n{written['claims']}")


def in_menu_order(names: Iterable[str]) -> list[str]:
    """``names`` in the order of the menu (claims.PAGES); any it lacks after them."""
    import claims

    menu = list(claims.PAGES)
    return sorted(names, key=lambda name: (menu.index(name) if name in menu else len(menu), name))


def summary_machines(runs: Iterable[Run]) -> str:
    """The line under the index summary: the machines and core counts of its runs.

    Each core count is the one its run stored; where the summary's column ran
    more processes than that, reportparts.shared_cores says so.
    """
    from reportparts import cores, shared_cores

    machines: dict[tuple[str, int], list[str]] = {}
    for run in runs:
        machines.setdefault((run.machine["cpu"], run.machine["cores"]), []).append(run.name)
    lines = []
    for (cpu, usable), names in machines.items():
        which = "every run" if len(machines) == 1 else ", ".join(in_menu_order(names))
        lines.append(f"Measured on {cpu}, {cores(usable)} ({which}).")
        lines.append(shared_cores(usable, [SUMMARY_PROCESSES]).strip())
    return "\n" + " ".join(line for line in lines if line) + "\n"


def _write(path: Path, text: str) -> None:
    # Rewrite only on change so Sphinx does not rebuild every page each time.
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _plot(path: Path, draw: Callable[[Any], None]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # 5.5 inches at 130 dpi: 715 px, shown at its own size in the desktop
    # column and at half of it on a phone, where 11 pt text still reads as
    # about 10 px (issue 11). Titles and axis labels wrap rather than run off
    # the figure.
    with matplotlib.rc_context({"font.size": 11, "axes.titlesize": "medium"}):
        fig, ax = plt.subplots(figsize=(5.5, 3.6), layout="constrained")
        draw(ax)
        ax.set_title(textwrap.fill(ax.get_title(), 48))
        ax.set_xlabel(textwrap.fill(ax.get_xlabel(), 36))
        ax.set_ylabel(textwrap.fill(ax.get_ylabel(), 30))
        ax.grid(True, which="both", alpha=0.3)
        fig.savefig(path, dpi=130, metadata={"Software": None})
    plt.close(fig)


def setup(app: Any) -> dict[str, Any]:
    app.connect("builder-inited", lambda app: render())
    return {"parallel_read_safe": True, "parallel_write_safe": True}


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[0] == "store":
        store(argv[1], argv[2])
        return 0
    if argv and argv[0] == "render":
        render(argv[1:] or None, echo=True)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
