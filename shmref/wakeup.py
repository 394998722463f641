"""Sleep until a word of shared memory changes, and wake the sleepers: a Linux futex.

A :class:`~shmref.channel.CtypesChannel` keeps its counts in its segment,
not in semaphores (a process killed between taking a semaphore's token and
using it would lose that token for good). A putter that finds the ring
full, or a getter that finds it empty, reads a 32-bit sequence word of the
segment, checks again, and sleeps while the word still holds what it read;
the other side changes the word, and wakes a sleeper only when one has said
it sleeps (a flag word), so the uncontended path makes no system call. The
waker clears the flag once a wake finds nobody asleep: waking one sleeper
per message, not all of them, spares the others a trip for nothing.

Here a sleep is ``FUTEX_WAIT_BITSET`` on the word's address, which the
kernel compares and sleeps on in one step: a change made after the read is
never missed. A sleep ends at a deadline of ``time.monotonic()``, so every
wait stays a slice of its caller's timeout. Where there is no futex (not
Linux, or an architecture missing from :data:`_SYSCALL`), a sleep is a short
``time.sleep`` and a wake does nothing: waits poll, correct but slower.
"""

from __future__ import annotations

import ctypes
import os
import sys
import time
from typing import Any

from shmref.holder import _Timespec, _timespec

#: SYS_futex by machine (from the kernel's syscall tables).
_SYSCALL = {
    "x86_64": 202,
    "aarch64": 98,
    "riscv64": 98,
    "ppc64le": 221,
    "s390x": 238,
    "i686": 240,
    "armv7l": 240,
}
_WAIT_BITSET, _WAKE = 9, 1
_ANY = 0xFFFFFFFF  # FUTEX_BITSET_MATCH_ANY
#: A count that wakes every sleeper.
EVERYONE = 2**31 - 1
#: How long a sleep lasts where there is no futex.
POLL = 0.001


class _Futex:
    def __init__(self) -> None:
        self.number = _SYSCALL[os.uname().machine]
        call = ctypes.CDLL(None, use_errno=True).syscall
        call.argtypes = [
            ctypes.c_long,
            ctypes.c_void_p,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.POINTER(_Timespec),
            ctypes.c_void_p,
            ctypes.c_uint,
        ]
        call.restype = ctypes.c_long
        self.call = call


_futex: _Futex | bool | None = False  # False: not looked up yet in this process


def _api() -> _Futex | None:
    global _futex
    if _futex is False:
        try:
            _futex = _Futex() if sys.platform.startswith("linux") else None
        except (KeyError, AttributeError, OSError):
            _futex = None
    return _futex  # type: ignore[return-value]


def word_address(buf: Any, offset: int) -> int:
    """The address of byte ``offset`` of the writable buffer ``buf``.

    The ctypes object that tells it goes at once: kept, it would stop the
    segment from being unmapped.
    """
    return ctypes.addressof(ctypes.c_char.from_buffer(buf, offset))


def sleep_on(at: int, seen: int, wait: float) -> None:
    """Sleep at most ``wait`` seconds while the 32-bit word at ``at`` holds ``seen``.

    It may return early (a wake, a signal, the word already changed): the
    caller looks again. ``at`` must stay mapped, or the kernel refuses
    (EFAULT) and it returns at once.
    """
    futex = _api()
    if futex is None:
        time.sleep(min(wait, POLL))
        return
    deadline = _timespec(time.monotonic() + wait)
    futex.call(futex.number, at, _WAIT_BITSET, seen, ctypes.byref(deadline), None, _ANY)


def wake(at: int, count: int) -> int:
    """Wake up to ``count`` processes sleeping on the word at ``at``; how many woke.

    0 says that nobody was asleep there (always, where there is no futex).
    """
    futex = _api()
    if futex is None:
        return 0
    return max(0, int(futex.call(futex.number, at, _WAKE, count, None, None, 0)))


__all__ = ["EVERYONE", "POLL", "sleep_on", "wake", "word_address"]
