"""How the benchmarks time work done by several processes.

Every benchmark is written once and runs in two modes. ``nox -s bench``
enables pytest-benchmark: full sizes, several rounds, stored and rendered into
the docs. The test suite runs with ``--benchmark-disable``: each benchmark runs
once with ``quick`` sizes, so benchmark code is exercised on every test run.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from typing import Any

# Generous: a round waits for P processes to start, and spawn on a loaded
# 2-core machine can take seconds; a dead worker breaks the barrier instead.
BARRIER_TIMEOUT = 120.0


def size(benchmark: Any, full: int, quick: int) -> int:
    """``full`` when measuring, ``quick`` when the suite runs benchmarks once."""
    return quick if benchmark.disabled else full


class WorkerGroup:
    """P processes that start, meet at a barrier, work, and meet again.

    The benchmark times only the span between the two barrier meetings, so
    process start-up and exit are excluded; ``startup`` benchmarks measure
    those separately.
    """

    def __init__(
        self,
        ctx: multiprocessing.context.BaseContext,
        target: Callable[..., None],
        args_for: Callable[[Any], Sequence[Any]],
        processes: int,
    ) -> None:
        self.barrier = ctx.Barrier(processes + 1)
        self.processes = [
            ctx.Process(target=target, args=(*args_for(self.barrier), BARRIER_TIMEOUT))
            for _ in range(processes)
        ]
        for p in self.processes:
            p.start()

    def run(self) -> None:
        """The timed part: release the workers, wait until all are done."""
        self.barrier.wait(BARRIER_TIMEOUT)
        self.barrier.wait(BARRIER_TIMEOUT)

    def join(self) -> None:
        for p in self.processes:
            p.join(BARRIER_TIMEOUT)
            if p.exitcode != 0:
                raise RuntimeError(f"{p.name} exited with {p.exitcode}")


def time_groups(
    benchmark: Any,
    make_group: Callable[[], WorkerGroup],
    rounds: int,
) -> None:
    """Time ``rounds`` fresh worker groups with ``benchmark.pedantic``."""
    started: list[WorkerGroup] = []

    def setup() -> tuple[tuple[WorkerGroup], dict[str, Any]]:
        started.append(make_group())
        return (started[-1],), {}

    def teardown(group: WorkerGroup) -> None:
        started.remove(group)
        group.join()

    try:
        benchmark.pedantic(
            lambda group: group.run(), setup=setup, teardown=teardown, rounds=rounds
        )
    finally:
        # pytest-benchmark skips teardown when disabled: join what is left.
        for group in started:
            group.join()
