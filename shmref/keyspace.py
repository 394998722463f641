"""The Redis ways' shared part: a key prefix on a Redis server, and a handle on it.

A Redis way keeps its state in keys that share one prefix (its
:attr:`~RedisHandle.name`) on a Redis server (its :attr:`~RedisHandle.url`).
:class:`Keyspace` is that prefix plus this process's connection to the
server; :class:`RedisHandle` is what every Redis way has beyond its protocol:
``url``, ``name``, ``connect()``, pickling to children, and ``close()``,
which deletes the keys in the process that created them.

Every request is a Lua :class:`Script`, so that it is atomic on the server
and can first check that the creator has not closed the state (its meta key
is still there): a handle whose creator closed raises
:class:`~shmref.lifecycle.OwnerGone`, as a Manager way's does, instead of
writing keys nobody will delete. A server that is gone or unreachable raises
``OwnerGone`` too; one that does not answer within ``timeout`` raises
``TimeoutError``; a wrong password raises
``multiprocessing.AuthenticationError``, as a Manager server's wrong key does.

The ``redis`` package (redis-py, ``pip install shmref[redis]``) is imported
when a Redis way is made or unpickled, not when this module is: this module
is part of every generated standalone file, which imports only the standard
library and must work without it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import re
import secrets
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

from shmref.lifecycle import (
    DEFAULT_TIMEOUT,
    INT64_MAX,
    INT64_MIN,
    Closable,
    OwnerGone,
    reset_after_fork,
    seconds,
)

#: The server a Redis way uses unless told otherwise: a local one, database 0.
DEFAULT_URL = "redis://127.0.0.1:6379/0"

#: What a name may hold: no glob characters, so that ``close()`` can find
#: every key under it with one ``SCAN MATCH`` pattern.
_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,200}")

#: A socket timeout of 0 would make the socket non-blocking; ``timeout=0``
#: means "do not wait", and the shortest wait a round trip can take is this.
_SHORTEST = 0.001


def _redis() -> Any:
    """The ``redis`` package, imported on first use; ``Any``: it is optional."""
    try:
        import redis
        import redis.backoff
        import redis.connection
        import redis.retry
    except ImportError as error:
        raise ImportError(
            "the Redis ways need the redis package (redis-py): pip install shmref[redis]"
        ) from error
    with contextlib.suppress(ImportError):
        import redis.driver_info  # redis-py 7.1 and later: see Keyspace
    return redis


class Script:
    """A Lua script run by a Redis way: its source, and the SHA1 the server knows it by.

    Define each one once, at module level. Sent whole only the first time a
    server lacks it (``EVALSHA``, then ``SCRIPT LOAD`` on ``NOSCRIPT``).

    With ``checked=True`` (the default) the script starts with the check
    that the state still exists: ``KEYS[1]`` is the meta key, which
    :meth:`Keyspace.run` passes first, so the way's own keys are ``KEYS[2]``
    onward. A script refuses a call with ``redis.error_reply('CODE text')``,
    where ``CODE`` is a key of the ``refusals`` given to :meth:`Keyspace.run`.
    """

    __slots__ = ("sha", "source")

    def __init__(self, body: str, *, checked: bool = True) -> None:
        prologue = (
            "if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('GONE') end\n"
        )
        self.source = (prologue if checked else "") + body
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()


def int64_pieces(n: int) -> list[int] | None:
    """``n`` as int64 increments of its sign (all ``(H)INCRBY`` takes); None past 2**64.

    The partial sums lie between 0 and ``n``: if the total before and after
    the add are both in the 64-bit range, so is every total in between, and
    the pieces give the same answer as one add of ``n`` would. No total
    can take an ``n`` of 2**64 or more.
    """
    if INT64_MIN <= n <= INT64_MAX:
        return [n]
    if abs(n) >= 2**64:
        return None
    step = INT64_MAX if n > 0 else -INT64_MAX
    pieces = [step] * (abs(n) // INT64_MAX)
    if abs(n) % INT64_MAX:
        pieces.append(n - sum(pieces))
    return pieces


# The meta key holds the handle's description (JSON): its class, and what a
# connect()ed handle needs beyond the keys. Created first, with the
# initial values, so that the state exists whole or not at all.
_CREATE = Script(
    """
