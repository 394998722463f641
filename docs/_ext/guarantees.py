"""Sphinx extension: the guarantees page's tables, from the suites' own lists.

What each way does under each fault comes from ``tests/clauses.py`` (the
clauses, the ways each applies to, and the strict-xfail reasons in each
``tests/ways_<primitive>.py``) and ``tests/fault_loops.py`` (the ways the
random kills and the interrupt storms cover): the lists the suites are
parametrized with, so the page says what the suite checks, no more.
Written to ``docs/_generated/guarantees.md`` at each build.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from claims import PAGES  # the primitive pages, in menu order, with their titles

DOCS = Path(__file__).resolve().parent.parent
OUT = DOCS / "_generated" / "guarantees.md"

#: The columns: fault clauses, in the page's order (the others are on the
#: lifecycle list below the tables).
COLUMNS = (
    "kills",
    "interrupts",
    "holder killed",
    "producer killed",
    "dead_owner",
    "stopped_owner",
    "owner_sigint",
    "creator_killed",
    "creator_close_wakes",
    "creator_killed_wakes",
)
HEADINGS = {
    "kills": "worker SIGKILLed mid-call, 20 times",
    "interrupts": "200 caught KeyboardInterrupts",
}
LOOP_TESTS = {
    "kills": (
        "tests/test_faults.py::test_random_kills_leave_old_or_new_state",
        "state old or new after each kill; the next call from another process works",
    ),
    "interrupts": (
        "tests/test_faults.py::test_caught_interrupts_leave_no_lock_taken",
        "no lock left taken; each interrupted call happened or not",
    ),
}


def _cell(column: str, primitive: str, way: str, notes: list[str]) -> str:
    from tests.clauses import applies, cannot
    from tests.fault_loops import LOOPS

    if column in LOOP_TESTS:
        if primitive == "locks":
            return "·"  # a lock's holder is the user's
        if f"{primitive}-{way}" in LOOPS:
            return "yes"
        reason = cannot("producer killed", primitive, way) if primitive == "channel" else None
        if reason is None:
            return "not run"
        notes.append(reason)
        return f"**no** ({len(notes)})"
    if not applies(column, primitive, way):
        return "·"
    reason = cannot(column, primitive, way)
    if reason is None:
        return "yes"
    notes.append(reason)
    return f"**no** ({len(notes)})"


def render() -> str:
    from tests.clauses import CLAUSES, PRIMITIVES, applies, cannot

    heads = [HEADINGS.get(c) or CLAUSES[c].fault for c in COLUMNS]
    lines = [
        "Columns: " + "; ".join(f"({i}) {h}" for i, h in enumerate(heads, 1)) + ".",
        "",
    ]
    notes: list[str] = []
    for primitive in PAGES:
        ways = PRIMITIVES[primitive]
        lines += [f"**{PAGES[primitive]}**", ""]
        lines.append("| way | " + " | ".join(f"({i})" for i in range(1, len(COLUMNS) + 1)) + " |")
        lines.append("|---" * (len(COLUMNS) + 1) + "|")
        for way in ways.WAYS:
            name = getattr(ways.WAYS[way], "__name__", None) or ways.WAYS[way].func.__name__
            cells = [_cell(c, primitive, way, notes) for c in COLUMNS]
            lines.append(f"| `{name}` ({way}) | " + " | ".join(cells) + " |")
        lines.append("")
    if notes:
        lines += ["Where a way cannot keep a clause (a strict xfail in the suite):", ""]
        lines += [f"{i}. {note}" for i, note in enumerate(notes, 1)]
        lines.append("")
    lines += ["What *yes* means in each column, and the test that checks it:", ""]
    for i, column in enumerate(COLUMNS, 1):
        if column in LOOP_TESTS:
            test, holds = LOOP_TESTS[column]
        else:
            test, holds = CLAUSES[column].test, CLAUSES[column].holds
        lines.append(f"({i}) {holds}: `{test}`.")
        lines.append("")
    lines += [
        "Every way also keeps these lifecycle clauses, except where it says so:",
        "",
    ]
    for clause in (c for c in CLAUSES if c not in COLUMNS):
        line = f"- {CLAUSES[clause].fault}: {CLAUSES[clause].holds} (`{CLAUSES[clause].test}`)."
        for primitive, ways in PRIMITIVES.items():
            for way in ways.WAYS:
                reason = (
                    cannot(clause, primitive, way) if applies(clause, primitive, way) else None
                )
                if reason is not None:
                    line += f" **Not** {primitive}-{way}: {reason}."
        lines.append(line)
    return "\n".join(lines) + "\n"


def write() -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(render())


def setup(app: Any) -> dict[str, Any]:
    app.connect("builder-inited", lambda app: write())
    return {"parallel_read_safe": True}
