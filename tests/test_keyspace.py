"""What every Redis way shares (shmref/keyspace.py), checked on RedisCounter.

Its keys (all gone after the creator's ``close()``, none after anyone
else's), ``connect()``'s refusals, a server gone, stopped or refusing the
password, scripts the server has forgotten, a forked child's connection,
and the message without the ``redis`` package. A test that kills or stops
its server starts one of its own (:class:`tests.redis_server.RedisServer`).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shmref.counter import RedisCounter
from shmref.lifecycle import OwnerGone
from tests.redis_server import RedisServer

#: The timeout of the handles here, and what a call may take beyond it.
TIMEOUT, SLACK = 1.0, 5.0


@pytest.fixture
def client(redis_url: str) -> Iterator[Any]:
    """A plain redis-py client of the session's server, to look at the keys."""
    import redis

    with redis.Redis.from_url(redis_url) as client:
        yield client


def keys(client: Any, name: str) -> list[bytes]:
    return sorted(client.scan_iter(match=f"{{{name}}}:*"))


def close_in_child(counter: RedisCounter) -> None:
    counter.add(1)
    counter.close()


def test_creator_close_leaves_no_key(redis_url: str, client: Any) -> None:
    counter = RedisCounter(7, url=redis_url)
    name = counter.name
    client.set(f"{{{name}}}:extra", b"a key under the prefix that no call made")
    assert len(keys(client, name)) == 3  # meta, total, extra
    # Neither a child's close() nor a connect()ed handle's deletes anything.
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=close_in_child, args=(counter,))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    RedisCounter.connect(redis_url, name).close()
    assert len(keys(client, name)) == 3
    counter.close()
    assert keys(client, name) == []


def test_after_the_creator_closed_others_get_owner_gone(redis_url: str, client: Any) -> None:
    counter = RedisCounter(url=redis_url)
    other = RedisCounter.connect(redis_url, counter.name)
    counter.close()
    for call in (other.add, other.get):
        with pytest.raises(OwnerGone, match="closed by its creator"):
            call()
    assert keys(client, counter.name) == []  # the add wrote nothing
    other.close()


def test_prefixes_are_distinct(redis_url: str, client: Any) -> None:
    # Braces end the prefix: closing "a" leaves every key of "a:b".
    with (
        RedisCounter(url=redis_url, name="shmref-test-a") as a,
        RedisCounter(1, url=redis_url, name="shmref-test-a:b") as b,
    ):
        a.close()
        assert b.get() == 1
        assert len(keys(client, b.name)) == 2
    assert keys(client, "shmref-test-a:b") == []


def test_connect_refuses_what_it_cannot_attach_to(redis_url: str, client: Any) -> None:
    with pytest.raises(LookupError, match="nothing is named"):
        RedisCounter.connect(redis_url, "shmref-test-nothing")
    client.set("{shmref-test-other}:meta", b'{"kind":"RedisValue"}')
    try:
        with pytest.raises(TypeError, match="is a RedisValue, not a RedisCounter"):
            RedisCounter.connect(redis_url, "shmref-test-other")
    finally:
        client.delete("{shmref-test-other}:meta")
    with RedisCounter(url=redis_url) as counter:
        with pytest.raises(FileExistsError, match="in use"):
            RedisCounter(url=redis_url, name=counter.name)
        counter.add(2)
        assert counter.get() == 2  # the failed constructor deleted nothing


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"url": b"redis://127.0.0.1"}, TypeError),
        ({"url": "http://127.0.0.1"}, ValueError),
        ({"name": 3}, TypeError),
        ({"name": ""}, ValueError),
        ({"name": "a*"}, ValueError),
        ({"timeout": True}, TypeError),
        ({"timeout": -1}, ValueError),
    ],
)
def test_bad_arguments_are_refused(redis_url: str, kwargs: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        RedisCounter(**{"url": redis_url, **kwargs})


def test_wrong_password_is_an_authentication_error(redis_url: str) -> None:
    password = redis_url.split("@")[0].rsplit(":", 1)[1]
    for url in (redis_url.replace(password, "wrong"), redis_url.replace(f":{password}@", "")):
        with pytest.raises(multiprocessing.AuthenticationError):
            RedisCounter(url=url)


def test_a_server_gone_is_owner_gone_within_the_timeout() -> None:
    with RedisServer() as server:
        counter = RedisCounter(3, url=server.url, timeout=TIMEOUT)
        server.kill()
        for call in (counter.get, counter.add):
            start = time.monotonic()
            with pytest.raises(OwnerGone):
                call()
            assert time.monotonic() - start < TIMEOUT + SLACK
        start = time.monotonic()
        counter.close()  # cannot delete its keys, and says nothing: as a dead owner's
        assert time.monotonic() - start < TIMEOUT + SLACK
        with pytest.raises(ValueError, match="closed"):
            counter.get()
        with pytest.raises(OwnerGone):
            RedisCounter(url=server.url, timeout=TIMEOUT)


def test_a_silent_server_is_a_timeout() -> None:
    with RedisServer() as server:
        counter = RedisCounter(url=server.url, timeout=TIMEOUT)
        counter.add(1)
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGSTOP)  # alive, but silent
        try:
            start = time.monotonic()
            with pytest.raises(TimeoutError):
                counter.add(1)
            assert TIMEOUT * 0.9 <= time.monotonic() - start < TIMEOUT + SLACK
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        # A new connection: the timed-out add may have run, or not.
        assert counter.get() in (1, 2)
        counter.close()


def test_forgotten_scripts_are_sent_again(redis_url: str, client: Any) -> None:
    with RedisCounter(url=redis_url) as counter:
        counter.add(1)
        client.script_flush()
        counter.add(1)
        assert counter.get() == 2


def add_many(counter: RedisCounter, n: int) -> None:
    for done in range(1, n + 1):
        counter.add(1)
        # An add's reply (0) read by a get of the other process fails this.
        assert counter.get() >= done


def test_a_forked_child_has_a_connection_of_its_own(redis_url: str) -> None:
    # Sharing the parent's socket, parent and child would read each other's
    # replies: a get() would return an add's reply, or fail.
    ctx = multiprocessing.get_context("fork")
    with RedisCounter(url=redis_url) as counter:
        counter.get()  # the parent's connection is open before the fork
        child = ctx.Process(target=add_many, args=(counter, 2000))
        child.start()
        add_many(counter, 2000)
        child.join(60)
        assert child.exitcode == 0
        assert counter.get() == 4000


def test_without_the_redis_package_the_error_says_what_to_install() -> None:
    code = (
        "import sys\n"
        "sys.modules['redis'] = None\n"
        "from shmref.counter import RedisCounter\n"
        "try:\n"
        "    RedisCounter()\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parent.parent,
    )
    assert "pip install shmref[redis]" in done.stdout, (done.stdout, done.stderr)
