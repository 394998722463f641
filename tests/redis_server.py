"""A real Redis server for the tests: Debian's ``redis-server``, private to one process.

:class:`RedisServer` starts ``redis-server`` on a free loopback port with a
random password, no persistence, in a temporary directory of its own, and
stops it. :func:`url` is the URL of the test process's shared server,
started on first use and stopped at the end of the session (``conftest.py``)
or of the process; the ways modules (``tests/ways_<primitive>.py``) make
their Redis handles on it.

Under pytest-xdist each worker starts its own server: nothing then has to
decide which worker stops a shared one, and a worker's server dies with it
(it gets SIGKILL when the process that started it exits, see
:func:`_die_with_parent`). A server costs a few megabytes and milliseconds.

Set ``SHMREF_TEST_REDIS_URL`` to use a server of your own instead (the
tests delete only the keys they create). :func:`url` sets it once it has
started one, so that interpreters started by a test (``connect()`` from an
unrelated process, a creator to kill) use the same server.

Without ``redis-server`` on PATH, or without the ``redis`` package, the
Redis tests skip with the line that installs it: :class:`Unavailable` is
``unittest.SkipTest``, which pytest reports as a skip, so the ways modules
need no test framework (the docs build imports them).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest
from pathlib import Path
from typing import Any

#: The variable that names the server to use; set by :func:`url` for children.
ENV = "SHMREF_TEST_REDIS_URL"

INSTALL_SERVER = "redis-server is not on PATH: apt-get install -y redis-server"
INSTALL_CLIENT = "the redis package is missing: pip install shmref[redis]"

#: Seconds a server may take to accept connections.
START = 30.0


class Unavailable(unittest.SkipTest):
    """No Redis server can be had here; the message says what to install."""


def missing() -> str | None:
    """Why no test server can run here (the line that installs it), or None."""
    try:
        import redis  # noqa: F401
    except ImportError:
        return INSTALL_CLIENT
    if os.environ.get(ENV):
        return None
    if shutil.which("redis-server") is None:
        return INSTALL_SERVER
    return None


def _die_with_parent() -> None:
    """In the server's process, before exec: SIGKILL when its parent exits.

    A test process killed, or a worker that ends without its session
    finish, must not leave a server running (Linux's PR_SET_PDEATHSIG).
    """
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """A ``redis-server`` of our own: loopback, a random password, no persistence.

    Started by the constructor, which returns once the server accepts
    connections; :meth:`stop` ends it and removes its directory. The
    password is in a config file readable only by us, not on the command
    line, where ``ps`` would show it.
    """

    def __init__(self) -> None:
        reason = missing()
        if reason is not None:
            raise Unavailable(reason)
        self.password = secrets.token_hex(16)
        self.directory = Path(tempfile.mkdtemp(prefix="shmref-redis-"))
        self.process: subprocess.Popen[bytes] | None = None
        try:
            # A port free a moment ago may be taken by the time the server
            # binds it: the server then exits, and we try another.
            for _ in range(5):
                self.port = _free_port()
                if self._start():
                    return
            raise RuntimeError(f"redis-server did not start; its log: {self._log()}")
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def _log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.directory / "redis.log").read_text()[-2000:]
        return ""

    def _start(self) -> bool:
        """Start the server on ``self.port``; False if it exited (the port was taken)."""
        config = self.directory / "redis.conf"
        config.touch(mode=0o600)
        config.write_text(
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            f"requirepass {self.password}\n"
            'save ""\n'
            "appendonly no\n"
            f"dir {self.directory}\n"
            f"logfile {self.directory / 'redis.log'}\n"
            "daemonize no\n"
        )
        self.process = subprocess.Popen(
            ["redis-server", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        # Ready once it accepts a connection: polled, as nothing tells us.
        deadline = time.monotonic() + START
        while self.process.poll() is None:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1.0),
            ):
                return True
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not listen within {START} s: {self._log()}")
            time.sleep(0.01)
        return False

    def kill(self) -> None:
        """SIGKILL the server, as a crash would; :meth:`stop` still cleans up."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_shared: RedisServer | None = None
_starter: int | None = None  # the pid that started it: a forked child must not stop it


def url() -> str:
    """The URL of this process's test server, started on first use.

    ``SHMREF_TEST_REDIS_URL`` if set; raises :class:`Unavailable` (a skip)
    where no server can run.
    """
    global _shared, _starter
    given = os.environ.get(ENV)
    if given:
        reason = missing()
        if reason is not None:
            raise Unavailable(reason)
        return given
    if _shared is None:
        _shared, _starter = RedisServer(), os.getpid()
        os.environ[ENV] = _shared.url
        atexit.register(stop)
    return _shared.url


def home(way: str, ctx: Any) -> dict[str, Any]:
    """The keyword that says where a way's state lives, for a ways module's ``make``.

    ``url=`` (this process's test server) for a Redis way, whose name starts
    with ``redis``; ``ctx=`` (the start method's context) for the others.
    """
    return {"url": url()} if way.startswith("redis") else {"ctx": ctx}


def stop() -> None:
    """Stop the shared server, if this process started one."""
    global _shared
    if _starter != os.getpid():
        return
    server, _shared = _shared, None
    if server is not None:
        if os.environ.get(ENV) == server.url:
            del os.environ[ENV]
        server.stop()
