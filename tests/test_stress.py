"""A short run of every stress cell (``nox -s stress`` runs them long, with 8 and 16 processes)."""

from __future__ import annotations

import pytest

from tests.conftest import START_METHODS
from tests.stress import cells, stress


@pytest.mark.parametrize(("name", "way"), cells(), ids=[f"{n}-{w}" for n, w in cells()])
@pytest.mark.parametrize("start_method", START_METHODS[:1])
def test_every_call_is_accounted_for(name: str, way: str, ctx: object) -> None:
    rate = stress(name, way, ctx, processes=4, seconds=0.2)  # type: ignore[arg-type]
    assert rate > 0
