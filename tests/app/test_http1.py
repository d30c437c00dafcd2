"""One write per loop turn (app/http1.py): a response's head and body leave together, streamed
chunks still leave as they are written, and what a connection sends is byte for byte what
uvicorn's own protocol sends."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from app.http1 import HOLD_AT_MOST, TurnWrites, TurnWritesHttpToolsProtocol
from app.localredis import free_port


class Recorder:
    """The real transport's side of TurnWrites: what it was asked to write, in order."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 1) if name == "peername" else default


async def test_the_writes_of_one_turn_leave_as_one_after_it() -> None:
    real = Recorder()
    held = TurnWrites(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    held.write(b"HTTP/1.1 200 OK\r\n\r\n")
    held.writelines([b"{", b"}"])
    assert real.writes == [] and held.get_write_buffer_size() == 21
    assert held.get_extra_info("peername") == ("127.0.0.1", 1)  # the rest: the real one's
    await asyncio.sleep(0)
    assert real.writes == [b"HTTP/1.1 200 OK\r\n\r\n{}"] and held.sent == 1
    held.write(b"chunk")  # a later turn: a write of its own
    await asyncio.sleep(0)
    assert real.writes[1:] == [b"chunk"]

    held.write(b"x" * HOLD_AT_MOST)  # a full hold leaves at once
    assert real.writes[-1] == b"x" * HOLD_AT_MOST
    held.write(b"last words")
    held.close()  # what is held goes first
    assert real.writes[-1] == b"last words" and real.closed
    await asyncio.sleep(0)
    assert held.sent == 4


async def test_an_aborted_connection_drops_what_is_held() -> None:
    real = Recorder()
    held = TurnWrites(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    held.write(b"never sent")
    held.abort()
    await asyncio.sleep(0)
    assert real.writes == [] and real.aborted


async def _stream() -> AsyncIterator[bytes]:
    for n in range(3):
        yield f"data: {n}\n\n".encode()
        await asyncio.sleep(0.05)


async def _busy() -> None:
    time.sleep(0.4)  # work after the response that holds the loop (on purpose)


async def _echo(request: Request) -> Response:
    return JSONResponse({"got": (await request.body()).decode()})


APP = Starlette(routes=[
    Route("/json", lambda r: JSONResponse({"ok": True, "pad": "x" * 100})),
    Route("/echo", _echo, methods=["POST"]),
    Route("/empty", lambda r: Response(status_code=204)),
    Route("/big", lambda r: Response(b"y" * 300_000, media_type="application/octet-stream")),
    Route("/stream", lambda r: StreamingResponse(_stream(), media_type="text/event-stream")),
    Route("/then-busy", lambda r: Response(b"done", background=BackgroundTask(_busy))),
])


class Counted(TurnWritesHttpToolsProtocol):
    transports: list[TurnWrites] = []

    def connection_made(self, transport):  # type: ignore[no-untyped-def]
        super().connection_made(transport)
        Counted.transports.append(self.transport)  # type: ignore[arg-type]


@contextlib.contextmanager
def serving(http: type) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(APP, host="127.0.0.1", port=port, http=http,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            threading.Event().wait(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def _exchange(url: str) -> list[tuple[int, bytes, str]]:
    with httpx.Client(base_url=url) as http:  # one keep-alive connection
        seen = []
        for _ in range(5):
            r = http.get("/json")
            seen.append((r.status_code, r.content, r.headers["content-type"]))
        r = http.post("/echo", content=b"hello")
        seen.append((r.status_code, r.content, r.headers["content-length"]))
        r = http.get("/empty")
        seen.append((r.status_code, r.content, ""))
        r = http.head("/json")
        seen.append((r.status_code, r.content, r.headers["content-length"]))
        r = http.get("/big")
        seen.append((r.status_code, r.content, r.headers["content-length"]))
        with http.stream("GET", "/stream") as s:
            seen.append((s.status_code, b"".join(s.iter_bytes()), s.headers["content-type"]))
    return seen


def test_one_write_a_response_and_the_same_bytes_as_uvicorns_own() -> None:
    Counted.transports = []
    with serving(Counted) as url:
        ours = _exchange(url)
    with serving(uvicorn.protocols.http.httptools_impl.HttpToolsProtocol) as url:
        theirs = _exchange(url)
    assert ours == theirs
    assert ours[-1][1] == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
    assert len(Counted.transports) == 1
    # 5 + 3 small answers of one write each; 300 kB in writes of 64 kB or more; the stream's
    # head with its first chunk, then a write per chunk and one for the end
    sent = Counted.transports[0].sent
    assert 8 + 1 + 3 <= sent <= 8 + 6 + 4, sent


def test_a_complete_response_leaves_before_the_work_after_it() -> None:
    with serving(TurnWritesHttpToolsProtocol) as url, httpx.Client(base_url=url) as http:
        started = time.monotonic()
        assert http.get("/then-busy").content == b"done"
        assert time.monotonic() - started < 0.3  # not held until the background work yields
