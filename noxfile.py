"""shmref's tasks: ``nox -l`` lists them, ``nox -s NAME`` runs one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nox

nox.options.sessions = ["lint", "typecheck", "tests", "docs"]
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.download_python = "never"
nox.options.reuse_venv = "yes"

ROOT = Path(__file__).parent
SUPPORTED = ("3.10", "3.11", "3.12", "3.13")
CURRENT = f"{sys.version_info.major}.{sys.version_info.minor}"


def _runs(version: str) -> bool:
    """True if the ``pythonX.Y`` that nox would pick up actually starts."""
    if version == CURRENT:
        return True
    exe = shutil.which(f"python{version}")
    if exe is None:
        return False
    # A version manager's shim may exist and still fail to run (exit 127).
    try:
        done = subprocess.run([exe, "-c", "pass"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


# Only interpreters present here: a missing one must not fail CI elsewhere.
PYTHONS = [v for v in SUPPORTED if _runs(v)] or [CURRENT]
# Docs, lint and type checks run once, on one interpreter, so results do not vary.
PINNED = "3.12" if "3.12" in PYTHONS else CURRENT


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run the test suite, the docs' examples and a quick pass of every benchmark.

    Every start method (fork, forkserver, spawn) and the benchmarks' quick
    pass on one interpreter; on the others fork only, without the benchmarks
    and with 10 random kills per cell of tests/test_faults.py, not 20.
    What varies between interpreters is the language and the standard library
    (signals, pickling, multiprocessing's internals), which fork runs through
    as well, in about half the time spawn takes: four interpreters then took
    23 minutes on two cores with two workers (a667055), the pinned one 15 of
    them. Set SHMREF_START_METHODS yourself to choose. The tests run in one
    pytest-xdist worker per core and one more (most of their time is spent
    waiting for processes);
    ``nox -s tests -- ARGS`` passes ARGS to pytest instead.
    """
    # numpy and redis are optional for shmref; the standalone tests hide them
    # to check that. The Redis ways' tests also need redis-server on PATH
    # (.ci/run installs it), and skip without it. The peers go where the
    # benchmarks' quick pass runs, so their adapters run on every CI run;
    # elsewhere their benchmarks skip.
    extras = "test,numpy,redis,peers" if session.python == PINNED else "test,numpy,redis"
    session.install("-e", f".[{extras}]")
    env = {}
    if session.python != PINNED and "SHMREF_START_METHODS" not in os.environ:
        env["SHMREF_START_METHODS"] = "fork"
        # Half the random kills of tests/test_faults.py: the pinned
        # interpreter runs all 20 under fork and spawn.
        env["SHMREF_KILLS"] = os.environ.get("SHMREF_KILLS", "10")
        # The stopped-owner clause on the Counter's ways only (tests/test_lifecycle.py).
        env["SHMREF_STOPPED"] = os.environ.get("SHMREF_STOPPED", "counter")
    if session.posargs:
        session.run("python", "-m", "pytest", *session.posargs, env=env)
        return
    # One test at a time to whichever worker is free (--dist=load): sent by
    # file, tests/test_faults.py's kill loops alone kept one worker busy
    # for the last minutes of the run (CI, 3.12, 1170 s in all). A worker
    # more than the cores: measured on 2 cores, fork only, 202 s with 2
    # workers and 169 s with 3 (the workers wait more than they compute).
    tests = [f"--numprocesses={(os.cpu_count() or 1) + 1}", "--dist=load", "shmref", "tests"]
    if session.python != PINNED:  # the benchmarks' quick pass checks the harness: once
        tests.append("--ignore=tests/benchmarks")
    session.run("python", "-m", "pytest", *tests, env=env)
    # A docs page's examples share one namespace, in order: the pages run
    # in one process. (pytest-xdist's loadgroup would keep a page on one
    # worker, but xdist 3.8 writes the group into a node attribute that
    # pytest 9 no longer reads.)
    session.run("python", "-m", "pytest", "docs", env=env)


@nox.session(python=PINNED)
def docs(session: nox.Session) -> None:
    """Build the HTML docs with warnings as errors and execute every example.

    First the tests that need Sphinx or docutils (the API sections as autodoc
    renders them, the decision guide's anchors), which the tests session,
    without the docs extra, skips.
    """
    session.install("-e", ".[docs,test]")
    session.run(
        "python", "-m", "pytest", "-p", "no:cacheprovider",
        "tests/test_apisections.py", "tests/test_choose.py",
    )  # fmt: skip
    build = ROOT / "docs" / "_build"
    shutil.rmtree(build, ignore_errors=True)
    session.run("sphinx-build", "-b", "doctest", "-W", "docs", str(build / "doctest"))
    session.run("sphinx-build", "-b", "html", "-W", "--keep-going", "docs", str(build / "html"))
    session.log(f"open {build / 'html' / 'index.html'}")


