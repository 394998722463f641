"""How the benchmarks time a way's start-up: create it, then close it.

Every primitive's run has a ``<primitive>-startup`` group timed here, so the
decision guide (docs/_ext/choose.py) gives each way its own start-up. What a
round pays is what a program pays once: the shared memory (a heap block or a
segment) and, for a Queue or Manager way, the owner or server process, started
and then stopped. No worker uses the object: the throughput groups exclude
process start-up, and ``counter-startup``'s ``process`` rows time that apart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .timing import size

#: Rounds per way: a round is fast under fork (under 20 ms for a server), a
#: spawned server takes about 150 ms, so five keep the file's cost in seconds.
ROUNDS = 5


def time_startup(
    benchmark: Any,
    group: str,
    way: str,
    create: Callable[[], Any],
    method: str,
    **extra: Any,
) -> None:
    """Time ``create().close()`` as benchmark ``group``, one op a round.

    ``create`` makes the way with the context of start method ``method``.
    ``extra_info`` gets ``way``, ``method`` and ``extra``, which is what
    docs/_ext/choose.py and the pages look the figure up by.
    """
    benchmark.group = group
    benchmark.extra_info.update(way=way, method=method, ops=1, **extra)

    def create_and_close() -> None:
        create().close()

    benchmark.pedantic(create_and_close, rounds=size(benchmark, ROUNDS, 1))
