"""The peer contract report's harness works: its checks catch a broken peer, its table renders.

What the peers themselves do is the report's business (``nox -s peers``),
never this suite's: a real peer's check here only has to reach a verdict,
held or failed, so that an adapter that no longer fits its peer's API
(an error) shows.
"""

from __future__ import annotations

import json
import os
import queue
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from typing import Any

import pytest

from tests.leaks import SHM
from tests.peer_adapters import PEERS, Peer
from tests.peer_checks import ASKED, Outcome
from tests.peers_contract import installed, run_isolated, run_one

EXT = Path(__file__).parent.parent / "docs" / "_ext"


# Fake peers: one that keeps the clause and ones deliberately broken.


class LockedCounter:
    """A counter kept: a multiprocessing.Value under its lock."""

    def create(self, ctx: Any) -> Any:
        return ctx.Value("q", 0)

    def open(self, ref: Any) -> Any:
        return ref

    def increment(self, handle: Any) -> None:
        with handle.get_lock():
            handle.value += 1

    def total(self, handle: Any) -> int:
        return int(handle.value)

    def close(self, handle: Any) -> None:
        pass

    def destroy(self, ref: Any) -> None:
        pass


class UnsharedCounter(LockedCounter):
    """Broken: each process counts in memory of its own, so no child's increment arrives."""

    def create(self, ctx: Any) -> Any:
        return 0

    def open(self, ref: Any) -> Any:
        return [ref]

    def increment(self, handle: Any) -> None:
        handle[0] += 1

    def total(self, handle: Any) -> int:
        return int(handle[0])


class CrashingCounter(LockedCounter):
    """Broken: its increment raises in a child."""

    def increment(self, handle: Any) -> None:
        raise RuntimeError("peer bug")


class ImpatientChannel:
    """Broken: get(timeout) and put(timeout) give up at once."""

    def create(self, ctx: Any, capacity: int) -> Any:
        return None

    def get(self, ref: Any, timeout: float) -> Any:
        raise queue.Empty

    def put(self, ref: Any, message: Any, timeout: float) -> None:
        raise queue.Full

    def destroy(self, ref: Any) -> None:
        pass


class LeakyLock:
    """Broken: a lock that leaves a file in /dev/shm behind, or a segment unlinked by nobody."""

    leaks_to = "dev-shm"

    def create(self, ctx: Any) -> Any:
        if self.leaks_to == "dev-shm":
            Path(SHM, f"shmref-test-leak-{os.getpid()}").touch()
        else:
            SharedMemory(create=True, size=16).close()  # the resource tracker unlinks it
        return ctx.Lock()

    def open(self, ref: Any) -> Any:
        return ref

    def acquire(self, handle: Any, timeout: float) -> bool:
        return bool(handle.acquire(timeout=timeout))

    def release(self, handle: Any) -> None:
        handle.release()

    def close(self, handle: Any) -> None:
        pass

    def destroy(self, ref: Any) -> None:
        pass


class TrackedLeakyLock(LeakyLock):
    leaks_to = "tracker"


def fake(adapter: str, primitive: str) -> Peer:
    return Peer(adapter, adapter, primitive, "none", "none", f"{__name__}:{adapter}")


def test_a_kept_clause_holds(start_method: str) -> None:
    outcome = run_one(fake("LockedCounter", "counter"), "totals", start_method)
    assert outcome.state == "holds", outcome
    assert "interleaved" in outcome.evidence


def test_lost_increments_are_caught_with_their_share(start_method: str) -> None:
    outcome = run_one(fake("UnsharedCounter", "counter"), "totals", start_method)
    assert outcome.state == "fails"
    assert outcome.evidence.startswith("lost 100% of increments (0 of "), outcome


def test_a_peer_raising_in_a_child_fails_with_its_error(start_method: str) -> None:
    outcome = run_one(fake("CrashingCounter", "counter"), "totals", start_method)
    assert outcome == Outcome("fails", "a writer raised RuntimeError: peer bug"), outcome


def test_timeouts_not_waited_are_caught(start_method: str) -> None:
    outcome = run_one(fake("ImpatientChannel", "channel"), "timeout-channel", start_method)
    assert outcome.state == "fails"
    assert "get raised Empty after 0.0" in outcome.evidence, outcome
    assert f"of timeout={ASKED}" in outcome.evidence


def test_what_a_peer_leaves_in_dev_shm_is_found() -> None:
    before = set(os.listdir(SHM))
    try:
        outcome = run_isolated(fake("LeakyLock", "locks"), "leaves", "fork", private=False)
    finally:
        for name in set(os.listdir(SHM)) - before:
            if name.startswith("shmref-test-leak-"):
                Path(SHM, name).unlink()
    assert outcome.state == "fails"
    assert outcome.evidence.startswith("left 1 in /dev/shm (shmref-test-leak-"), outcome


