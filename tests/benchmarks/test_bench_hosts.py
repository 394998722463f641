"""Benchmarks for docs/hosts.md: every primitive's calls, local and across hosts, in one run.

``nox -s bench -- hosts`` measures and stores docs/bench/hosts.json; the test
suite runs each benchmark once, small (see timing.py). The report is
docs/_ext/report_hosts.py; it reads the ``extra_info`` keys set here:
``way``, ``primitive``, ``call``, ``ops`` (calls of the primitive per round),
``processes``, ``reach`` (``"one host"`` or ``"hosts"``), ``trips``, the
network round trips of one call (see :func:`trips`), ``nodelay``, whether the
connection to the server has TCP_NODELAY set (None: not TCP), and ``load``, the
machine's load average when the benchmark started (the machine may be
shared: the page says how loaded it was).

The ways that reach other hosts are the Manager ways over TCP (here on
loopback) and the Redis ways (a private redis-server on loopback,
tests/redis_server.py); the local ways (ctypes shared memory, a Queue's
owner, a Manager on its Unix socket) run beside them, so the page compares
ratios within one run. A Redis way that is not in the package yet skips
with a line, as does every Redis row without redis-server or redis-py.
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import importlib
import multiprocessing
import multiprocessing.connection
import multiprocessing.managers
import os
import secrets
import socket
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import pytest

from shmref import server as server_module
from shmref.arrays import ArrayManager
from tests import redis_server

from .timing import WorkerGroup, size, time_groups

CTX = multiprocessing.get_context()
LOOPBACK = ("127.0.0.1", 0)


class Way(NamedTuple):
    """A way of every primitive: its classes' prefix, where it reaches, how it is made."""

    #: ``Ctypes`` + ``Counter`` -> ``CtypesCounter``.
    prefix: str
    #: "one host", or "hosts" for a way another host can attach to.
    reach: str
    #: The constructor's keywords that say where the state lives.
    home: Callable[[], dict[str, Any]]


#: The ways, one line each. A Manager way serves on a private Unix socket
#: unless given a TCP address; a Redis way lives in the test redis-server.
WAYS = {
    "ctypes": Way("Ctypes", "one host", lambda: {"ctx": CTX}),
    "queue": Way("Queue", "one host", lambda: {"ctx": CTX}),
    "manager": Way("Manager", "one host", lambda: {"ctx": CTX}),
    "manager-tcp": Way("Manager", "hosts", lambda: {"ctx": CTX, "address": LOOPBACK}),
    "redis": Way("Redis", "hosts", lambda: {"url": redis_server.url()}),
}

#: Each primitive's module and the name its classes end with.
PRIMITIVES = {
    "counter": ("shmref.counter", "Counter"),
    "value": ("shmref.value", "Value"),
    "arrays": ("shmref.arrays", "Array"),
    "metrics": ("shmref.metrics", "Metrics"),
    "locks": ("shmref.locks", "Lock"),
    "table": ("shmref.table", "Dict"),
    "channel": ("shmref.channel", "Channel"),
}

#: The array calls move this many float64: 4 KiB, one message (the standard
#: library's connection writes a message of up to 16 KiB in one send).
ARRAY_ITEMS = 512
MESSAGE = b"m" * 64
WORKERS = 4  # rows of the metrics board: a snapshot reads all of them


def _array_data() -> array.array[float]:
    return array.array("d", range(ARRAY_ITEMS))


class Call(NamedTuple):
    """One representative call of a primitive, as a function of its handle."""

    #: The constructor's positional arguments (keywords come from the way).
    args: tuple[Any, ...]
    #: handle -> a function that makes the call once (bound once per round).
    bind: Callable[[Any], Callable[[], object]]
    #: Bytes the call moves (its payload), for the page's bandwidth note.
    payload: int = 8


def _lock_cycle(lock: Any) -> Callable[[], object]:
    acquire, release = lock.acquire, lock.release

    def cycle() -> None:
        acquire()
        release()

    return cycle


def _put_get(channel: Any) -> Callable[[], object]:
    put, get = channel.put, channel.get

    def cycle() -> bytes:
        put(MESSAGE)
        return get(timeout=60.0)  # type: ignore[no-any-return]

    return cycle


