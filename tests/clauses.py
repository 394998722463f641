"""The clauses every way is held to, and which ways each one is run against.

One source for the lifecycle and fault suites (``tests/test_lifecycle.py``,
``tests/test_faults.py``), which install each clause for primitive x way x
start method, and for the guarantees page (``docs/guarantees.md``), which
shows, for each way, what each clause says happens and the test that
checks it. It imports no test framework, so the docs build can read it.

A clause a way cannot keep is in that way's ``CANNOT`` (in
``tests/ways_<primitive>.py``): strict xfail in the suite, "no" with the
reason on the page.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

PRIMITIVES: dict[str, ModuleType] = {
    path.stem.removeprefix("ways_"): importlib.import_module(f"tests.{path.stem}")
    for path in sorted(Path(__file__).parent.glob("ways_*.py"))
}


def waits_on_creator(ways: ModuleType, way: str) -> bool:
    """The primitive has a call that waits on its creator (a lock's acquire, a get)."""
    return hasattr(ways, "wait_in_child")


def starts_processes(ways: ModuleType, way: str) -> bool:
    """The way starts processes (an owner, a server, a tracker)."""
    return "queue" in way or "manager" in way


def has_peer(ways: ModuleType, way: str) -> bool:
    """The way's state lives in an owner or server process (every Queue and Manager way)."""
    return "queue" in way or "manager" in way


def has_server(ways: ModuleType, way: str) -> bool:
    """The way's state lives in another process: an owner, a server, or a redis-server.

    A redis-server is not the creator's child, so Ctrl-C to the creator's
    process group does not reach it (:func:`has_peer`); it can die all the same.
    """
    return has_peer(ways, way) or way.startswith("redis")


def holds_internal_lock(ways: ModuleType, way: str) -> bool:
    """The shared-memory ways' internal locks, which a killed holder may leave taken.

    A lock's or a channel's waits are the user's own (the lock's holder, the
    channel's producer). The owner ways (Queue) and Manager ways share
    nothing a client can hold: the random kills cover their killed clients.
    """
    return ways.__name__ not in ("tests.ways_locks", "tests.ways_channel") and (
        way.startswith("ctypes") or way == "segment"
    )


class Clause(NamedTuple):
    """What the page says of a clause, and where the suite checks it."""

    fault: str  # the column's heading
    holds: str  # what happens, where a way keeps it
    test: str  # the test that checks it
    only: Callable[[ModuleType, str], bool] | None = None  # the ways it applies to


CLAUSES: dict[str, Clause] = {
    "closed": Clause(
        "call on a closed handle",
        "the closed error, before any argument check",
        "tests/test_lifecycle.py::test_closed_handle_refuses_every_call",
    ),
    "close_twice": Clause(
        "close() twice", "harmless", "tests/test_lifecycle.py::test_close_twice"
    ),
    "with": Clause(
        "with, ending in an exception",
        "closes; the exception is kept",
        "tests/test_lifecycle.py::test_with_closes_and_keeps_the_error_in_flight",
    ),
    "child_close": Clause(
        "a child's close()",
        "detaches only the child",
        "tests/test_lifecycle.py::test_child_close_detaches_only_the_child",
    ),
    "creator_close": Clause(
        "the creator's close()",
        "stops the owner or server; no segment left",
        "tests/test_lifecycle.py::test_creator_close_stops_owner_and_server",
    ),
    "dead_owner": Clause(
        "owner or server killed",
        "every call ends within its timeout (OwnerGone); close() is prompt",
        "tests/test_lifecycle.py::test_dead_owner_or_server_gives_a_clear_error",
        has_server,
    ),
    "stopped_owner": Clause(
        "owner or server stopped (SIGSTOP)",
        "a call with an end to its wait raises TimeoutError within that wait and the "
        "handle's timeout; after SIGCONT the handle's connection answers again; the creator's "
        "close() of one left stopped kills it within 2 s",
        "tests/test_lifecycle.py::test_stopped_owner_or_server_is_a_timeout",
        has_peer,
    ),
    "owner_sigint": Clause(
        "Ctrl-C to the process group",
        "the owner or server lives on, with its state",
        "tests/test_lifecycle.py::test_owner_or_server_outlives_ctrl_c",
        has_peer,
    ),
    "stalled_close": Clause(
        "close() while a thread is blocked in a call",
        "the blocked call wakes with the closed error",
        "tests/test_lifecycle.py::test_close_wakes_a_blocked_call",
    ),
    "creator_close_wakes": Clause(
        "the creator's close() while another process waits",
        "the waiter wakes with the closed error, timeout=None too",
        "tests/test_lifecycle.py::test_creator_close_wakes_waiters_in_other_processes",
        waits_on_creator,
    ),
    "timeout_rule": Clause(
        "a bad timeout= (True, NaN, negative)",
        "refused in the constructor; inf and huge values wait as long as it takes",
        "tests/test_lifecycle.py::test_constructor_timeout_follows_one_rule",
    ),
    "creator_killed": Clause(
        "the creator SIGKILLed",
        "no owner, server or tracker left 2 s later",
        "tests/test_lifecycle.py::test_creator_killed_leaves_no_process",
        starts_processes,
    ),
    "creator_killed_wakes": Clause(
        "the creator SIGKILLed while another process waits",
        "the waiter wakes within about 1 s, timeout=None too",
        "tests/test_lifecycle.py::test_creator_killed_wakes_waiters",
        waits_on_creator,
    ),
    "producer killed": Clause(
        "a producer SIGKILLed inside put",
        "the next put and get work",
        "tests/test_faults.py::test_a_producer_killed_inside_put_leaves_the_channel_usable",
        lambda ways, way: ways.__name__ == "tests.ways_channel",
    ),
    "holder killed": Clause(
        "the holder of the internal lock SIGKILLed",
        "the next caller takes the lock over and repairs",
        "tests/test_faults.py::test_a_call_succeeds_after_the_holder_is_killed",
        holds_internal_lock,
    ),
}


def applies(clause: str, primitive: str, way: str) -> bool:
    ways = PRIMITIVES[primitive]
    if clause in getattr(ways, "NOT_APPLICABLE", {}):
        return False
    only = CLAUSES[clause].only
    return only is None or only(ways, way)


def cannot(clause: str, primitive: str, way: str) -> str | None:
    """Why ``way`` cannot keep ``clause`` (its strict xfail reason), or None."""
    reasons: dict[tuple[str, str], str] = getattr(PRIMITIVES[primitive], "CANNOT", {})
    return reasons.get((clause, way))
