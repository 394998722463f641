"""Fixtures shared by the tests: leak checks and start methods."""

from __future__ import annotations

import multiprocessing
import os
from multiprocessing.context import BaseContext

import pytest

from tests.leaks import check_tracker_log, no_leaks, start_tracker_log

__all__ = ["START_METHODS", "no_leaks"]

ALL_START_METHODS = ("fork", "forkserver", "spawn")


def _start_methods() -> tuple[str, ...]:
    # SHMREF_START_METHODS=spawn narrows the matrix; noxfile.py does that on
    # all interpreters but one, to keep a four-interpreter run short.
    chosen = os.environ.get("SHMREF_START_METHODS", ",".join(ALL_START_METHODS))
    methods = tuple(m.strip() for m in chosen.split(",") if m.strip())
    unknown = set(methods) - set(ALL_START_METHODS)
    if unknown or not methods:
        raise pytest.UsageError(f"SHMREF_START_METHODS: unknown start method(s) {unknown}")
    return methods


#: Every test that starts processes runs under each of these.
START_METHODS = _start_methods()


def pytest_configure(config: pytest.Config) -> None:
    start_tracker_log(config)


def pytest_sessionfinish(session: pytest.Session) -> None:
    check_tracker_log(session)


@pytest.fixture(params=START_METHODS)
def start_method(request: pytest.FixtureRequest) -> str:
    """The start method of the processes a test starts."""
    return str(request.param)


@pytest.fixture
def ctx(start_method: str) -> BaseContext:
    """A multiprocessing context for :func:`start_method`."""
    return multiprocessing.get_context(start_method)