@nox.session(python=PINNED)
def browser(session: nox.Session) -> None:
    """Build the HTML docs and check every page in headless Chromium at 390 and 1280 px.

    Images decode, nothing is wider than its frame unless it scrolls, every
    code block has its copy button, the console has no errors: see
    tests/pages_in_browser.py, whose own test (pages made to fail) runs
    first. Screenshots go to docs/_build/screens/.
    """
    for program in ("chromium", "chromedriver"):
        if shutil.which(program) is None:
            session.skip(f"{program} is not on PATH: apt-get install -y chromium chromium-driver")
    session.install("-e", ".[docs,test]", "selenium>=4.11")
    session.run("python", "-m", "pytest", "tests/test_pages_in_browser.py")
    build = ROOT / "docs" / "_build"
    shutil.rmtree(build / "screens", ignore_errors=True)
    # ``nox -s browser -- built``: check the HTML the docs session has just
    # built (as .ci/run does) instead of building it again.
    if session.posargs != ["built"]:
        shutil.rmtree(build / "html", ignore_errors=True)
        html = str(build / "html")
        session.run("sphinx-build", "-b", "html", "-W", "--keep-going", "docs", html)
    session.run(
        "python", "-m", "tests.pages_in_browser", str(build / "html"), str(build / "screens")
    )


@nox.session(python=PINNED)
def bench(session: nox.Session) -> None:
    """Measure every way on this machine and regenerate the docs' tables and plots.

    ``nox -s bench -- counter`` runs one primitive. Results go to
    docs/bench/<primitive>.json with the machine they ran on. The Redis
    ways run on a redis-server of the benchmarks' own (tests/redis_server.py),
    and are skipped, saying what to install, without one. The peers (the
    ``peers`` extra: faster-fifo, UltraDict, atomics, ...) run beside
    shmref's ways in the same run.
    """
    session.install("-e", ".[bench,redis,peers]")
    names = session.posargs or sorted(
        p.stem.removeprefix("test_bench_")
        for p in (ROOT / "tests" / "benchmarks").glob("test_bench_*.py")
    )
    for name in names:
        raw = ROOT / "docs" / "_build" / f"bench-{name}-raw.json"
        raw.parent.mkdir(parents=True, exist_ok=True)
        session.run(
            "python",
            "-m",
            "pytest",
            f"tests/benchmarks/test_bench_{name}.py",
            "--benchmark-enable",
            "--benchmark-only",
            "-p",
            "no:sybil",
            "--benchmark-columns=min,median,max,rounds",
            "--benchmark-sort=name",
            f"--benchmark-json={raw}",
            "-v",
            "--timeout=1800",
        )
        session.run("python", "docs/_ext/benchreport.py", "store", name, str(raw))
    session.run("python", "docs/_ext/benchreport.py", "render", *names)


@nox.session(python=PINNED)
def peers(session: nox.Session) -> None:
    """Hold the peer libraries (faster-fifo, UltraDict, ...) to shmref's contract, spawn and fork.

    A report, not a test: a peer failing a clause is a finding, stored in
    docs/bench/contract/peers.json with the machine and each peer's version and shown
    on the primitive pages; only a broken harness fails the session.
    ``nox -s peers -- --peer ultradict --method spawn`` narrows it.
    """
    session.install("-e", ".[test,numpy,peers]")
    session.run("python", "-m", "tests.peers_contract", *session.posargs)


@nox.session(python=PINNED)
def stress(session: nox.Session) -> None:
    """P = 8 and 16 processes on one handle of every way, 2 s each: exact totals, throughput.

    ``nox -s stress -- counter --processes 32 --seconds 5`` narrows or widens it.
    """
    session.install("-e", ".[redis]")
    session.run("python", "-m", "tests.stress", *session.posargs)


@nox.session(python=PINNED)
def against(session: nox.Session) -> None:
    """Every way's calls now and at a commit, in one process: ``nox -s against -- 605f3da``.

    Prints now/then ratios with bootstrap intervals; ``--json FILE`` stores the run.
    """
    if not session.posargs:
        session.error("name the commit to compare with: nox -s against -- REV")
    session.install("-e", ".[numpy]")
    session.run("python", "-m", "tests.benchmarks.against", *session.posargs)


@nox.session(python=PINNED)
def lint(session: nox.Session) -> None:
    """Check style with ruff (lint and format)."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PINNED)
def typecheck(session: nox.Session) -> None:
    """Type-check the package with mypy."""
    session.install("mypy", "numpy", "redis")
    session.run("mypy")
