"""Run every ``{doctest}`` block of the docs pages as a test.

The examples of one page share a namespace, so objects live from one example
to the next: leaks are checked once per page, after its namespace is cleared,
instead of per example as in tests/.
"""

from __future__ import annotations

import gc
from typing import Any

from sybil import Sybil
from sybil.parsers.myst import DocTestDirectiveParser

from tests.leaks import check_tracker_log, leaks_since, snapshot, start_tracker_log

# examples/ and habits/ are scripts, run by tests/test_examples.py as a reader
# runs them; habits/no_main_guard.py would start a process on import.
collect_ignore = ["conf.py", "_ext", "_build", "examples", "habits"]

_before: dict[int, Any] = {}


def _setup(namespace: dict[str, Any]) -> None:
    _before[id(namespace)] = snapshot()


def _teardown(namespace: dict[str, Any]) -> None:
    namespace.clear()
    gc.collect()
    leaked = leaks_since(_before.pop(id(namespace)))
    if leaked:
        raise AssertionError("the page's examples leaked: " + ", ".join(leaked))


pytest_collect_file = Sybil(
    parsers=[DocTestDirectiveParser()],
    patterns=["*.md"],
    setup=_setup,
    teardown=_teardown,
).pytest()


def pytest_configure(config: Any) -> None:
    start_tracker_log(config)


def pytest_sessionfinish(session: Any) -> None:
    check_tracker_log(session)
