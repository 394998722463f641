"""The peer adapters' own promises: a missing peer skips with the line that installs it."""

from __future__ import annotations

from typing import Any

import pytest

from . import peers


def test_a_missing_peer_skips_with_the_install_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(peers.PEERS, "atomics", ("no_such_module_shmref", "atomics"))
    with pytest.raises(pytest.skip.Exception) as skipped:
        peers.need("atomics")
    assert str(skipped.value) == (
        "atomics is not installed: pip install shmref[peers] (or pip install atomics)"
    )


def test_a_peer_is_found_without_importing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # UltraDict must not be imported into the pytest process (peers_table.py).
    imported: list[str] = []
    monkeypatch.setattr(peers.importlib, "import_module", imported.append)
    peers.installed("ultradict")
    assert imported == []


def test_a_stored_peer_row_names_its_version() -> None:
    class Benchmark:
        def __init__(self) -> None:
            self.extra_info: dict[str, Any] = {}

    bench = Benchmark()
    peer = next((p for p in peers.PEERS if peers.installed(p)), None)
    if peer is None:
        pytest.skip(peers.install_line("faster-fifo"))
    peers.describe(bench, peer)
    assert bench.extra_info == {"peer": peer, "version": peers.version(peer)}
