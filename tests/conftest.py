"""Fixtures shared by the tests: leak checks and start methods."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable
from multiprocessing.context import BaseContext
from typing import Any

import pytest

from tests import redis_server
from tests.leaks import (
    check_tracker_log,
    collect_worker_log,
    no_leaks,
    private_dev_shm,
    start_tracker_log,
)

__all__ = ["JOIN", "START_METHODS", "contract", "no_leaks", "redis_url", "run_children"]

#: Seconds to wait for a child to finish; pytest-timeout is the backstop.
JOIN = 60.0

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
    if os.environ.get("PYTEST_XDIST_WORKER"):
        private_dev_shm()
    start_tracker_log(config)
    # Each forkserver child then starts with the test modules imported.
    multiprocessing.set_forkserver_preload(["tests.forkserver_preload"])


def pytest_sessionfinish(session: pytest.Session) -> None:
    redis_server.stop()
    check_tracker_log(session)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The URL of this session's Redis server (tests/redis_server.py), started on first use.

    One server per pytest process (each pytest-xdist worker starts its own);
    the test skips, saying what to install, where none can run.
    """
    return redis_server.url()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """pytest-xdist: a worker ended; keep what its resource_tracker reported."""
    collect_worker_log(node.config, getattr(node, "workeroutput", {}))


@pytest.fixture(params=START_METHODS)
def start_method(request: pytest.FixtureRequest) -> str:
    """The start method of the processes a test starts."""
    return str(request.param)


@pytest.fixture
def ctx(start_method: str) -> BaseContext:
    """A multiprocessing context for :func:`start_method`."""
    return multiprocessing.get_context(start_method)


def contract(
    names: Iterable[str],
    cannot: dict[str, str] | None = None,
    skip: dict[str, str] | None = None,
    argname: str = "way_name",
) -> pytest.MarkDecorator:
    """Parametrize a contract clause over ``names`` x every start method.

    ``cannot`` maps a way to the reason it cannot keep the clause: its
    parameters are xfail(strict=True), so the day it passes the mark must go.
    ``skip`` is for a clause a way keeps only by luck (a race it usually
    wins), which no strict xfail can state. Ids read ``<way>-<method>``.
    """
    cannot, skip = cannot or {}, skip or {}
    params = []
    for name in names:
        marks = []
        if name in cannot:
            marks.append(pytest.mark.xfail(strict=True, reason=cannot[name]))
        if name in skip:
            marks.append(pytest.mark.skip(reason=skip[name]))
        params += [
            pytest.param(name, method, marks=marks, id=f"{name}-{method}")
            for method in START_METHODS
        ]
    return pytest.mark.parametrize((argname, "start_method"), params)


def run_children(
    ctx: BaseContext, target: Callable[..., None], *args: Any, count: int = 1
) -> None:
    """Start ``count`` children running ``target(*args)``; all must exit with 0."""
    processes = [ctx.Process(target=target, args=args) for _ in range(count)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(JOIN)
    assert [process.exitcode for process in processes] == [0] * count
    for process in processes:
        process.close()