if redis.call('SET', KEYS[1], ARGV[1], 'NX') == false then return redis.error_reply('EXISTS') end
for i = 2, #KEYS do redis.call('SET', KEYS[i], ARGV[i]) end
return 1
""",
    checked=False,
)

_DESCRIBE = Script("return redis.call('GET', KEYS[1])")


def _name(name: object) -> str:
    """A checked name, or a fresh random one for None."""
    if name is None:
        return f"shmref-{secrets.token_hex(8)}"
    if not isinstance(name, str):
        raise TypeError(f"name must be a str or None, not {type(name).__name__}")
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"name must be 1 to 200 letters, digits or '_.:-', not {name!r} "
            "(no glob characters: close() finds the keys by pattern)"
        )
    return name


def _where(url: str) -> str:
    """The server's address as messages show it: never the password."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname}:{parts.port or 6379}{parts.path or '/0'}"


class Keyspace:
    """A key prefix on a Redis server, and this process's connection to it.

    ``name`` is the prefix: key ``part`` of the state is ``{name}:part``
    (:meth:`key`). The braces are Redis Cluster's hash tag, which keeps
    every key of one state on one node so that a script may touch them
    all, and they make prefixes distinct: ``{a}:`` is never the start of
    ``{a:b}:``'s keys.

    Each thread of each process has a connection of its own (so that
    calls from several threads never share one socket), opened on its
    first call. redis-py's connection pool is not used: an interrupt
    (``KeyboardInterrupt``) inside it can leak a connection or leave one
    half open for the next call, and it is not fork-safe. Here a connection
    that a call leaves in any state but a whole answer is dropped, and the
    next call opens a new one; a forked child starts with none. Pickling
    sends the address and the name, never a connection and never the right
    to delete: only the creator's :meth:`close` deletes the keys.
    """

    def __init__(
        self,
        url: str,
        name: str,
        timeout: float | None,
        what: str,
        closed_error: type[ValueError],
        *,
        creator: bool,
    ) -> None:
        redis = _redis()
        self.url = url
        self.name = name
        self.timeout = timeout
        self.what = what
        self.closed_error = closed_error
        self.closed = False
        self._creator = os.getpid() if creator else None
        options = redis.connection.parse_url(url)
        self._connection_class = options.pop("connection_class", redis.Connection)
        wait = None if timeout is None else max(timeout, _SHORTEST)
        self._options = {
            **options,
            "socket_timeout": wait,
            "socket_connect_timeout": wait,
            # No retries: a request that timed out may have run, and running
            # it again would apply an add twice. A lost request is the
            # caller's to see (TimeoutError, OwnerGone), as in the other ways.
            "retry": redis.retry.Retry(redis.backoff.NoBackoff(), 0),
            # RESP2: redis-py's RESP3 parser holds a bound method of itself,
            # so a dropped connection waits for the garbage collector, whose
            # finalizers then run at a random moment of some later call (an
            # interrupt there is lost). The scripts' replies are the same.
            "protocol": 2,
        }
        driver_info = getattr(redis, "driver_info", None)  # redis-py 7.1 and later
        if driver_info is not None:
            # Given, so that a new connection does not look the version up
            # with importlib.metadata, which scans sys.path (zip files
            # included) and leaves garbage with finalizers, as above.
            self._options["driver_info"] = driver_info.DriverInfo(lib_version=redis.__version__)
        self._local = threading.local()
        #: Every thread's connection, and the thread using it, for close().
        self._open: dict[Any, int] = {}
        reset_after_fork(self)

    @classmethod
    def open(
        cls,
        url: object,
        name: object,
        timeout: object,
        what: str,
        closed_error: type[ValueError],
        *,
        creator: bool,
    ) -> Keyspace:
        """A keyspace from unchecked arguments (a constructor's or ``connect()``'s)."""
        if not isinstance(url, str):
            raise TypeError(f"url must be a str, not {type(url).__name__}")
        if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"url must start with redis://, rediss:// or unix://, not {url!r}")
        checked = seconds(timeout)
        return cls(url, _name(name), checked, what, closed_error, creator=creator)

    def _after_fork(self) -> None:
        # The parent's connections are the parent's: dropped, not closed
        # (redis-py shuts a socket down only in the process that opened it).
        self._creator = None
        self._local = threading.local()
        self._open = {}

    def command(self, *command: str | bytes | int | float, block: float = 0.0) -> Any:
        """One command on this thread's connection, and its reply, in redis-py's terms.

        ``block``: seconds the server may hold a blocking command (``BLPOP``...)
        before it answers, which the wait for the reply adds to ``timeout``.
        Raises redis-py's exceptions (:meth:`run` says what they mean).
        """
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._connection_class(**self._options)
            self._local.connection = connection
            self._open[connection] = threading.get_ident()
        try:
            connection.send_command(*command)
            if block and self.timeout is not None:
                return connection.read_response(timeout=self.timeout + block)
            return connection.read_response()
        except _redis().exceptions.ResponseError:
            raise  # the server answered: the connection is in step
        except BaseException:
            # Half a request sent, or a reply left unread (an interrupt, a
            # timeout, a server gone): kept, the connection would give the
            # next call this one's reply.
            self._local.connection = None
            self._open.pop(connection, None)
            connection.disconnect()
            raise

    def __getstate__(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "name": self.name,
            "timeout": self.timeout,
            "what": self.what,
            "closed_error": self.closed_error,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["url"],
            state["name"],
            state["timeout"],
            state["what"],
            state["closed_error"],
            creator=False,
        )

    @property
    def creator(self) -> bool:
        """True in the process that created the state (and only in its handle)."""
        return self._creator == os.getpid()

    def key(self, part: str) -> str:
        """The key of ``part`` of the state: ``{name}:part``."""
        return f"{{{self.name}}}:{part}"

    @property
    def meta(self) -> str:
        """The key that holds the description; the state exists while it does."""
        return self.key("meta")

    def run(
        self,
        script: Script,
        parts: Sequence[str] = (),
        args: Sequence[str | bytes | int | float] = (),
        refusals: Mapping[str, Callable[[str], BaseException]] | None = None,
    ) -> Any:
        """``script`` run on the server with the keys of ``parts`` and ``args``; its reply.

        The meta key comes first in ``KEYS`` (see :class:`Script`). A reply
        ``redis.error_reply('CODE text')`` raises ``refusals[CODE](text)``;
        ``GONE`` (the creator closed) raises ``OwnerGone``. A server gone or
        unreachable raises ``OwnerGone``, one that does not answer in time
        ``TimeoutError``, a closed handle the closed error.
        """
        if self.closed:
            raise self.closed_error(f"{self.what} is closed")
        keys = [self.meta, *map(self.key, parts)]
        redis = _redis()
        failure: BaseException | None = None
        try:
            try:
                return self.command("EVALSHA", script.sha, len(keys), *keys, *args)
            except redis.exceptions.NoScriptError:  # nothing ran: load it, once per server
                return self.command("EVAL", script.source, len(keys), *keys, *args)
        except redis.exceptions.ResponseError as error:
            code, _, text = str(error).partition(" ")
            if refusals is not None and code in refusals:
                failure = refusals[code](text)
            elif code == "GONE":
                failure = OwnerGone(
                    f"{self.what} {self.name!r} was closed by its creator (its keys are gone)"
                )
            else:
                raise
        except redis.exceptions.RedisError as error:
            failure = self._translated(error)
        except Exception:
            # close() in another thread took the connection from under this
            # call: redis-py then fails in its own ways (AttributeError).
            if not self.closed:
                raise
            failure = self.closed_error(f"{self.what} is closed")
        raise failure

    def blocking(self, block: float, *command: str | bytes | int | float) -> Any:
        """A blocking command that the server may hold ``block`` seconds, and its reply.

        For a wait on a list (``BLPOP``, ``BLMPOP``), which no script can do.
        Errors as :meth:`run`'s, but nothing checks the meta key: a caller
        runs a checked script after a wait that found nothing.
        """
        if self.closed:
            raise self.closed_error(f"{self.what} is closed")
        redis = _redis()
        failure: BaseException
        try:
            return self.command(*command, block=block)
        except redis.exceptions.ResponseError:
            raise
        except redis.exceptions.RedisError as error:
            failure = self._translated(error)
        except Exception:
            if not self.closed:  # as in run(): close() in another thread
                raise
            failure = self.closed_error(f"{self.what} is closed")
        raise failure

    def _translated(self, error: BaseException) -> BaseException:
        """The error of ``error``, an exception of redis-py's transport, in shmref's terms."""
        redis = _redis()
        where = _where(self.url)
        if self.closed:  # closed by another thread, which dropped the connection
            return self.closed_error(f"{self.what} is closed")
        if isinstance(error, redis.exceptions.AuthenticationError):
            return multiprocessing.AuthenticationError(
                f"the Redis server at {where} refused {self.what}'s credentials: {error}"
            )
        if isinstance(error, redis.exceptions.TimeoutError):
            return TimeoutError(
                f"the Redis server at {where} did not answer {self.what} within {self.timeout} s"
            )
        if isinstance(error, redis.exceptions.ConnectionError):
            return OwnerGone(f"the Redis server of {self.what} at {where} is gone ({error})")
        return error

    def create(
        self, description: Mapping[str, Any], initial: Mapping[str, str | bytes | int]
    ) -> None:
        """Make the state: its meta key (``description``, JSON) and string keys ``initial``.

        Atomic: the state exists whole or not at all. A name in use raises
        ``FileExistsError``. Parts that are not strings (a hash, a list)
        start empty, that is, absent: Redis treats a missing key as an
        empty one.
        """
        described = json.dumps(dict(description), separators=(",", ":"))
        self.run(
            _CREATE,
            list(initial),
            [described, *initial.values()],
            {
                "EXISTS": lambda _: FileExistsError(
                    f"{self.what}: the name {self.name!r} is in use at {_where(self.url)}: "
                    "connect() to it, or choose another"
                )
            },
        )

    def describe(self) -> dict[str, Any]:
        """The description :meth:`create` stored; ``LookupError`` if there is none."""
        missing = LookupError(f"nothing is named {self.name!r} at {_where(self.url)}")
        described = self.run(_DESCRIBE, refusals={"GONE": lambda _: missing})
        return dict(json.loads(described))

    def delete(self) -> None:
        """Delete every key under the prefix, the meta key first.

        Other handles' next calls then raise ``OwnerGone`` (their scripts
        find no meta key) instead of writing keys nobody would delete.
        """
        redis = _redis()
        try:
            self.command("DEL", self.meta)
            cursor = b"0"
            while True:
                cursor, keys = self.command("SCAN", cursor, "MATCH", self.key("*"), "COUNT", 1000)
                if keys:
                    self.command("UNLINK", *keys)
                if cursor in (b"0", 0, "0"):
                    break
        except redis.exceptions.RedisError as error:
            raise self._translated(error) from None

    def close(self) -> None:
        """Stop using the server; in the creator, delete the keys first.

        A server that is gone or does not answer in time leaves the keys
        where they are (on a server without persistence, they went with it):
        ``close()`` does not raise for that, as the other ways' ``close()``
        does not for a dead owner.
        """
        if self.closed:
            return
        try:
            if self.creator:
                self.delete()
        except (OwnerGone, TimeoutError):
            pass
        finally:
            self.disconnect()

    def disconnect(self) -> None:
        """Close this process's connections, deleting nothing; calls then raise the closed error.

        A call blocked in another thread wakes with the closed error: its
        socket is shut down under it.
        """
        self.closed = True
        here = threading.get_ident()
        for connection, thread in list(self._open.items()):
            if thread == here:
                connection.disconnect()
                continue
            # Another thread's: that thread may be inside redis-py with it,
            # and redis-py's disconnect() beside a connect in progress is
            # not safe (seen with redis-py 8.2: the handshake reconnected,
            # then waited on replies it had already read). Shutting the
            # socket down wakes a read there with end of file; that thread
            # then drops the connection itself, and its next call finds the
            # keyspace closed. A connection still being made has no socket
            # yet: its thread's wait on the server ends within a slice.
            sock = getattr(connection, "_sock", None)  # redis-py's, since 2.x
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        self._open.clear()