def _array_write(shared: Any) -> Callable[[], object]:
    data, write = _array_data(), shared.write
    return lambda: write(data)


CALLS: dict[tuple[str, str], Call] = {
    ("counter", "add"): Call((), lambda c: c.add),
    ("counter", "get"): Call((), lambda c: c.get),
    ("value", "set"): Call((ctypes.c_int64,), lambda v: lambda: v.set(7)),
    ("value", "get"): Call((ctypes.c_int64,), lambda v: v.get),
    ("arrays", "read"): Call(("d", ARRAY_ITEMS), lambda a: a.read, 8 * ARRAY_ITEMS),
    ("arrays", "write"): Call(("d", ARRAY_ITEMS), _array_write, 8 * ARRAY_ITEMS),
    ("metrics", "add"): Call((WORKERS,), lambda m: lambda: m.add(0, completed=1)),
    ("metrics", "snapshot"): Call((WORKERS,), lambda m: m.snapshot, 8 * 3 * WORKERS),
    ("locks", "acquire+release"): Call((), _lock_cycle),
    ("table", "set"): Call((), lambda d: lambda: d.__setitem__("key", 7)),
    ("table", "get"): Call((), lambda d: lambda: d.get("key")),
    ("channel", "put+get"): Call((256, len(MESSAGE)), _put_get, len(MESSAGE)),
}

# Network round trips of one call, from the code path: the report's model of
# a call across hosts is its loopback time plus trips x the round-trip time.
# A Manager call is one request and one reply on the proxy's connection
# (shmref/server.py Server.call, .answer); a Redis call is one script, sent
# with EVALSHA, and its reply (shmref/keyspace.py Keyspace.run). So every
# call above is 1, except the pairs: acquire then release, put then get.
# The local ways cross no network: None, and the model leaves them out.
# Each benchmark counts the requests its call sends (count_trips) and fails
# if they are not these: a way that changes its code path changes this table.
PAIRS = {"acquire+release", "put+get"}


def trips(way: str, call: str) -> float | None:
    if WAYS[way].prefix in ("Ctypes", "Queue"):
        return None
    return 2.0 if call in PAIRS else 1.0


def handle_class(primitive: str, way: str) -> type[Any]:
    """The way's class for the primitive; skips, saying so, if the package lacks it."""
    module_name, suffix = PRIMITIVES[primitive]
    name = WAYS[way].prefix + suffix
    found = getattr(importlib.import_module(module_name), name, None)
    if found is None:
        pytest.skip(f"{module_name} has no {name} yet: its rows are left out")
    return found  # type: ignore[no-any-return]


def make(primitive: str, way: str) -> Any:
    cls = handle_class(primitive, way)
    home = WAYS[way].home()  # a Redis way skips here without its server
    handle = cls(*CALLS[primitive, CALL_OF[primitive]].args, **home)
    if primitive == "table":
        handle["key"] = 7
    return handle


#: Any call of the primitive, for its constructor's arguments.
CALL_OF = {primitive: call for primitive, call in CALLS}


# ---------------------------------------------------------------- counting round trips


@contextlib.contextmanager
def count_trips() -> Iterator[list[int]]:
    """Count the requests this process sends to a Manager server or a Redis server.

    A Manager request is one ``send`` on a ``multiprocessing.connection``
    connection; a Redis request, or a whole pipeline, is one
    ``send_packed_command`` of redis-py. Each waits for its reply, so each is
    a round trip.
    """
    sent = [0]
    patches = []
    manager_send = multiprocessing.connection.Connection._send_bytes

    def counted_send(self: Any, buf: Any) -> None:
        sent[0] += 1
        manager_send(self, buf)

    patches.append((multiprocessing.connection.Connection, "_send_bytes", counted_send))
    try:
        import redis.connection
    except ImportError:
        pass
    else:
        redis_send = redis.connection.AbstractConnection.send_packed_command

        def counted_packed(self: Any, command: Any, check_health: bool = True) -> None:
            sent[0] += 1
            redis_send(self, command, check_health)

        patches.append(
            (redis.connection.AbstractConnection, "send_packed_command", counted_packed)
        )
    with pytest.MonkeyPatch.context() as patch:
        for owner, attribute, replacement in patches:
            patch.setattr(owner, attribute, replacement)
        yield sent


