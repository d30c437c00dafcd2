"""Fixtures for the miner tests: real servers on 127.0.0.1 (uvicorn in a thread), no mocks."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import uvicorn

from miner.demo_model import DemoState, create_demo_app

TEST_KEY = "0x" + "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class UvicornThread:
    """An ASGI app served by uvicorn on 127.0.0.1 in a background thread."""

    def __init__(self, app, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                           access_log=False, lifespan="auto")
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> "UvicornThread":
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> "UvicornThread":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class DemoModel:
    url: str  # ends with /v1
    root: str
    state: DemoState

    def control(self, **switches: object) -> dict:
        r = httpx.post(self.root + "/demo/control", json=switches, timeout=5)
        r.raise_for_status()
        return r.json()


@pytest.fixture
def demo_model() -> Iterator[DemoModel]:
    state = DemoState()
    with UvicornThread(create_demo_app(state)) as srv:
        yield DemoModel(url=srv.url + "/v1", root=srv.url, state=state)


@pytest.fixture
def unused_url() -> str:
    """A 127.0.0.1 URL nothing listens on."""
    return f"http://127.0.0.1:{free_port()}"