Attached = TypeVar("Attached", bound="RedisHandle")


class RedisHandle(Closable):
    """What every Redis way has beyond its protocol: ``url``, ``name``, ``connect()``.

    A way's constructor takes ``url=DEFAULT_URL``, ``name=None`` (a fresh
    random prefix) and ``timeout``, and calls :meth:`_create` once its
    arguments are checked. Its calls run :class:`Script` objects with
    ``self._keyspace.run(...)``. It pickles to children under every start
    method (the child connects anew) and attaches from any process with
    :meth:`connect`. ``close()`` in the creating process deletes every key
    under the prefix; in any other process it only disconnects.

    A creator that dies without ``close()`` leaves its keys on the server:
    no process of this host outlives it to delete them.
    """

    _keyspace: Keyspace
    #: What the state is beyond its keys (JSON): stored at creation, sent to
    #: children, read back by connect(), and given to :meth:`_adopt`.
    _description: dict[str, Any]

    def _create(
        self,
        url: object,
        name: object,
        timeout: object,
        description: Mapping[str, Any] | None = None,
        initial: Mapping[str, str | bytes | int] | None = None,
    ) -> None:
        """Make this handle's state on the server (see :meth:`Keyspace.create`)."""
        keyspace = Keyspace.open(
            url, name, timeout, type(self).__name__, self._closed_error, creator=True
        )
        described = {**(description or {}), "kind": type(self).__name__}
        try:
            keyspace.create(described, initial or {})
        except BaseException:
            keyspace.disconnect()  # not ours to delete: in use by another, or never made
            raise
        self._keyspace = keyspace
        self._adopt(described)

    def _adopt(self, description: dict[str, Any]) -> None:
        """Set up this process's handle from ``description``; a way may extend it."""
        self._description = description

    @property
    def url(self) -> str:
        """The server's URL, password included: whoever holds it and the name may use the state."""
        return self._keyspace.url

    @property
    def name(self) -> str:
        """The key prefix that names the state on its server (see :meth:`connect`)."""
        return self._keyspace.name

    def __getstate__(self) -> dict[str, Any]:
        self._check_open()
        return {"keyspace": self._keyspace, "description": self._description}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._keyspace = state["keyspace"]
        self._adopt(state["description"])

    @classmethod
    def connect(
        cls: type[Attached], url: str, name: str, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> Attached:
        """A handle to the state named ``name`` at ``url``, from any process.

        ``url`` and ``name`` are the creator's :attr:`url` and :attr:`name`.
        The new handle is not the creator: its ``close()`` disconnects it
        alone, and once the creator has closed, its calls raise
        :class:`~shmref.lifecycle.OwnerGone`. No state of that name raises
        ``LookupError``, one of another class ``TypeError``.
        """
        keyspace = Keyspace.open(
            url, name, timeout, cls.__name__, cls._closed_error, creator=False
        )
        try:
            description = keyspace.describe()
            if description.get("kind") != cls.__name__:
                kind = description.get("kind")
                raise TypeError(f"{name!r} at {_where(url)} is a {kind}, not a {cls.__name__}")
        except BaseException:
            keyspace.close()
            raise
        handle = cls.__new__(cls)
        handle.__setstate__({"keyspace": keyspace, "description": description})
        return handle

    def _release(self) -> None:
        self._keyspace.close()
