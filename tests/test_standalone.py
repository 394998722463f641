"""Each module of shmref works when copied alone into a project.

The module is copied into an empty folder and run by an interpreter that
cannot import the installed ``shmref`` (``-S`` drops site-packages, ``-E``
ignores PYTHONPATH), with spawn children, which must import the copy by its
new name to unpickle their targets.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

import shmref

PACKAGE = Path(shmref.__file__).parent


class Standalone(NamedTuple):
    module: str  # shmref/<module>.py, copied as <module>.py
    script: str  # run from the copy's folder; must print `expected`
    expected: str


COUNTER_SCRIPT = """\
import multiprocessing
import os

import counter

assert os.path.dirname(os.path.abspath(counter.__file__)) == os.getcwd(), counter.__file__
try:
    import shmref
except ImportError:
    pass
else:
    raise SystemExit(f"shmref is importable from {shmref.__file__}")

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
"""

MODULES = [
    Standalone(
        "counter",
        COUNTER_SCRIPT,
        "CtypesCounter [0, 0] 1000\n"
        "SlotCounter [0, 0] 1000\n"
        "QueueCounter [0, 0] 1000\n"
        "ManagerCounter [0, 0] 1000\n",
    ),
]


@pytest.mark.parametrize("case", MODULES, ids=[case.module for case in MODULES])
def test_module_works_alone(case: Standalone, tmp_path: Path) -> None:
    shutil.copy(PACKAGE / f"{case.module}.py", tmp_path / f"{case.module}.py")
    script = tmp_path / f"run_{case.module}.py"
    script.write_text(case.script)
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
