"""uvicorn's httptools protocol with the writes of one event-loop turn sent as one.

uvicorn writes a response's status line and headers when the app sends `http.response.start`,
and the body when it sends `http.response.body`: two writes, so two send() calls and two TCP
segments for every small JSON answer, and a client that may wake twice. In a profile of
`python -m bench steady-single` the socket write inside uvicorn's send was 10.7 % of all
samples (three responses a job). Here the connection's transport is wrapped: a write is held
and sent, with whatever else was written in the same turn of the loop, once that turn ends
(loop.call_soon), or as soon as the response is complete; closing, EOF and a full buffer send
what is held first, in order.

Nothing else changes: a streamed answer's chunks go out as soon as the turn that wrote them
ends (they are written from different turns), flow control still comes from the real transport,
and every other call goes to it unchanged.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HOLD_AT_MOST = 1 << 16  # bytes held before they are sent at once, whatever the turn


class TurnWrites:
    """An asyncio transport whose writes within one loop turn leave as one."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []
        self._size = 0
        self.sent = 0  # writes made to the real transport (tests read it)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._held:
            self._loop.call_soon(self.flush)
        self._held.append(bytes(data))
        self._size += len(data)
        if self._size >= HOLD_AT_MOST:
            self.flush()

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        if not self._held:
            return
        data = self._held[0] if len(self._held) == 1 else b"".join(self._held)
        self._held.clear()
        self._size = 0
        if not self._transport.is_closing():
            self._transport.write(data)
            self.sent += 1

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held.clear()
        self._size = 0
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._size + self._transport.get_write_buffer_size()

    def __getattr__(self, name: str) -> Any:  # everything else: the real transport's
        return getattr(self._transport, name)


class TurnWritesHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a TurnWrites transport (uvicorn's `http=` class)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(TurnWrites(transport, self.loop))  # type: ignore[arg-type]

    def on_response_complete(self) -> None:
        # A whole response is written: it leaves now, not when the request's task next yields
        # (work after the response, such as a background task, would otherwise hold it back).
        if isinstance(self.transport, TurnWrites):
            self.transport.flush()
        super().on_response_complete()
