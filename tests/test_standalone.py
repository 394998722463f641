"""Each primitive's generated standalone file works alone in a project.

``python -m shmref.standalone NAME -o NAME.py`` writes the file into an
empty folder, where an interpreter that cannot import the installed
``shmref`` (``-S`` drops site-packages, ``-E`` ignores PYTHONPATH) runs a
script with spawn children, which must import the file by its own name to
unpickle their targets.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

import shmref
from shmref.standalone import PRIMITIVES, generate

PACKAGE = Path(shmref.__file__).parent


# Appended to every script: the module ran from its copy, and only from it.
ALONE = """
assert os.path.dirname(os.path.abspath({module}.__file__)) == os.getcwd(), {module}.__file__
try:
    import shmref
except ImportError:
    pass
else:
    raise SystemExit(f"shmref is importable from {{shmref.__file__}}")
"""


class Standalone(NamedTuple):
    module: str  # shmref/<module>.py, copied as <module>.py
    script: str  # run from the copy's folder; must print `expected`
    expected: str


COUNTER_SCRIPT = """\
import multiprocessing
import os

import counter

if __name__ == "__main__":
    ctx = multiprocessing.get_context("spawn")
    for cls in (
        counter.CtypesCounter,
        counter.SlotCounter,
        counter.QueueCounter,
        counter.ManagerCounter,
    ):
        with cls(ctx=ctx) as c:
            workers = [ctx.Process(target=counter.add_worker, args=(c, 500)) for _ in range(2)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join(60)
            print(cls.__name__, [worker.exitcode for worker in workers], c.get())
    # -S: no site-packages, so no redis package; the Redis way says what to install.
    try:
        counter.RedisCounter()
    except ImportError as error:
        print("RedisCounter:", str(error).split(": ")[-1])
"""

ARRAYS_SCRIPT = """\
import multiprocessing
import os
import sys

sys.modules["numpy"] = None  # numpy is optional: the module must work without it

import array

import arrays

assert hasattr(array, "array"), "arrays.py shadows the standard library's array"

if __name__ == "__main__":
    ctx = multiprocessing.get_context("spawn")
    for make in (
        lambda: arrays.CtypesArray("q", 6, ctx=ctx),
        lambda: arrays.CtypesArray("q", 6, segment=True, ctx=ctx),
        lambda: arrays.QueueArray("q", 6, ctx=ctx),
        lambda: arrays.ManagerArray("q", 6, ctx=ctx),
    ):
        with make() as a:
            workers = [
                ctx.Process(target=arrays.fill, args=(a, i + 1, 3 * i, 3 * i + 3))
                for i in range(2)
            ]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join(60)
            try:
                a.as_numpy()
            except (ModuleNotFoundError, NotImplementedError) as error:
                view = type(error).__name__
            print(type(a).__name__, [worker.exitcode for worker in workers], a[:], view)
"""

LOCKS_SCRIPT = """\
import ctypes
import multiprocessing
import os
import signal
import time

import locks


def hold(lock, counts, rounds):
    # Process target: rounds times, hold lock and count who is inside.
    for _ in range(rounds):
        with lock:
            counts[0] += 1
            counts[1] = max(counts[1], counts[0])
            time.sleep(0.01)
            counts[0] -= 1
            counts[2] += 1
    lock.close()


def die_holding(lock):
    lock.acquire()
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    ctx = multiprocessing.get_context("spawn")
    for cls in (locks.CtypesLock, locks.QueueLock, locks.ManagerLock, locks.RobustLock):
        lock = cls(ctx=ctx)
        counts = ctx.RawArray(ctypes.c_int64, 3)  # inside, peak, entered
        workers = [ctx.Process(target=hold, args=(lock, counts, 2)) for _ in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        print(cls.__name__, [worker.exitcode for worker in workers], counts[1], counts[2])
        lock.close()
    lock = locks.RobustLock(ctx=ctx)
    holder = ctx.Process(target=die_holding, args=(lock,))
    holder.start()
    holder.join(60)
    print("after die_holding:", holder.exitcode, lock.acquire(timeout=60), lock.holder_died)
    lock.release()
    lock.close()
    # -S: no site-packages, so no redis package; the Redis way says what to install.
    try:
        locks.RedisLock()
    except ImportError as error:
        print("RedisLock:", str(error).split(": ")[-1])
"""

VALUE_SCRIPT = """\
import ctypes
import multiprocessing
import os

import value

if __name__ == "__main__":
    ctx = multiprocessing.get_context("spawn")
    for cls in (value.CtypesValue, value.QueueValue, value.ManagerValue):
        with cls(ctypes.c_longlong, ctx=ctx) as v:
            workers = [ctx.Process(target=value.update_worker, args=(v, 500)) for _ in range(2)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join(60)
            print(cls.__name__, [worker.exitcode for worker in workers], v.get())
"""

METRICS_SCRIPT = """\
import multiprocessing
import os

import metrics

if __name__ == "__main__":
    ctx = multiprocessing.get_context("spawn")
    for cls in (metrics.CtypesMetrics, metrics.QueueMetrics, metrics.ManagerMetrics):
        with cls(workers=2, ctx=ctx) as board:
            workers = [
                ctx.Process(target=metrics.metrics_worker, args=(board, i, 50)) for i in range(2)
            ]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join(60)
            done = board.totals()
            print(cls.__name__, [w.exitcode for w in workers], done["completed"], done["errors"])
"""

TABLE_SCRIPT = """\
import multiprocessing
import os

import table

if __name__ == "__main__":
    ctx = multiprocessing.get_context("spawn")
    for cls in (table.CtypesDict, table.QueueDict, table.ManagerDict):
        with cls(capacity=16, ctx=ctx) as t:
            t["a"] = 0
            workers = [
                ctx.Process(target=table.update_worker, args=(t, ["a", b"b"], 100))
                for _ in range(2)
            ]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join(60)
            items = sorted(t.items(), key=repr)
            print(cls.__name__, [worker.exitcode for worker in workers], items)
"""

CHANNEL_SCRIPT = """\
import multiprocessing
import os

import channel

if __name__ == "__main__":
    ways = (channel.CtypesChannel, channel.QueueChannel, channel.ManagerChannel)
    # The ctypes way under every start method: its segment and the resource tracker.
    for method in ("spawn", "forkserver", "fork"):
        ctx = multiprocessing.get_context(method)
        for cls in ways if method == "spawn" else ways[:1]:
            with cls(capacity=8, max_size=64, ctx=ctx) as ch:
                reader, writer = ctx.Pipe(duplex=False)
                workers = [
                    ctx.Process(target=channel.send_worker, args=(ch, p, 200)) for p in range(2)
                ]
                workers.append(ctx.Process(target=channel.receive_worker, args=(ch, 2, writer)))
                for worker in workers:
                    worker.start()
                got = reader.recv()
                for worker in workers:
                    worker.join(60)
                print(method, cls.__name__, [w.exitcode for w in workers], len(got))
    with channel.PickleChannel(channel.CtypesChannel(capacity=2, max_size=64)) as objects:
        objects.put({"n": 1})
        print(objects.get())
"""

MODULES = [
    Standalone(
        "counter",
        COUNTER_SCRIPT,
        "CtypesCounter [0, 0] 1000\n"
        "SlotCounter [0, 0] 1000\n"
        "QueueCounter [0, 0] 1000\n"
        "ManagerCounter [0, 0] 1000\n"
        "RedisCounter: pip install shmref[redis]\n",
    ),
    Standalone(
        "arrays",
        ARRAYS_SCRIPT,
        "CtypesArray [0, 0] [1, 1, 1, 2, 2, 2] ModuleNotFoundError\n"
        "CtypesArray [0, 0] [1, 1, 1, 2, 2, 2] ModuleNotFoundError\n"
        "QueueArray [0, 0] [1, 1, 1, 2, 2, 2] NotImplementedError\n"
        "ManagerArray [0, 0] [1, 1, 1, 2, 2, 2] NotImplementedError\n",
    ),
    Standalone(
        "locks",
        LOCKS_SCRIPT,
        "CtypesLock [0, 0] 1 4\n"
        "QueueLock [0, 0] 1 4\n"
        "ManagerLock [0, 0] 1 4\n"
        "RobustLock [0, 0] 1 4\n"
        "after die_holding: -9 True True\n"
        "RedisLock: pip install shmref[redis]\n",
    ),
    Standalone(
        "value",
        VALUE_SCRIPT,
        "CtypesValue [0, 0] 1000\nQueueValue [0, 0] 1000\nManagerValue [0, 0] 1000\n",
    ),
    Standalone(
        "metrics",
        METRICS_SCRIPT,
        "CtypesMetrics [0, 0] 90 10\nQueueMetrics [0, 0] 90 10\nManagerMetrics [0, 0] 90 10\n",
    ),
    Standalone(
        "table",
        TABLE_SCRIPT,
        "CtypesDict [0, 0] [('a', 200), (b'b', 200)]\n"
        "QueueDict [0, 0] [('a', 200), (b'b', 200)]\n"
        "ManagerDict [0, 0] [('a', 200), (b'b', 200)]\n",
    ),
    Standalone(
        "channel",
        CHANNEL_SCRIPT,
        "spawn CtypesChannel [0, 0, 0] 400\n"
        "spawn QueueChannel [0, 0, 0] 400\n"
        "spawn ManagerChannel [0, 0, 0] 400\n"
        "forkserver CtypesChannel [0, 0, 0] 400\n"
        "fork CtypesChannel [0, 0, 0] 400\n"
        "{'n': 1}\n",
    ),
]


@pytest.mark.parametrize("case", MODULES, ids=[case.module for case in MODULES])
def test_module_works_alone(case: Standalone, tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "shmref.standalone", case.module, "-o", f"{case.module}.py"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(PACKAGE.parent)},
        check=True,
        timeout=60,
    )
    script = tmp_path / f"run_{case.module}.py"
    script.write_text(case.script + ALONE.format(module=case.module))
    env = {name: value for name, value in os.environ.items() if not name.startswith("PYTHON")}
    result = subprocess.run(
        [sys.executable, "-S", "-E", "-s", script.name],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (result.returncode, result.stdout) == (0, case.expected), result.stderr
    assert "leaked" not in result.stderr
    assert "Traceback" not in result.stderr


def test_every_primitive_is_run_alone() -> None:
    assert sorted(case.module for case in MODULES) == sorted(PRIMITIVES)


#: Optional imports a standalone file may make, each guarded where it is used.
OPTIONAL = {"numpy", "redis"}


@pytest.mark.parametrize("name", PRIMITIVES)
def test_generated_file_imports_only_the_standard_library(name: str) -> None:
    tree = ast.parse(generate(name))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported.add((node.module or "").split(".")[0])
    imported.discard("__future__")
    assert imported - sys.stdlib_module_names - OPTIONAL == set()


def test_generated_file_says_it_is_generated() -> None:
    text = generate("counter")
    assert "python -m shmref.standalone counter" in text
    assert "do not edit" in text
