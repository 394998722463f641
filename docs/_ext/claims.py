"""The article's quantitative claims, each once, with one verdict from the stored runs.

The article shmref checks is *Shared Memory and Ctypes: Managing Memory
Across ...*. :data:`CLAIMS` lists each claim of it that a figure or a fact
can check, once: our paraphrase, the section that makes it, the function of
figures.py that measures it (the stored runs ``docs/bench/<primitive>.json``
and their benchmark groups, or facts with their references), and what it
states, from which verdicts.py computes its one verdict. The claims page
shows every claim; a primitive's page shows the claims that its run
measures, with its own figures and the same verdict: a claim reads the same
everywhere.

benchreport.render() calls :func:`render`, which writes ``claims*.md`` and
``<primitive>-claims.md`` into ``docs/_generated``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import figures as measure
from benchreport import table
from figures import NotStored, Runs
from verdicts import Claimed, Figure, Judge, verdict

__all__ = ["CLAIMS", "Claim", "Row", "Runs", "evaluate", "render", "view"]

#: Every primitive page, in menu order, with its title.
PAGES = {
    "counter": "Counter",
    "value": "Value",
    "arrays": "Array",
    "metrics": "Metrics board",
    "locks": "Lock, RLock, Semaphore",
    "table": "Dict",
    "channel": "Channel",
}


class Missing(NamedTuple):
    """What the stored runs lack for a claim, and the benchmark that would measure it."""

    #: The page whose run would hold it.
    primitive: str
    #: What is not measured, in a few words.
    what: str
    benchmark: str
    #: Whether the stored runs hold it after all (a run made since the benchmark
    #: was added): then nothing is missing. None: no run has it yet.
    stored: Callable[[Runs], bool] | None = None

    def lacking(self, runs: Runs) -> bool:
        return self.stored is None or not self.stored(runs)


@dataclass(frozen=True)
class Claim:
    id: str
    #: Our paraphrase of the claim (markdown, never the article's words).
    text: str
    #: The article's section(s) that make it.
    where: str
    #: The figures that check it, from the stored runs (or facts).
    measure: Callable[[Runs], list[Figure]] = lambda runs: []
    #: What the claim states, for verdicts.verdict; or ``judge`` for a verdict of its own.
    claimed: Claimed | None = None
    judge: Judge | None = None
    #: A measurement the stored runs lack: the claim, or part of it, is not measured yet.
    missing: Missing | None = None


class Row(NamedTuple):
    claim: Claim
    figures: list[Figure]
    verdict: str
    #: What the stored runs lack for the claim (claim.missing, unless they have it).
    missing: Missing | None = None


def fact(text: str) -> Judge:
    """The verdict of a claim checked against facts, which no figure computes."""
    return lambda figures: text


# ---------------------------------------------------------------- the claims

CLAIMS = [
    Claim(
        "10-100x",
        "Sharing scalars and arrays through `Value` and `Array` gives 10 to 100 times "
        "the throughput of a Queue",
        "the introduction",
        measure.ten_to_hundred,
        Claimed(10, 100),
    ),
    Claim(
        "pickle-per-mb",
        "Pickling costs 5 to 50 ms per MB",
        "Why Shared Memory Matters",
        measure.pickle_per_mb,
        Claimed(5e-3, 50e-3),
    ),
    Claim(
        "1ns-per-element",
        "Shared memory is read and written at memory speed, about 1 ns per element",
        "Why Shared Memory Matters",
        measure.per_element,
        Claimed.near(1e-9),
    ),
    Claim(
        "put-110ms",
        "`Queue.put` of a large array takes about 110 ms in all (no size given)",
        "Why Shared Memory Matters (the comparison)",
        measure.queue_put_total,
        Claimed.near(0.110),
    ),
    Claim(
        "put-pipe-10ms",
        "Of those 110 ms, the pipe takes 10; pickling and unpickling the other 100",
        "Why Shared Memory Matters (the comparison)",
        measure.queue_put_pipe,
        Claimed.near(10 / 110),
    ),
    Claim(
        "put-50-50ms",
        "Pickling and unpickling the array take the same time, 50 ms each (read: "
        "`pickle.dumps` and `pickle.loads` of one array within 2x of each other; with no size "
        "given, the 50 ms itself is not judged)",
        "Why Shared Memory Matters (the comparison)",
        measure.dumps_and_loads,
        Claimed.near(1),
        missing=Missing(
            "arrays",
            "`dumps` and `loads` apart",
            "`pickle.dumps` and `pickle.loads` timed apart in `arrays-reference`",
            measure.put_parts_stored,
        ),
    ),
    Claim(
        "ctypes-sizes",
        "`c_int` and `c_float` take 4 bytes, `c_long` 8 (on 64-bit), `c_double` 8, "
        "`c_bool` and `c_char` 1",
        "Creating Shared Values and Arrays (the table of types)",
        measure.ctypes_sizes,
        judge=measure.judge_sizes,
    ),
    Claim(
        "race-1.4m",
        "Without a lock, about 1.4 M of 2 M increments by 2 processes survive",
        "Race Conditions and Locks",
        measure.race,
        Claimed.near(0.7),
    ),
    Claim(
        "lock-exact",
        "With a lock, the same 2 processes give the exact total",
        "Fix: Lock-Protected Access",
        measure.lock_exact,
        judge=fact("**Confirmed** by the tests, not by a timing"),
    ),
    Claim(
        "5-20x",
        "When updates are small and frequent, shared memory beats a Queue 5 to 20 times over",
        "Performance: Shared Memory vs. Queue; Key Takeaways",
        measure.small_updates,
        Claimed(5, 20),
    ),
    Claim(
        "large-data",
        "The larger the data, the more shared memory gains over a Queue",
        "Why Shared Memory Matters",
        measure.large_data,
        Claimed(low=1),
    ),
    Claim(
        "always-lock",
        "Shared data needs a `Lock` or `RLock`, or races corrupt it",
        "Race Conditions and Locks; Key Takeaways",
        measure.always_lock,
        judge=measure.judge_always_lock,
    ),
    Claim(
        "manager-slower",
        "A Manager is slower than shared memory (every call goes through a proxy): use it "
        "only for types shared memory cannot hold",
        "Advanced: Manager for Complex Data Structures; Key Takeaways",
        measure.manager_slower,
        Claimed(low=1),
    ),
    Claim(
        "contention-negates",
        "Shared memory pays only while lock contention is low: high contention cancels "
        "its lead (read: at most 1.25x the Queue way's throughput)",
        "Key Takeaways",
        measure.contention,
        Claimed(high=1.25),
    ),
    Claim(
        "lock-1us",
        "Acquiring (and releasing) a lock takes about 1 µs",
        "FAQ: the cost of a Lock",
        measure.lock_cost,
        Claimed.near(1e-6),
    ),
    Claim(
        "lock-us-negligible",
        "A lock held for microseconds sees negligible contention (read: the processes "
        "keep at least 0.9x the throughput they have without sharing it)",
        "FAQ: the cost of a Lock",
        measure.short_holds,
        Claimed(low=0.9),
        missing=Missing(
            "locks",
            "holds of 1 to 10 µs",
            "holds of 1 and 10 µs in `locks-hold`",
            measure.micro_holds_stored,
        ),
    ),
    Claim(
        "lock-ms-linear",
        "A lock held for milliseconds degrades throughput linearly (read: each ms held "
        "adds 0.8 to 1.25 ms per acquisition)",
        "FAQ: the cost of a Lock",
        measure.long_holds,
        Claimed(0.8, 1.25),
    ),
    Claim(
        "ctypes-only",
        "Shared memory holds only ctypes primitives and arrays; objects need a Queue or a Manager",
        "FAQ: regular Python objects in shared memory",
        measure.not_only_ctypes,
        judge=fact(
            "**Not confirmed**, from facts: strings, bytes and pickled objects live in "
            "shared memory too"
        ),
    ),
    Claim(
        "threading-lock",
        "Threads of one process should use `threading.Lock`, not `multiprocessing.Lock` "
        "(read: `multiprocessing.Lock` costs them at least 2x what `threading.Lock` does, "
        "uncontended and handed off between two threads)",
        "FAQ: threads within a process",
        measure.thread_locks,
        Claimed(low=2),
        missing=Missing(
            "locks",
            "`threading.Lock`",
            "a `threading.Lock` way in `locks-uncontended` and in `locks-handoff` "
            "between two threads, beside `multiprocessing.Lock`",
            measure.thread_locks_stored,
        ),
    ),
    Claim(
        "tsan",
        "Race detectors such as ThreadSanitizer are not available for Python",
        "FAQ: debugging race conditions",
        measure.thread_sanitizer,
        judge=fact(
            "**Not confirmed**, from facts: CPython is built and tested with ThreadSanitizer"
        ),
    ),
]


# ---------------------------------------------------------------- verdicts and pages


def evaluate(runs: Runs) -> list[Row]:
    """Every claim with its figures and its one verdict, in the article's order."""
    rows = []
    for claim in CLAIMS:
        try:
            figures = claim.measure(runs)
        except NotStored as missing:
            rows.append(
                Row(
                    claim,
                    [],
                    f"**Not measured yet**: no stored run of `{missing}` "
                    f"(`nox -s bench -- {missing}`)",
                    claim.missing,
                )
            )
            continue
        if not figures:
            said = "**Not measured yet**"
        elif claim.judge is not None:
            said = claim.judge(figures)
        else:
            assert claim.claimed is not None, claim.id
            said = verdict(claim.claimed, figures)
        lacking = claim.missing if claim.missing and claim.missing.lacking(runs) else None
        if figures and lacking is not None:
            said += f"; {lacking.what}: not measured yet"
        rows.append(Row(claim, figures, said, lacking))
    return rows


