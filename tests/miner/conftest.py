"""Fixtures for the miner tests: real servers on 127.0.0.1, no mocks."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from miner.demo_model import DemoState, create_demo_app
from tests.miner.support import DemoModel, UvicornThread, free_port


@pytest.fixture
def demo_model() -> Iterator[DemoModel]:
    state = DemoState()
    with UvicornThread(factory=lambda: create_demo_app(state)) as srv:
        yield DemoModel(url=srv.url + "/v1", root=srv.url, state=state, server=srv)


@pytest.fixture
def server() -> Iterator["ProtocolServer"]:
    """The protocol-faithful backend of tests/miner/batch_server.py on 127.0.0.1 (`.url`)."""
    from tests.miner.batch_server import ProtocolServer

    srv = ProtocolServer()
    with UvicornThread(factory=srv.app) as http:
        srv.url = http.url  # type: ignore[attr-defined]
        yield srv


@pytest.fixture
def unused_url() -> str:
    """A 127.0.0.1 URL nothing listens on."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def backend_factory(settings_factory) -> Iterator:  # type: ignore[no-untyped-def]
    """Start the real backend on 127.0.0.1: backend_factory(lease_seconds=2, ...) -> Backend.
    held=(path suffixes, threading.Event): answers to those requests wait for the event."""
    from collections import Counter

    from app.main import create_app
    from tests.miner.support import Backend, HeldReplies, RequestCounter

    started: list[Backend] = []

    def make(held: tuple[tuple[str, ...], threading.Event] | None = None,
             **overrides: object) -> Backend:
        port = free_port()
        # The demo model counts words as its tokens: the backend is told so, as a deployment
        # serving a model with another tokenizer would be (TOKENIZER).
        overrides = {"tokenizer": "words", **overrides}
        settings = settings_factory(public_url=f"http://127.0.0.1:{port}", **overrides)
        requests: Counter[str] = Counter()

        def app():  # type: ignore[no-untyped-def]
            counted = RequestCounter(create_app(settings), requests)
            return counted if held is None else HeldReplies(counted, *held)

        server = UvicornThread(port=port, factory=app).start()
        b = Backend(settings=settings, server=server, requests=requests)
        started.append(b)
        return b

    yield make
    for b in started:
        b.server.stop()


@pytest.fixture
def backend(backend_factory):  # type: ignore[no-untyped-def]
    return backend_factory()