def check_trips(call: Callable[[], object], per_call: int, declared: float | None) -> None:
    """Fail unless ``call`` sends ``declared`` requests per operation (after a warm-up)."""
    if declared is None:
        return
    call()  # connections opened, scripts loaded
    calls = 8
    with count_trips() as sent:
        for _ in range(calls):
            call()
    assert sent[0] / (calls * per_call) == declared, (sent[0], calls * per_call, declared)


# ---------------------------------------------------------------- one call, one process

#: Calls per timed round, by way: a round lasts roughly 10-100 ms here.
OPS = {
    "ctypes": 20_000,
    "queue": 5_000,
    "queue-batched": 20_000,
    "manager": 1_000,
    "manager-tcp": 1_000,
    "redis": 1_000,
    "redis-incrby": 1_000,
    "redis-pipeline": 6_400,
}
ROUNDS = 15


def _settle(primitive: str, handle: Any) -> Callable[[], object]:
    # A Queue counter's add returns before its owner applies it: the round
    # ends with a get, which waits for every add sent (as counter-add does).
    return handle.get if primitive == "counter" else (lambda: None)


def time_calls(
    benchmark: Any,
    op: Callable[[], object],
    settle: Callable[[], object],
    ops: int,
    per_call: int = 1,
) -> None:
    calls = ops // per_call

    def round_() -> None:
        for _ in range(calls):
            op()
        settle()

    benchmark.pedantic(
        round_, rounds=size(benchmark, ROUNDS, 1), warmup_rounds=size(benchmark, 1, 0)
    )


def load() -> float:
    """The 1-minute load average: how many processes wanted the cores, other work included."""
    return round(os.getloadavg()[0], 2)


def _record(
    benchmark: Any, group: str, primitive: str, call: str, way: str, reach: str, **extra: Any
) -> None:
    """Name the benchmark's group and the extra_info keys the report reads."""
    benchmark.group = group
    benchmark.extra_info.update(
        load=load(), way=way, primitive=primitive, call=call, reach=reach, **extra
    )


def _record_call(
    benchmark: Any, primitive: str, call: str, way: str, ops: int, reach: str, **extra: Any
) -> None:
    """The extra_info of one call at a time in one process."""
    group, payload = f"hosts-{primitive}-{call}", CALLS[primitive, call].payload
    _record(
        benchmark,
        group,
        primitive,
        call,
        way,
        reach,
        ops=ops,
        processes=1,
        payload=payload,
        **extra,
    )


@pytest.mark.parametrize("way", list(WAYS))
@pytest.mark.parametrize(("primitive", "call"), list(CALLS))
def test_call(
    benchmark: Any, request: pytest.FixtureRequest, primitive: str, call: str, way: str
) -> None:
    """One call at a time in one process: the per-op cost of each way."""
    handle = make(primitive, way)
    request.addfinalizer(handle.close)
    op = CALLS[primitive, call].bind(handle)
    declared = trips(way, call)
    check_trips(op, 1, declared)
    ops = size(benchmark, OPS[way], 20)
    # Read off the connection the call has just used: None for a Unix socket
    # or a way with no connection to a server.
    nodelay = None if declared is None else _client_nodelay(handle)
    _record_call(
        benchmark, primitive, call, way, ops, WAYS[way].reach, trips=declared, nodelay=nodelay
    )
    time_calls(benchmark, op, _settle(primitive, handle), ops)


# ---------------------------------------------------------------- what batching gives


