"""Named shared memory segments: one naming scheme, one resource-tracker strategy.

A segment is a ``multiprocessing.shared_memory.SharedMemory`` named
``/shmref_`` plus 16 hex digits (24 characters with the slash, under the
30 that every POSIX system takes), so ``ls /dev/shm`` shows whose it is.
The creator makes it with mode 0600 and ``O_EXCL``, and only the creator
unlinks it.

The resource tracker, which unlinks what a crashed creator leaves behind,
must know a segment once, from its creator. Python 3.13 has
``track=False`` for the attaching processes. Before 3.13 every attach
registers, and the usual fix, unregistering right after, is wrong: the
processes of one program share one tracker, which keeps a *set* of names,
so an attacher's unregister would erase the creator's registration (the
creator's unlink then makes the tracker print a KeyError, and a crash would
leak the segment). So :func:`attach` skips the one registration instead.
"""

from __future__ import annotations

import errno
import os
import secrets
import sys
import threading
from collections.abc import Sized
from multiprocessing import resource_tracker
from multiprocessing.shared_memory import SharedMemory
from typing import Any

#: Prefix of the segments' names (without the leading slash).
SEGMENT_PREFIX = "shmref_"


def _new(nbytes: int) -> SharedMemory:
    while True:
        try:
            return SharedMemory(SEGMENT_PREFIX + secrets.token_hex(8), create=True, size=nbytes)
        except FileExistsError:  # 64 random bits taken: draw again
            continue


def create(nbytes: int) -> SharedMemory:
    """A new zero-filled segment of ``nbytes``, its memory reserved now.

    Reserving it (``posix_fallocate``) turns a full ``/dev/shm`` into an
    ``OSError`` here, instead of a SIGBUS that would kill the first process
    to touch a page that has no room.
    """
    segment = _new(nbytes)
    fd = getattr(segment, "_fd", -1)
    if fd < 0 or not hasattr(os, "posix_fallocate"):
        return segment
    try:
        os.posix_fallocate(fd, 0, nbytes)
    except OSError as error:
        if error.errno in (errno.EINVAL, errno.EOPNOTSUPP):
            return segment  # a file system that cannot reserve: pages come on first touch
        segment.close()
        segment.unlink()
        if error.errno in (errno.ENOSPC, errno.ENOMEM):
            raise OSError(
                error.errno,
                f"no room for a shared memory segment of {nbytes} bytes "
                "(is /dev/shm full or too small?)",
            ) from None
        raise
    return segment


_attach_lock = threading.Lock()


def attach(name: str) -> SharedMemory:
    """Map the creator's segment ``name`` without registering it with a tracker."""
    if sys.version_info >= (3, 13):
        return SharedMemory(name, track=False)
    with _attach_lock:
        register, attaching = resource_tracker.register, name.lstrip("/")

        def register_others(name: Sized, rtype: str) -> None:
            if rtype != "shared_memory" or str(name).lstrip("/") != attaching:
                register(name, rtype)

        resource_tracker.register = register_others
        try:
            return SharedMemory(name)
        finally:
            resource_tracker.register = register


def release(segment: SharedMemory, views: list[Any], creator: int | None) -> None:
    """Unmap ``segment`` after releasing ``views`` of it; unlink it in its creator.

    Meant for ``weakref.finalize``, so that it runs once, at ``close()`` or
    when the handle is garbage-collected. A numpy view that outlives a handle
    dropped without ``close()`` keeps the mapping alive until it goes.
    """
    for view in views:
        view.release()
    try:
        segment.close()
    except BufferError:
        segment._mmap = None  # type: ignore[attr-defined]
        segment.close()
    if creator == os.getpid():
        segment.unlink()
