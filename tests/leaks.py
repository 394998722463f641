"""Leak checks for tests that start processes.

Two kinds of leak outlive the test that caused them:

* a process or a ``/dev/shm`` entry still there when a test ends, caught by
  the autouse fixture :func:`no_leaks`, which a ``conftest.py`` enables for
  its directory with ``from tests.leaks import no_leaks`` (or, for another
  granularity, by :func:`snapshot` and :func:`leaks_since`);
* a semaphore or shared memory block that nobody unlinked, which only the
  ``resource_tracker`` process notices, and only when it shuts down, after
  pytest has exited. :func:`start_tracker_log` (from ``pytest_configure``)
  starts the tracker with its stderr sent to a file, and
  :func:`check_tracker_log` (from ``pytest_sessionfinish``) stops it, echoes
  what it wrote and fails the session if it reported a leak. Both may be
  called from several conftests: only the first call does anything.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from multiprocessing import resource_tracker
from typing import Any, NamedTuple

import pytest

SHM = "/dev/shm"

#: Seconds a child still alive after its test may take to finish exiting
#: before it counts as leaked. A bound, not a synchronisation point.
GRACE = 1.0


def private_dev_shm() -> bool:
    """Give this process (and what it starts) a /dev/shm of its own, if it can.

    For a pytest-xdist worker: the /dev/shm check then sees only its own
    entries, not a sibling's caught half made. Needs root on Linux (a new
    mount namespace, as ``unshare -m`` makes); elsewhere it does nothing and
    the check relies on :func:`_mapped_by_others` and :data:`GRACE`.
    """
    if sys.platform != "linux" or os.geteuid() != 0:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    clone_newns, ms_rec, ms_private = 0x00020000, 0x4000, 0x40000
    return (
        libc.unshare(clone_newns) == 0
        and libc.mount(b"none", b"/", None, ms_rec | ms_private, None) == 0
        and libc.mount(b"tmpfs", SHM.encode(), b"tmpfs", 0, b"size=50%") == 0
    )


def _shm_entries() -> set[str]:
    try:
        return set(os.listdir(SHM))
    except FileNotFoundError:  # not Linux
        return set()


def _mapped_by_others(names: set[str]) -> set[str]:
    """The entries among ``names`` that a process outside this one's tree maps.

    /dev/shm is shared by the whole machine: another test session running
    at the same time creates entries too. An entry that an unrelated process
    has mapped (an open semaphore or shared memory block) is its. Entries are
    matched by inode: sem_open() maps a file under a temporary name first.
    """
    inodes: dict[tuple[str, int], str] = {}
    for name in names:
        with contextlib.suppress(OSError):
            st = os.stat(f"{SHM}/{name}")
            inodes[(f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}", st.st_ino)] = name
    parent: dict[int, int] = {}
    held: dict[int, set[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/maps") as maps:
                for line in maps:
                    fields = line.split(maxsplit=5)
                    found = inodes.get((fields[3], int(fields[4])))
                    if found is not None:
                        held.setdefault(int(entry), set()).add(found)
        except (OSError, ValueError, IndexError):  # exited meanwhile
            continue

    def ours(pid: int) -> bool:
        while pid > 1:
            if pid == os.getpid():
                return True
            pid = parent.get(pid, 0)
        return False

    return {name for pid, held_names in held.items() if not ours(pid) for name in held_names}


def _children() -> dict[int | None, Any]:
    # active_children() does not list the resource_tracker or the forkserver:
    # both are started outside multiprocessing.Process.
    return {process.pid: process for process in multiprocessing.active_children()}


def _end(process: Any) -> None:
    """Stop a leaked child so that it does not leak into the next test too."""
    for stop in (process.terminate, process.kill):
        if not process.is_alive():
            return
        stop()
        process.join(GRACE)


class Snapshot(NamedTuple):
    shm: frozenset[str]
    children: frozenset[int | None]
    threads: frozenset[threading.Thread]


def snapshot() -> Snapshot:
    """The /dev/shm entries, live children and threads now, to compare with later.

    No garbage collection first: whatever earlier code left to the collector
    was checked when that code ended, and if it goes now, it is not new.
    """
    return Snapshot(
        frozenset(_shm_entries()), frozenset(_children()), frozenset(threading.enumerate())
    )


def leaks_since(before: Snapshot) -> list[str]:
    """Children and /dev/shm entries that appeared since ``before`` and remain.

    A child still alive after :data:`GRACE` seconds is reported and stopped;
    a new thread gets as long to end (threads are not reported).
    Drop your references to shared objects first: spawn-context locks stay
    in /dev/shm as ``sem.mp-*`` as long as their object lives.
    """
    # Most tests leave nothing, which needs no garbage collection to see: a
    # full one takes tens of milliseconds in a worker that holds thousands
    # of collected tests, and two per test were a fifth of the suite's time.
    if not _anything_new(before):
        return []
    leaked = []
    for pid, process in _children().items():
        if pid in before.children:
            continue
        process.join(GRACE)
        if process.is_alive():
            leaked.append(f"child process {process.name!r} (pid {pid}) still alive")
            _end(process)
    # A Queue's feeder thread holds the queue's semaphores until it has
    # handled close(); after cancel_join_thread() nobody waits for it.
    for thread in set(threading.enumerate()) - before.threads:
        if thread is not threading.current_thread():
            thread.join(GRACE)
    gc.collect()
    new = _shm_entries() - before.shm
    # Beside another session (or another pytest-xdist worker), an entry of
    # theirs may be caught between its creation and its mapping, or between
    # unmapping and unlinking: give it GRACE to become mapped or go.
    end = time.monotonic() + GRACE
    while new:
        new -= _mapped_by_others(new)
        if not new or time.monotonic() >= end:
            break
        time.sleep(0.05)
        new &= _shm_entries()
    leaked += [f"{SHM}/{name}" for name in sorted(new)]
    return leaked


def _anything_new(before: Snapshot) -> bool:
    """Whether a live child, a live thread or a /dev/shm entry appeared since ``before``."""
    if any(pid not in before.children for pid in _children()):
        return True
    here = threading.current_thread()
    for thread in threading.enumerate():
        if thread not in before.threads and thread is not here and thread.is_alive():
            return True
    return bool(_shm_entries() - before.shm)


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves a child process or a new /dev/shm entry behind."""
    before = snapshot()
    failure_before = getattr(sys, "last_value", None)
    yield
    if getattr(sys, "last_value", None) is not failure_before:
        # pytest keeps a failed test's exception in sys.last_* for post-mortem
        # debugging (done by now); its frames would keep the test's objects
        # alive, reported here as leaks on top of the failure itself.
        for name in ("last_type", "last_value", "last_traceback", "last_exc"):
            if hasattr(sys, name):
                delattr(sys, name)
    # Fixture values stay referenced from item.funcargs until pytest's own
    # teardown ends, and with them whatever shared objects they hold.
    funcargs = getattr(request.node, "funcargs", None)
    if funcargs:
        funcargs.clear()
    leaked = leaks_since(before)
    if leaked:
        pytest.fail("leaked: " + ", ".join(leaked), pytrace=False)