class PipelinedCounter:
    """A total in Redis that adds in pipelines of ``batch`` INCRBY: one round trip for all.

    Plain redis-py, as a program would batch by hand: no range check, no
    creator's meta key, nothing but the key (deleted by ``close``).
    ``add_batch`` adds ``batch``, ``add_one`` is a lone INCRBY (what a
    Redis counter without the script would cost).
    """

    def __init__(self, url: str, batch: int) -> None:
        self.url, self.batch = url, batch
        self.key = f"shmref-bench:{secrets.token_hex(8)}"
        self._client: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "batch": self.batch, "key": self.key}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _client=None)

    @property
    def client(self) -> Any:
        if self._client is None:
            import redis

            # One connection, as the Redis ways have (a pool would add a
            # lock and a look-up to every call).
            self._client = redis.Redis.from_url(self.url, single_connection_client=True)
        return self._client

    def add_batch(self) -> None:
        pipe = self.client.pipeline(transaction=False)
        for _ in range(self.batch):
            pipe.incrby(self.key, 1)
        pipe.execute()

    def add_one(self) -> None:
        self.client.incrby(self.key, 1)

    def get(self) -> int:
        return int(self.client.get(self.key) or 0)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def delete(self) -> None:
        self.client.delete(self.key)
        self.close()


#: Adds per message of QueueCounter(batch=) and per pipeline: the same, to compare.
BATCH = 64


class Batched(NamedTuple):
    """A counter way that is not one of WAYS: what batching (or no script) gives."""

    reach: str
    #: () -> (the handle, its close).
    make: Callable[[], tuple[Any, Callable[[], None]]]
    #: handle -> one call, which adds ``per_call``.
    bind: Callable[[Any], Callable[[], object]]
    per_call: int
    #: Round trips per add: 1/BATCH for a pipeline of BATCH INCRBY.
    trips: float | None


def _queue_batched() -> tuple[Any, Callable[[], None]]:
    from shmref.counter import QueueCounter

    counter = QueueCounter(batch=BATCH, ctx=CTX)
    return counter, counter.close


def _pipelined() -> tuple[Any, Callable[[], None]]:
    counter = PipelinedCounter(redis_server.url(), BATCH)
    return counter, counter.delete


BATCHED = {
    "queue-batched": Batched("one host", _queue_batched, lambda c: c.add, 1, None),
    "redis-incrby": Batched("hosts", _pipelined, lambda c: c.add_one, 1, 1.0),
    "redis-pipeline": Batched("hosts", _pipelined, lambda c: c.add_batch, BATCH, 1 / BATCH),
}


@pytest.mark.parametrize("way", list(BATCHED))
def test_batched_add(benchmark: Any, request: pytest.FixtureRequest, way: str) -> None:
    """Counter adds through a Queue in batches, a bare INCRBY, a pipeline of INCRBY."""
    spec = BATCHED[way]
    handle, close = spec.make()
    request.addfinalizer(close)
    op = spec.bind(handle)
    check_trips(op, spec.per_call, spec.trips)
    ops = size(benchmark, OPS[way], spec.per_call * 2)
    _record_call(benchmark, "counter", "add", way, ops, spec.reach, trips=spec.trips, batch=BATCH)
    time_calls(benchmark, op, handle.get, ops, spec.per_call)


# ---------------------------------------------------------------- throughput


def call_worker(
    handle: Any, op_name: tuple[str, str, str], calls: int, barrier: Any, timeout: float
) -> None:
    """Process target: meet the others, make ``calls`` calls, settle, meet them again."""
    primitive, call, way = op_name
    op = BATCHED[way].bind(handle) if way in BATCHED else CALLS[primitive, call].bind(handle)
    barrier.wait(timeout)
    for _ in range(calls):
        op()
    _settle(primitive, handle)()
    barrier.wait(timeout)
    handle.close()


#: The calls timed in 1 and 2 processes: one a primitive where two processes
#: can make it on one handle without waiting for each other's turn.
THROUGHPUT = [("counter", "add"), ("value", "set"), ("arrays", "read"), ("table", "get")]
PROCESSES = (1, 2)
#: Calls per process per round, by way (roughly 0.05-0.3 s a round).
THROUGHPUT_OPS = {way: ops * 2 for way, ops in OPS.items()}


THROUGHPUT_WAYS = [(p, c, way) for p, c in THROUGHPUT for way in WAYS] + [
    ("counter", "add", way) for way in BATCHED
]


