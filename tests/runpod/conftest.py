"""`runpod_standin`: the local RunPod stand-in served by uvicorn on 127.0.0.1 (free port).

One server per test session; each test gets it reset (no jobs, initial mode, zeroed stats).
The fixture yields ``app.runpod.standin.StandinServer``: ``.base_url``, ``.api_key``,
``.endpoint_id``, ``.set_mode(**switches)``, ``.state.stats``. To reuse it elsewhere, move these
two fixtures to tests/conftest.py (or copy them: they only use app.runpod.standin).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.runpod.standin import StandinServer

STANDIN_API_KEY = "rp-test-key-5f3c9a1e7d"


@pytest.fixture(scope="session")
def _runpod_standin_server() -> Iterator[StandinServer]:
    with StandinServer(STANDIN_API_KEY, mode={"processing_s": 0.1}) as server:
        yield server


@pytest.fixture
def runpod_standin(_runpod_standin_server: StandinServer) -> Iterator[StandinServer]:
    _runpod_standin_server.reset()
    yield _runpod_standin_server
    _runpod_standin_server.reset()