_tracker_log = pytest.StashKey[str]()


def start_tracker_log(config: pytest.Config) -> None:
    """Start the resource_tracker with its stderr sent to a log file.

    Every process this session starts (spawn and forkserver children, the
    forkserver itself, a Manager's server) reuses this tracker, so its
    warnings all land in the log. Call before anything starts the tracker.
    """
    if _tracker_log in config.stash:
        return
    if getattr(resource_tracker._resource_tracker, "_fd", None) is not None:
        # Already started with another stderr: its warnings cannot be caught.
        config.stash[_tracker_log] = ""
        return
    fd, path = tempfile.mkstemp(prefix="shmref-resource-tracker-", suffix=".log")
    saved = os.dup(2)
    try:
        sys.stderr.flush()
        os.dup2(fd, 2)
        resource_tracker.ensure_running()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(fd)
    config.stash[_tracker_log] = path


def check_tracker_log(session: pytest.Session) -> None:
    """Stop the resource_tracker, echo its log, fail the session on a leak.

    Under pytest-xdist each worker has its own tracker: a worker hands its
    log to the controller (``workeroutput``), which reports every worker's
    (see :func:`collect_worker_log`), since a worker's exit status is not
    the run's.
    """
    path = session.config.stash.get(_tracker_log, None)
    if path is None:
        return
    del session.config.stash[_tracker_log]
    text = ""
    if path:
        gc.collect()  # run the finalizers that unregister what is already freed
        # Closing our end of its pipe makes the tracker unlink what is still
        # registered and print one warning per kind; _stop() waits for it.
        resource_tracker._resource_tracker._stop()  # type: ignore[attr-defined]
        with open(path, errors="replace") as log:
            text = log.read()
        os.unlink(path)
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: the controller reports it
        workeroutput["shmref_tracker_log"] = text
        return
    texts = [*session.config.stash.get(_worker_logs, []), text]
    for text in texts:
        _report(session, text)


_worker_logs = pytest.StashKey[list[str]]()


def collect_worker_log(config: pytest.Config, workeroutput: dict[str, Any]) -> None:
    """Keep an xdist worker's tracker log for the controller's :func:`check_tracker_log`."""
    text = workeroutput.get("shmref_tracker_log", "")
    if text:
        config.stash.setdefault(_worker_logs, []).append(text)


def _report(session: pytest.Session, text: str) -> None:
    if not text.strip():
        return
    leaked = "leaked" in text
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        title = "resource_tracker reported leaks" if leaked else "resource_tracker output"
        reporter.write("\n")
        reporter.write_sep("=", title, red=leaked, yellow=not leaked)
        reporter.write(text if text.endswith("\n") else text + "\n")
    else:
        sys.stderr.write(text)
    if leaked:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