def primitives(row: Row) -> list[str]:
    """The pages that show a claim: those of its figures, or of its missing benchmark."""
    found = {f.primitive for f in row.figures if f.primitive}
    if not row.figures and row.missing is not None:
        found.add(row.missing.primitive)
    return [name for name in PAGES if name in found]


def _figures(row: Row, primitive: str | None = None) -> str:
    if not row.figures:
        missing = row.missing
        return "not in the stored runs" + (
            f": {missing.benchmark} would measure it" if missing else ""
        )
    shown = []
    for f in row.figures:
        if primitive is None:
            page = f"[{PAGES[f.primitive]}]({f.primitive}.md): " if f.primitive else ""
            shown.append(page + f.shown)
        elif f.primitive == primitive:
            shown.append(f.shown)
    return "<br>".join(shown)


def view(rows: Sequence[Row], primitive: str) -> list[list[str]]:
    """A primitive page's claims table: its claims, its own figures, the one verdict."""
    return [
        [row.claim.text, _figures(row, primitive), row.verdict]
        for row in rows
        if primitive in primitives(row)
    ]


def _page_order(run: object) -> int:
    name = getattr(run, "name", "")
    return list(PAGES).index(name) if name in PAGES else len(PAGES)


HEADER = "<!-- generated by docs/_ext/claims.py from docs/bench/*.json: do not edit -->\n"


