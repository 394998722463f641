"""What the test suite's forkserver imports once, for every child it forks.

A forkserver child unpickles its target, which imports the target's test
module, and pytest, hypothesis, numpy and redis with it: a third of a second
in every child. Imported here, in the forkserver (tests/conftest.py names
this module to ``multiprocessing.set_forkserver_preload``), they are in each
child from the start, as a program would preload its own modules. The
forkserver skips a preloaded module that raises ImportError, but any other
error ends it: so the modules are imported here, one by one, and one that
skips itself for want of an optional part (``pytest.importorskip``) is left
out.
"""

from __future__ import annotations

import contextlib
import importlib
from pathlib import Path

import pytest

for _path in sorted(Path(__file__).parent.glob("test_*.py")):
    with contextlib.suppress(ImportError, pytest.skip.Exception):
        importlib.import_module(f"tests.{_path.stem}")
