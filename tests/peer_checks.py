"""The contract clauses a peer library's API can express, as checks with a deadline.

Each check runs one clause against one peer (``tests/peer_adapters.py``)
under one start method and returns an :class:`Outcome`: ``holds``, or
``fails`` with what it saw ("lost 27% of increments"), or ``error`` when
the check could not tell. A peer's exception in a child is a finding
(``fails``), not an error of the check. Every wait is bounded by the check's
deadline, and waits for an event (a message, a child's exit), never a
fixed sleep. ``tests/peers_contract.py`` runs them in interpreters of their
own and stores the report.
"""

from __future__ import annotations

import os
import queue
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Any, NamedTuple


class Outcome(NamedTuple):
    """What a check found: a state and, for anything but ``holds``, the evidence."""

    state: str  # holds | fails | error | skipped | n/a
    evidence: str = ""


class Clause(NamedTuple):
    primitive: str
    text: str  # what the page's row says holds


#: The clauses, by id, in the order of the pages' rows.
CLAUSES: dict[str, Clause] = {
    "totals": Clause("counter", "2 writers' increments all counted"),
    "distinct-keys": Clause("table", "2 writers, each incrementing its own key: no write lost"),
    "same-key": Clause("table", "2 writers incrementing one key under its lock: exact total"),
    "torn-dict": Clause("table", "a read while another process writes: a value that was written"),
    "torn-array": Clause("arrays", "a read while another process writes: one write, not half"),
    "order-small": Clause(
        "channel",
        "2 producers x 2 consumers in get(timeout), 64 B: each message once, in producer order",
    ),
    "order-large": Clause(
        "channel",
        "the same with 16 KiB messages, more than a consumer's first receive buffer holds",
    ),
    "timeout-channel": Clause(
        "channel", "get(timeout) on an empty queue, put(timeout) on a full one: wait, then raise"
    ),
    "exclusion": Clause("locks", "used as a lock by 3 processes: one holder at a time"),
    "timeout-lock": Clause(
        "locks", "acquire(timeout) while another process holds it: waits, fails"
    ),
    "leaves": Clause(
        "*", "nothing left in /dev/shm after close and exit; the resource tracker silent"
    ),
}


def clauses_of(primitive: str) -> list[str]:
    return [c for c, clause in CLAUSES.items() if clause.primitive in (primitive, "*")]


#: Seconds a check may take; the runner kills it a little after that.
DEADLINE = 60.0
#: The timeout the timeout clauses ask for, and how much longer a wait may take.
ASKED, LATE = 0.5, 2.0


def percent(part: int, whole: int) -> str:
    """A share in 2 significant digits below 10% (6.9%), whole above (27%, 100%)."""
    share = 100 * part / whole if whole else 0.0
    return f"{share:.0f}%" if share >= 10 else f"{share:.2g}%"


def raised(error: BaseException) -> str:
    text = str(error).splitlines()[0][:80] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


# ---------------------------------------------------------------- children