def pages(rows: Sequence[Row], runs: Runs) -> dict[str, str]:
    """The parts of the claims page and each primitive page's claims table, by file stem."""
    parts = {
        "claims": table(
            ["id", "claim (the article's section)", "measured (page: figure)", "verdict"],
            (
                [f"`{r.claim.id}`", f"{r.claim.text} *({r.claim.where})*", _figures(r), r.verdict]
                for r in rows
            ),
        ),
        "claims-sources": table(
            ["id", "measured by"],
            (
                [f"`{r.claim.id}`", "<br>".join(dict.fromkeys(f.source for f in r.figures))]
                for r in rows
                if r.figures
            ),
        ),
        "claims-missing": table(
            ["id", "page", "the benchmark that would measure it"],
            (
                [
                    f"`{r.claim.id}`",
                    f"[{PAGES[r.missing.primitive]}]({r.missing.primitive}.md)",
                    r.missing.benchmark,
                ]
                for r in rows
                if r.missing is not None
            ),
        ),
        "claims-runs": table(
            ["stored run", "commit", "measured at", "machine"],
            (
                [
                    f"`{run.name}.json`",
                    f"`{run.data['commit'] or 'unknown'}`",
                    str(run.data["datetime"])[:16].replace("T", " "),
                    f"{run.machine['cpu']}, {run.machine['cores']} cores, "
                    f"{run.machine['python'].strip()}, `{run.machine['start_method']}`",
                ]
                for run in sorted(runs.loaded(), key=_page_order)
            ),
        ),
    }
    for name in PAGES:
        rows_here = view(rows, name)
        parts[f"{name}-claims"] = (
            table(["claim", "measured here", "verdict"], rows_here)
            if rows_here
            else "No claim of the article is measured on this page's run.\n"
        )
    return parts


def render(out: Path, runs: Runs) -> dict[str, str]:
    """Write every claims table into ``out`` (docs/_generated); returns them by file stem."""
    parts = pages(evaluate(runs), runs)
    for stem, text in parts.items():
        path = out / f"{stem}.md"
        text = HEADER + text
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    return parts