@pytest.mark.parametrize("processes", PROCESSES)
@pytest.mark.parametrize(("primitive", "call", "way"), THROUGHPUT_WAYS)
def test_throughput(
    benchmark: Any,
    request: pytest.FixtureRequest,
    primitive: str,
    call: str,
    way: str,
    processes: int,
) -> None:
    """P processes make the call on one handle; process start-up is not timed."""
    if way in BATCHED:
        handle, close = BATCHED[way].make()
        per_call, reach = BATCHED[way].per_call, BATCHED[way].reach
    else:
        handle = make(primitive, way)
        close, per_call, reach = handle.close, 1, WAYS[way].reach
    request.addfinalizer(close)
    ops = size(benchmark, THROUGHPUT_OPS[way], 2 * per_call)
    calls = ops // per_call
    group = f"hosts-throughput-{primitive}-{call}-{processes}"
    _record(
        benchmark, group, primitive, call, way, reach, ops=ops * processes, processes=processes
    )
    rounds = size(benchmark, 5, 1)
    time_groups(
        benchmark,
        lambda: WorkerGroup(
            CTX, call_worker, lambda b: (handle, (primitive, call, way), calls, b), processes
        ),
        rounds=rounds,
    )
    if primitive == "counter":
        assert handle.get() == ops * processes * rounds


# ---------------------------------------------------------------- Nagle's algorithm


@contextlib.contextmanager
def stdlib_delay() -> Iterator[None]:
    """Manager connections as the standard library leaves them: no TCP_NODELAY on either end.

    shmref sets it (shmref/server.py, ``_send_at_once`` and ``_Server``); a
    ``BaseManager`` written by hand over TCP does not. A server forked while
    this is on serves without it.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(server_module, "_send_at_once", lambda connection: None)
        patch.setattr(ArrayManager, "_Server", multiprocessing.managers.Server)
        yield


def _nodelay_of(conn: Any) -> bool | None:
    """Whether a connection's socket has TCP_NODELAY (None: not a TCP socket)."""
    with socket.socket(fileno=conn.fileno()) as sock:
        try:
            if sock.family not in (socket.AF_INET, socket.AF_INET6):
                return None
            return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        finally:
            sock.detach()


def _client_nodelay(handle: Any) -> bool | None:
    """TCP_NODELAY on the handle's own connection to its server, as set on it."""
    if hasattr(handle, "_keyspace"):
        connection = handle._keyspace._local.connection
        return bool(connection._sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
    return _nodelay_of(handle._server.proxy._tls.connection)


KiB = 1024
#: Array writes of 4 KiB (one send), 32 KiB (header and payload sent apart,
#: both under loopback's segment size) and 256 KiB (several segments).
NAGLE_SIZES = [4 * KiB, 32 * KiB, 256 * KiB]
NAGLE_WAYS = ["manager", "manager-tcp", "manager-tcp-stdlib", "redis"]


@pytest.mark.parametrize("nbytes", NAGLE_SIZES)
@pytest.mark.parametrize("way", NAGLE_WAYS)
def test_nagle(benchmark: Any, request: pytest.FixtureRequest, way: str, nbytes: int) -> None:
    """Array writes of growing size over TCP loopback, with and without TCP_NODELAY."""
    stdlib = way == "manager-tcp-stdlib"
    base = "manager-tcp" if stdlib else way
    if stdlib and CTX.get_start_method() != "fork":
        pytest.skip("the server goes without TCP_NODELAY by inheriting a patch: needs fork")
    cls = handle_class("arrays", base)
    items = nbytes // 8
    with stdlib_delay() if stdlib else contextlib.nullcontext():
        shared = cls("d", items, **WAYS[base].home())
        request.addfinalizer(shared.close)
        data = array.array("d", range(items))
        shared.write(data)  # this thread's connection opened (under the patch)
    ops = size(benchmark, 20, 2)
    nodelay_set = _client_nodelay(shared)
    reach = WAYS[base].reach
    _record(
        benchmark,
        "hosts-nagle",
        "arrays",
        "write",
        way,
        reach,
        ops=ops,
        processes=1,
        bytes=nbytes,
        nodelay=nodelay_set,
    )
    write = shared.write
    benchmark.pedantic(
        lambda: [write(data) for _ in range(ops)],
        rounds=size(benchmark, 5, 1),
        warmup_rounds=size(benchmark, 1, 0),
    )
