"""What a benchmark run records about the process that ran it.

``nox -s bench`` stores the run later, in another process
(docs/_ext/benchreport.py store); that process's start method and cores may
not be the run's, so the run writes its own into the raw file's machine_info.
"""

from __future__ import annotations

import multiprocessing
import os
from typing import Any

import pytest


def usable_cores() -> int | None:
    """The cores this process may run on, which a container or taskset can limit."""
    if hasattr(os, "sched_getaffinity"):  # not on macOS or Windows
        return len(os.sched_getaffinity(0))
    return os.cpu_count()


# optionalhook: pytest without pytest-benchmark would refuse an unknown hook.
@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(
    config: pytest.Config, machine_info: dict[str, Any]
) -> None:
    # The benchmarks start their workers with multiprocessing.get_context(),
    # the default context, so its start method is the one they measured.
    # (The startup benchmarks that try each method name it in extra_info.)
    # SHMREF_START_METHODS does not apply: it chooses the test suite's
    # start_method fixture, which no benchmark uses.
    machine_info["start_method"] = multiprocessing.get_start_method(allow_none=False)
    machine_info["cpu_count"] = {"logical": os.cpu_count(), "usable": usable_cores()}