def test_what_the_resource_tracker_cleans_up_is_found() -> None:
    outcome = run_isolated(fake("TrackedLeakyLock", "locks"), "leaves", "fork", private=False)
    assert outcome.state == "fails"
    assert outcome.evidence == "the resource tracker cleaned up 1 leaked shared_memory object"


# The real peers' adapters still fit their APIs: one cheap check each, in an
# interpreter of its own (importing UltraDict changes the whole process).
CHEAP = {
    "atomics": "totals",
    "ultradict": "torn-dict",
    "ultradict-shared-lock": "torn-dict",
    "shared-memory-dict": "torn-dict",
    "shared-memory-dict-lock": "torn-dict",
    "sharedarray": "torn-array",
    "faster-fifo": "timeout-channel",
    "faster-fifo-sized": "order-large",
    "posix-ipc": "timeout-lock",
}


@pytest.mark.parametrize("peer", PEERS, ids=[p.key for p in PEERS])
def test_adapter_reaches_a_verdict(peer: Peer) -> None:
    if installed(peer) is None:
        pytest.skip(f"{peer.label} is not installed: {peer.install}")
    outcome = run_isolated(peer, CHEAP[peer.key], "fork", private=False)
    assert outcome.state in ("holds", "fails"), outcome


def test_every_peer_has_a_cheap_check() -> None:
    assert set(CHEAP) == {p.key for p in PEERS}


# The pages' tables, from a stored result.

REPORT: dict[str, Any] = {
    "generated_by": "nox -s peers",
    "datetime": "2026-12-07T06:00:00+00:00",
    "commit": "abc123",
    "deadline_seconds": 60.0,
    "runs": 3,
    "machine": {
        "cpu": "Some CPU",
        "cores": 2,
        "os": "Linux 6",
        "python": "CPython 3.12.1",
        "private_dev_shm": True,
    },
    "clauses": {
        "totals": {"primitive": "counter", "text": "2 writers' increments all counted"},
        "leaves": {"primitive": "*", "text": "nothing left in /dev/shm"},
    },
    "peers": [
        {
            "key": "p",
            "label": "Peer, fast=True",
            "primitive": "counter",
            "version": "1.2",
            "install": "pip install peer",
            "results": {
                "totals": {
                    "spawn": {"state": "fails", "evidence": "lost 27% of increments"},
                    "fork": {"state": "holds", "evidence": "10 of 10"},
                },
                "leaves": {"any": {"state": "n/a", "evidence": "it owns no memory"}},
            },
        },
        {
            "key": "q",
            "label": "Other",
            "primitive": "counter",
            "version": None,
            "install": "pip install other",
            "results": {
                "totals": {
                    "spawn": {"state": "skipped", "evidence": "not installed: pip install other"},
                    "fork": {
                        "state": "fails",
                        "evidence": "lost 1 of 10 increments; a writer raised OverflowError: "
                        "FRAME length exceeds system's maximum of 9223372036854775807 bytes",
                    },
                },
            },
        },
    ],
}


@pytest.fixture
def peers_ext(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(EXT))
    import peers

    return peers


def test_table_says_what_held_and_what_failed(peers_ext: Any) -> None:
    counter = peers_ext.render(REPORT)["counter"]
    rows = [line for line in counter.splitlines() if line.startswith("| ")]
    assert rows[0] == "| peer | clause | holds under spawn? | under fork? |"
    assert rows[1] == (
        "| Peer 1.2, fast=True | 2 writers' increments all counted "
        "| **no**: lost 27% of increments | yes |"
    )
    assert rows[2] == (
        "| Other | 2 writers' increments all counted | not run: not installed: pip install other "
        "| **no**: lost 1 of 10 increments; "
        "a writer raised OverflowError: FRAME length exceeds system's … |"
    )
    assert "*nothing left in /dev/shm* for Peer 1.2, fast=True: it owns no memory" in counter
    assert "on Some CPU (2 cores)" in counter and "commit `abc123`" in counter
    assert "kept in each of 3 runs" in counter


def test_a_check_that_could_not_tell_is_undecided(peers_ext: Any) -> None:
    assert peers_ext.cell({"state": "error", "evidence": "no result in 90 s: killed"}) == (
        "undecided: no result in 90 s: killed"
    )


def test_pages_without_peers_or_without_a_run_say_so(peers_ext: Any) -> None:
    assert "has no peer for this page" in peers_ext.render(REPORT)["channel"]
    assert set(peers_ext.render(None)) == {"counter", "table", "arrays", "channel", "locks"}
    assert "nox -s peers" in peers_ext.render(None)["table"]


def test_the_stored_run_renders(peers_ext: Any) -> None:
    if not peers_ext.STORED.exists():
        pytest.skip("no stored run: nox -s peers")
    parts = peers_ext.render(json.loads(peers_ext.STORED.read_text()))
    assert all("| peer | clause |" in parts[p] for p in peers_ext.PRIMITIVES)