def _report_back(pipe: Connection, target: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        result = ("ok", target(*args))
    except BaseException as error:  # the peer's failure is the finding
        result = ("raised", raised(error))
    pipe.send(result)
    pipe.close()


class Children:
    """Processes started for a check, each sending back its target's result or error."""

    def __init__(self, ctx: BaseContext, deadline: float) -> None:
        self.ctx, self.deadline = ctx, deadline
        self.processes: list[BaseProcess] = []
        self.pipes: list[Connection] = []

    def start(self, target: Callable[..., Any], *args: Any) -> int:
        reader, writer = self.ctx.Pipe(duplex=False)  # type: ignore[attr-defined]
        process = self.ctx.Process(target=_report_back, args=(writer, target, args))  # type: ignore[attr-defined]
        process.start()
        writer.close()
        self.processes.append(process)
        self.pipes.append(reader)
        return len(self.processes) - 1

    def results(self, *which: int) -> list[tuple[str, Any]]:
        """("ok", value), ("raised", error), ("died", exit code) or ("late", None) for each."""
        got: dict[int, tuple[str, Any]] = {}
        pending = set(which)
        while pending:
            left = self.deadline - time.monotonic()
            if left <= 0:
                break
            waitables = [self.pipes[i] for i in pending] + [
                self.processes[i].sentinel for i in pending
            ]
            wait(waitables, timeout=left)
            for i in list(pending):
                try:
                    if self.pipes[i].poll():
                        got[i] = self.pipes[i].recv()
                        pending.discard(i)
                except EOFError:  # exited without a word: killed or crashed
                    self.processes[i].join(5)
                    got[i] = ("died", self.processes[i].exitcode)
                    pending.discard(i)
        for i in pending:
            self.processes[i].kill()
            got[i] = ("late", None)
        for i in which:
            self.processes[i].join(5)
        return [got[i] for i in which]

    def close(self) -> None:
        for process in self.processes:
            if process.is_alive():
                process.kill()
            process.join(5)
        for pipe in self.pipes:
            pipe.close()


def troubles(results: list[tuple[str, Any]], role: str) -> list[str]:
    """Evidence for the children that did not return: what they raised, or how they ended."""
    words = []
    for kind, value in results:
        if kind == "raised":
            words.append(f"a {role} raised {value}")
        elif kind == "died":
            words.append(f"a {role} died (exit code {value})")
        elif kind == "late":
            words.append(f"a {role} did not finish in {DEADLINE:.0f} s")
    return list(dict.fromkeys(words))


def judged(problems: list[str], holds: str) -> Outcome:
    return Outcome("fails", "; ".join(problems)) if problems else Outcome("holds", holds)


# ---------------------------------------------------------------- two writers

#: Operations per writer at least, and times at least that a writer sees the
#: other's count move between two of its own operations (so they interleaved)
#: before it stops.
LEAST, INTERLEAVED = 2_000, 300
#: The shared counts of a two-writer check: done, finished flag and
#: interleavings of each writer.
DONE, FINISHED, MET = 0, 2, 4


def paced(op: Callable[[], None], shared: Any, me: int, barrier: Any, until: float) -> None:
    """Run ``op`` LEAST times, and on until the other writer interleaved or finished.

    Counts in ``shared`` each ``op`` that returned: the parent's expected
    total, whichever way this writer ends.
    """
    other = 1 - me
    barrier.wait(DEADLINE)
    last = shared[DONE + other]
    try:
        while time.monotonic() < until:
            op()
            shared[DONE + me] += 1
            if shared[DONE + other] != last:
                shared[MET + me] += 1
                last = shared[DONE + other]
            if shared[DONE + me] >= LEAST and (
                shared[MET + me] >= INTERLEAVED or shared[FINISHED + other]
            ):
                break
    finally:
        shared[FINISHED + me] = 1


def count_up(peer: Any, ref: Any, shared: Any, me: int, barrier: Any, until: float) -> None:
    counter = peer.open(ref)
    paced(lambda: peer.increment(counter), shared, me, barrier, until)
    peer.close(counter)


def increment_own_key(
    peer: Any, ref: Any, shared: Any, me: int, barrier: Any, until: float
) -> None:
    table = peer.open(ref)
    key = f"w{me}"
    paced(lambda: peer.increment(table, key), shared, me, barrier, until)  # its only writer
    peer.close(table)


def increment_shared_key(
    peer: Any, ref: Any, shared: Any, me: int, barrier: Any, until: float
) -> None:
    table = peer.open(ref)
    paced(lambda: peer.increment_locked(table, "k"), shared, me, barrier, until)
    peer.close(table)


class Written(NamedTuple):
    """What two writers did: operations each completed, interleavings, what went wrong."""

    done: list[int]
    met: int
    problems: list[str]


def two_writers(
    ctx: BaseContext, deadline: float, work: Callable[..., None], peer: Any, ref: Any
) -> Written:
    shared = ctx.RawArray("q", 6)  # type: ignore[attr-defined]
    barrier = ctx.Barrier(2)  # type: ignore[attr-defined]
    children = Children(ctx, deadline)
    until = deadline - 5  # writers stop in time to report
    try:
        ran = children.results(
            *(children.start(work, peer, ref, shared, me, barrier, until) for me in (0, 1))
        )
    finally:
        children.close()
    return Written(
        [shared[DONE], shared[DONE + 1]], shared[MET] + shared[MET + 1], troubles(ran, "writer")
    )


def lost(got: int, want: int, what: str) -> str:
    return f"lost {percent(want - got, want)} of {what} ({got:,} of {want:,})"


def exercised(written: Written, holds: str) -> Outcome:
    """A race check's outcome: it can only hold if the writers did interleave."""
    if not written.met and not written.problems:
        return Outcome("error", "the writers never ran at the same time")
    return judged(written.problems, f"{holds}; the writers interleaved {written.met:,} times")


def check_totals(peer: Any, ctx: BaseContext, deadline: float) -> Outcome:
    ref = peer.create(ctx)
    try:
        written = two_writers(ctx, deadline, count_up, peer, ref)
        # Opened after the fork: a forked child would inherit its views.
        counter = peer.open(ref)
        total = peer.total(counter)
        peer.close(counter)
    finally:
        peer.destroy(ref)
    want = sum(written.done)
    if total != want:
        written.problems.insert(0, lost(total, want, "increments"))
    return exercised(written, f"{want:,} of {want:,} increments")


# ---------------------------------------------------------------- Dict


def _table_race(
    peer: Any, ctx: BaseContext, deadline: float, work: Callable[..., None], keys: list[str]
) -> tuple[list[Any], Written]:
    """Two writers run ``work`` on a fresh table holding 0 at ``keys``; the keys' values after."""
    ref = peer.create(ctx)
    table = peer.open(ref)
    try:
        for key in keys:
            peer.set(table, key, 0)
        written = two_writers(ctx, deadline, work, peer, ref)
        try:
            values = [peer.get(table, key) for key in keys]
        except Exception as error:  # the table the writers left cannot be read
            written.problems.insert(0, f"reading the table after raised {raised(error)}")
            values = [None] * len(keys)
    finally:
        peer.close(table)
        peer.destroy(ref)
    return values, written


def check_distinct_keys(peer: Any, ctx: BaseContext, deadline: float) -> Outcome:
    values, written = _table_race(peer, ctx, deadline, increment_own_key, ["w0", "w1"])
    want = sum(written.done)
    # Per key: a write whose call raised may still have landed, on its own key.
    missing = (
        sum(max(0, done - value) for done, value in zip(written.done, values, strict=True))
        if None not in values
        else 0
    )
    if missing:
        written.problems.insert(0, lost(want - missing, want, "writes"))
    return exercised(written, f"{want:,} of {want:,} writes")


def check_same_key(peer: Any, ctx: BaseContext, deadline: float) -> Outcome:
    (total,), written = _table_race(peer, ctx, deadline, increment_shared_key, ["k"])
    want = sum(written.done)
    if total is not None and total < want:
        written.problems.insert(0, lost(total, want, "increments"))
    elif total is not None and total > want + 2:  # each writer's last call may raise, landed
        written.problems.insert(0, f"{total - want:,} more increments than were made ({want:,})")
    return exercised(written, f"{want:,} of {want:,} increments")


#: Values a writer flips between: types and lengths differ, so a mix of two shows.
FLIPS = ("a" * 16, 7, b"bb", -1.5, "c" * 300)
#: Reads at least, and distinct values seen at least, before a torn-read check judges.
READS, SEEN = 3_000, 2


def flip_values(peer: Any, ref: Any, started: Any, stop: Any) -> int:
    table = peer.open(ref)
    writes = 0
    while not stop.is_set():
        peer.set(table, "k", FLIPS[writes % len(FLIPS)])
        writes += 1
        if writes == 1:
            started.set()
    peer.close(table)
    return writes


def _read_while_writing(
    ctx: BaseContext,
    deadline: float,
    writer: Callable[..., Any],
    args: tuple[Any, ...],
    read: Callable[[], Any],
    whole: Callable[[Any], bool],
    torn: str,
) -> Outcome:
    """Read until READS reads have seen SEEN distinct values; count reads not ``whole``.

    ``torn`` says what a read that is not whole did: "mixed two writes".
    """
    started, stop = ctx.Event(), ctx.Event()  # type: ignore[attr-defined]
    children = Children(ctx, deadline)
    bad: dict[str, int] = {}
    seen: set[str] = set()
    reads = 0
    try:
        index = children.start(writer, *args, started, stop)
        if not started.wait(max(0.0, deadline - time.monotonic())):
            return Outcome("error", "the writer never wrote")
        while (reads < READS or len(seen) < SEEN) and time.monotonic() < deadline:
            reads += 1
            try:
                value = read()
            except Exception as error:
                key = f"raised {type(error).__name__}"
            else:
                if whole(value):
                    seen.add(repr(value))
                    continue
                key = torn
            bad[key] = bad.get(key, 0) + 1
        stop.set()
        (ran,) = children.results(index)
    finally:
        stop.set()
        children.close()
    problems = [f"{n:,} of {reads:,} reads {what}" for what, n in bad.items()]
    problems += troubles([ran], "writer")
    if not problems and len(seen) < SEEN:
        return Outcome("error", f"the reads never overlapped a write in {DEADLINE:.0f} s")
    return judged(problems, f"{reads:,} reads, every one a written value")


def check_torn_dict(peer: Any, ctx: BaseContext, deadline: float) -> Outcome:
    ref = peer.create(ctx)
    table = peer.open(ref)
    try:
        peer.set(table, "k", FLIPS[0])
        written = {(type(v), v) for v in FLIPS}
        return _read_while_writing(
            ctx,
            deadline,
            flip_values,
            (peer, ref),
            lambda: peer.get(table, "k"),
            lambda value: (type(value), value) in written,
            "returned a value never written",
        )
    finally:
        peer.close(table)
        peer.destroy(ref)


# ---------------------------------------------------------------- Array

ITEMS = 1 << 17  # 1 MiB of int64: a copy long enough to be caught half done


def fill_alternately(peer: Any, ref: Any, started: Any, stop: Any) -> int:
    array = peer.attach(ref)
    writes = 0
    while not stop.is_set():
        array[:] = 1 + writes % 2
        writes += 1
        if writes == 1:
            started.set()
    del array
    return writes


def check_torn_array(peer: Any, ctx: BaseContext, deadline: float) -> Outcome:
    ref = peer.create(ctx, ITEMS)
    array = peer.attach(ref)
    try:
        return _read_while_writing(
            ctx,
            deadline,
            fill_alternately,
            (peer, ref),
            array.copy,
            lambda copy: bool(copy.min() == copy.max()),
            "mixed two writes",
        )
    finally:
        del array
        peer.destroy(ref)


# ---------------------------------------------------------------- Channel

#: (messages per producer, payload bytes) of the two order clauses.
SMALL, LARGE = (5_000, 64), (200, 16 * 1024)
CAPACITY = 64 * 1024  # bytes: producers wait for room, so the processes interleave
STOP = "stop"


def produce(peer: Any, ref: Any, producer: int, count: int, size: int) -> int:
    """Put ``count`` numbered messages; how many times put raised Full before its timeout."""
    early = 0
    for seq in range(count):
        while True:  # the runner kills a check that outlives its deadline
            begun = time.monotonic()
            try:
                peer.put(ref, (producer, seq, bytes([seq % 251]) * size), DEADLINE)
                break
            except queue.Full:
                if time.monotonic() - begun < 0.9 * DEADLINE:
                    early += 1  # it did not wait its timeout
    return early


def consume(peer: Any, ref: Any, size: int, ready: Any) -> tuple[list[tuple[int, int]], int, int]:
    """Get until the stop mark: (producer, seq) pairs, corrupt payloads, early Empty raises."""
    peer.prepare_consumer(ref, size + 64)
    ready.wait(DEADLINE)
    got: list[tuple[int, int]] = []
    corrupt = early = 0
    while True:
        begun = time.monotonic()
        try:
            message = peer.get(ref, DEADLINE)
        except queue.Empty:
            if time.monotonic() - begun < 0.9 * DEADLINE:
                early += 1  # it did not wait its timeout: a user would have given up here
                continue
            raise
        if message == STOP:
            return got, corrupt, early
        producer, seq, payload = message
        corrupt += payload != bytes([seq % 251]) * size
        got.append((producer, seq))


class Exchange(NamedTuple):
    """One round of 2 producers x 2 consumers: what was sent and what each consumer got."""

    sent: list[tuple[str, Any]]
    received: list[tuple[str, Any]]


def exchange(
    peer: Any, ref: Any, ctx: BaseContext, deadline: float, count: int, size: int
) -> Exchange:
    children = Children(ctx, deadline)
    # Both consumers waiting in get when the first message comes: the case
    # where two of them reach for one message.
    ready = ctx.Barrier(3)  # type: ignore[attr-defined]
    try:
        consumers = [children.start(consume, peer, ref, size, ready) for _ in "ab"]
        ready.wait(max(0.001, deadline - time.monotonic()))
        producers = [children.start(produce, peer, ref, p, count, size) for p in range(2)]
        sent = children.results(*producers)
        for _ in consumers:  # after every message: FIFO
            peer.put(ref, STOP, max(0.001, deadline - time.monotonic()))
        return Exchange(sent, children.results(*consumers))
    finally:
        children.close()


def delivery_problems(round_: Exchange, count: int) -> dict[str, int]:
    """Counts of what went wrong in one round, by the phrase that reports it."""
    problems = dict.fromkeys(
        troubles(round_.sent, "producer") + troubles(round_.received, "consumer"), 1
    )
    lists = [value[0] for kind, value in round_.received if kind == "ok"]
    every = [pair for got in lists for pair in got]
    if len(lists) == 2:
        problems["lost"] = 2 * count - len(set(every))
    problems["delivered twice"] = len(every) - len(set(every))
    problems["out of their producer's order"] = sum(
        a > b
        for got in lists
        for p in range(2)
        for a, b in zip(
            [seq for q, seq in got if q == p], [seq for q, seq in got if q == p][1:], strict=False
        )
    )
    problems["corrupted"] = sum(value[1] for kind, value in round_.received if kind == "ok")
    problems[f"get(timeout={DEADLINE:.0f}) raised queue.Empty without waiting"] = sum(
        value[2] for kind, value in round_.received if kind == "ok"
    )
    problems[f"put(timeout={DEADLINE:.0f}) raised queue.Full without waiting"] = sum(
        value for kind, value in round_.sent if kind == "ok"
    )
    return problems


def _order(
    peer: Any, ctx: BaseContext, deadline: float, count: int, size: int, rounds: int
) -> Outcome:
    """Up to ``rounds`` rounds on one channel, each with fresh consumers (a first get is a case).

    A round starts only in the first half of the deadline (spawn is slow).
    """
    ref = peer.create(ctx, CAPACITY)
    totals: dict[str, int] = {}
    ran = 0
    try:
        while ran < rounds and (not ran or time.monotonic() < deadline - DEADLINE / 2):
            ran += 1
            for problem, n in delivery_problems(
                exchange(peer, ref, ctx, deadline, count, size), count
            ).items():
                totals[problem] = totals.get(problem, 0) + n
    finally:
        peer.destroy(ref)
    messages = 2 * count * ran
    per = f" in {ran} rounds" if ran > 1 else ""
    found = []
    for problem, n in totals.items():
        if not n:
            continue
        if problem.startswith("a "):  # a child's error: said once
            found.append(problem)
        elif problem.startswith(("get", "put")):
            found.append(f"{problem}, {n:,} " + ("time" if n == 1 else "times") + per)
        else:
            found.append(f"{n:,} of {messages:,} messages {problem}")
    return judged(found, f"{messages:,} messages{per}, each once, in order")


def check_order_small(peer: Any, ctx: BaseContext, deadline: float) -> Outcome:
    return _order(peer, ctx, deadline, *SMALL, rounds=1)


def check_order_large(peer: Any, ctx: BaseContext, deadline: float) -> Outcome:
    # A consumer's first large message is when its receive buffer grows:
    # every round starts 2 new consumers (as many rounds as half the deadline allows).
    return _order(peer, ctx, deadline, *LARGE, rounds=20)


def time_out_both_ways(peer: Any, ref: Any) -> list[tuple[str, float]]:
    """In a child: (what happened, seconds) for a get on the empty channel, a put on a full one."""
    seen = []
    begun = time.monotonic()
    try:
        peer.get(ref, ASKED)
        seen.append(("get returned a message", time.monotonic() - begun))
    except queue.Empty:
        seen.append(("get raised Empty", time.monotonic() - begun))
    for _ in range(10_000):  # fills the 4 KiB channel long before
        begun = time.monotonic()
        try:
            peer.put(ref, bytes(1000), ASKED)
        except queue.Full:
            seen.append(("put raised Full", time.monotonic() - begun))
            break
    else:
        seen.append(("put never raised Full", 0.0))
    return seen


def judge_wait(what: str, waited: float, expected: str) -> str | None:
    """None if ``what`` is ``expected`` after waiting ASKED (to LATE s more); else the evidence."""
    if what != expected:
        return f"{what} (timeout={ASKED})"
    if waited < ASKED - 0.01:
        return f"{what} after {waited:.3f} s of timeout={ASKED}"
    if waited > ASKED + LATE:
        return f"{what} after {waited:.1f} s of timeout={ASKED}"
    return None


def check_timeout_channel(peer: Any, ctx: BaseContext, deadline: float) -> Outcome:
    ref = peer.create(ctx, 4096)
    children = Children(ctx, deadline)
    try:
        ((kind, value),) = children.results(children.start(time_out_both_ways, peer, ref))
    finally:
        children.close()
        peer.destroy(ref)
    if kind != "ok":
        return judged(troubles([(kind, value)], "child"), "")
    (got, got_s), (put, put_s) = value
    problems = [
        p
        for p in (
            judge_wait(got, got_s, "get raised Empty"),
            judge_wait(put, put_s, "put raised Full"),
        )
        if p
    ]
    return judged(problems, f"get waited {got_s:.2f} s, put {put_s:.2f} s")


# ---------------------------------------------------------------- Lock

ROUNDS = 300


def occupy(peer: Any, ref: Any, shared: Any, rounds: int, barrier: Any) -> int:
    """Take the lock ``rounds`` times; inside, count who else is in and add 1 slowly."""
    lock = peer.open(ref)
    barrier.wait(DEADLINE)
    timeouts = 0
    for _ in range(rounds):
        if not peer.acquire(lock, DEADLINE):
            timeouts += 1
            continue
        shared[0] += 1
        if shared[0] > 1:
            shared[1] += 1  # someone else is inside
        total = shared[2]
        os.sched_yield()  # a holder that is not alone loses this add
        shared[2] = total + 1
        shared[0] -= 1
        peer.release(lock)
    peer.close(lock)
    return timeouts


def check_exclusion(peer: Any, ctx: BaseContext, deadline: float) -> Outcome:
    ref = peer.create(ctx)
    shared = ctx.RawArray("q", 3)  # type: ignore[attr-defined]  # inside, overlaps, total
    children = Children(ctx, deadline)
    try:
        barrier = ctx.Barrier(3)  # type: ignore[attr-defined]
        ran = children.results(
            *(children.start(occupy, peer, ref, shared, ROUNDS, barrier) for _ in "abc")
        )
    finally:
        children.close()
        peer.destroy(ref)
    problems = troubles(ran, "holder")
    timeouts = sum(value for kind, value in ran if kind == "ok")
    if timeouts:
        problems.append(f"acquire(timeout={DEADLINE:.0f}) gave up {timeouts} times")
    if shared[1]:
        problems.insert(0, f"2 holders at once {shared[1]:,} times in {3 * ROUNDS:,} holds")
    return judged(problems, f"{3 * ROUNDS:,} holds, one at a time")


def wait_for_held(peer: Any, ref: Any) -> tuple[str, float]:
    lock = peer.open(ref)
    begun = time.monotonic()
    got = peer.acquire(lock, ASKED)
    waited = time.monotonic() - begun
    if got:
        peer.release(lock)
    peer.close(lock)
    return ("acquired a held lock" if got else "gave up", waited)


def check_timeout_lock(peer: Any, ctx: BaseContext, deadline: float) -> Outcome:
    ref = peer.create(ctx)
    lock = peer.open(ref)
    children = Children(ctx, deadline)
    try:
        if not peer.acquire(lock, DEADLINE):
            return Outcome("error", "the parent could not take the lock")
        ((kind, value),) = children.results(children.start(wait_for_held, peer, ref))
        peer.release(lock)
    finally:
        children.close()
        peer.close(lock)
        peer.destroy(ref)
    if kind != "ok":
        return judged(troubles([(kind, value)], "child"), "")
    problem = judge_wait(value[0], value[1], "gave up")
    return judged([problem] if problem else [], f"gave up after {value[1]:.2f} s")


# ---------------------------------------------------------------- leaves


def check_leaves(primitive: str) -> Callable[[Any, BaseContext, float], Outcome]:
    """The primitive's busiest check, run for its clean-up: the runner then looks at /dev/shm.

    Its own outcome counts only if it could not run (an error); what it
    found about its own clause belongs to that clause's row.
    """
    busiest = {
        "counter": check_totals,
        "table": check_distinct_keys,
        "arrays": check_torn_array,
        "channel": check_order_small,
        "locks": check_exclusion,
    }[primitive]

    def leaves(peer: Any, ctx: BaseContext, deadline: float) -> Outcome:
        ran = busiest(peer, ctx, deadline)
        if ran.state == "error":
            return ran
        return Outcome("holds", f"after {busiest.__name__.removeprefix('check_')}")

    return leaves


def check(clause: str, primitive: str) -> Callable[[Any, BaseContext, float], Outcome]:
    """The check of ``clause`` for a peer of ``primitive``."""
    if clause == "leaves":
        return check_leaves(primitive)
    found: Callable[[Any, BaseContext, float], Outcome] = globals()[
        "check_" + clause.replace("-", "_")
    ]
    return found
