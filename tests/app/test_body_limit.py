"""MAX_BODY_BYTES holds however the body comes: with Content-Length, chunked without one, or with
a Content-Length that lies. 413 with the usual JSON error, before the rest is read."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from tests.support.harness import running_app
from tests.support.live import live_server

LIMIT = 1024


@pytest.fixture
def server(settings_factory):  # type: ignore[no-untyped-def]
    with live_server(settings_factory(max_body_bytes=LIMIT)) as url:
        yield url


async def _raw(url: str, head: bytes, body_parts: list[bytes]) -> tuple[int, dict[str, str], bytes]:
    """Send a hand-made request over a real socket; return the first response."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head)
        for part in body_parts:  # the server may answer (and stop reading) before the end
            try:
                writer.write(part)
                await writer.drain()
            except ConnectionError:
                break
        status_line = await asyncio.wait_for(reader.readline(), 20)
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        body = await reader.readexactly(length) if length else b""
        return int(status_line.split()[1]), headers, body
    finally:
        writer.close()


def _head(path: str, *extra: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: mia.test", "Content-Type: application/json", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _assert_413(status: int, headers: dict[str, str], body: bytes) -> None:
    assert status == 413, (status, body)
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body)["error"] == "payload_too_large"


async def test_chunked_body_without_content_length(server: str) -> None:
    # a valid JSON object that grows past the limit, in 200-byte chunks
    doc = b'{"message": "' + b"a" * (4 * LIMIT) + b'", "signature": "0x"}'
    parts = [_chunk(doc[i:i + 200]) for i in range(0, len(doc), 200)] + [b"0\r\n\r\n"]
    _assert_413(*await _raw(server, _head("/auth/login", "Transfer-Encoding: chunked"), parts))
    # just under the limit, chunked, is read and parsed (422: not a valid sign-in)
    small = b'{"message": "hi"}'
    status, _, _ = await _raw(server, _head("/auth/login", "Transfer-Encoding: chunked"),
                              [_chunk(small), b"0\r\n\r\n"])
    assert status == 422


async def test_declared_length_over_the_limit_is_refused_before_the_body(server: str) -> None:
    # the body is never sent: the answer must not wait for it
    _assert_413(*await _raw(server, _head("/auth/login", f"Content-Length: {LIMIT + 1}"), []))
    status, _, _ = await _raw(server, _head("/auth/login", "Content-Length: 12x"), [])
    assert status == 400


async def test_a_lying_content_length_over_a_socket(server: str) -> None:
    # Declares 20 bytes and sends 4 KiB: the server hands the app 20 bytes (truncated JSON: our
    # 400) and refuses what follows as an invalid request (the server's own 400, whichever
    # comes first); nothing past the declared length reaches the app as a body.
    body = b'{"message": "' + b"a" * (4 * LIMIT) + b'"}'
    status, headers, raw = await _raw(server, _head("/auth/login", "Content-Length: 20"), [body])
    assert status == 400, (status, raw)
    if headers["content-type"].startswith("application/json"):
        assert json.loads(raw)["error"] == "invalid_json"
    async with httpx.AsyncClient(base_url=server) as http:  # and the server is fine
        assert (await http.get("/auth/nonce")).status_code == 422


async def test_a_lying_content_length_in_process(settings_factory) -> None:  # type: ignore[no-untyped-def]
    # An ASGI server that trusted the header would hand the app the whole body: the app counts
    # what it reads, not what it was told.
    async with running_app(settings_factory(max_body_bytes=LIMIT)) as api:
        body = b'{"message": "' + b"a" * (4 * LIMIT) + b'"}'
        r = await api.client.post("/auth/login", content=body,
                                  headers={"Content-Length": "20",
                                           "Content-Type": "application/json"})
        assert r.status_code == 413 and r.json()["error"] == "payload_too_large"

        async def stream():  # type: ignore[no-untyped-def]
            for i in range(0, len(body), 100):
                yield body[i:i + 100]
        r = await api.client.post("/auth/login", content=stream())  # chunked, no length
        assert r.status_code == 413 and r.json()["error"] == "payload_too_large"


async def test_with_httpx_over_http(server: str) -> None:
    async with httpx.AsyncClient(base_url=server) as http:
        r = await http.post("/auth/login", content=b"{" + b" " * (LIMIT + 10) + b"}")
        assert r.status_code == 413 and r.json()["error"] == "payload_too_large"
