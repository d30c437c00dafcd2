"""Requests that wait (long-polls, `?wait=`, a non-streamed /v1 answer) end as soon as their
client hangs up.

uvicorn counts a request against SERVER_MAX_CONNECTIONS until its handler returns, not until
its socket closes: a handler still waiting for an answer nobody will read keeps its slot. With
150 abandoned /v1 requests (each waiting up to OPENAI_MAX_WAIT_S) every new request, /health
and miners' long-polls included, was answered 503. The server tells the app of a hang-up as an
ASGI `http.disconnect` message; `watching(request)` listens for it while the handler waits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from starlette.requests import Request

from app.errors import AppError

T = TypeVar("T")


class ClientGone(AppError):
    """The client hung up while its request waited. Nobody reads this answer (nginx's 499)."""
    status, code = 499, "client_closed_request"


class Hangup:
    """One request's hang-up: `event` is set once its client has gone. Awaiting the object
    itself says whether it has (the `gone()` callable a long-poll checks between steps)."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    async def __call__(self) -> bool:
        return self.event.is_set()

    async def race(self, work: Awaitable[T]) -> T:
        """`work`'s result, unless the client hangs up first: then `work` is cancelled and
        ClientGone raised. Only for work that may be dropped at any await (a wait, a blocking
        pop), never for a write."""
        task = asyncio.ensure_future(work)
        gone = asyncio.ensure_future(self.event.wait())
        try:
            await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if task.cancelled():
            raise ClientGone("the client hung up")
        return task.result()


async def _listen(request: Request, hangup: Hangup) -> None:
    # Only once the body has been read (the endpoint's parsing did it): from then on the next
    # message the server sends is the disconnect. A GET's empty body message is skipped.
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            hangup.event.set()
            return


@contextlib.asynccontextmanager
async def watching(request: Request, listen: bool = True) -> AsyncIterator[Hangup | None]:
    """A Hangup for `request`, listened for while the block runs; None if not `listen` (a
    request that does not wait need not pay for a listener)."""
    if not listen:
        yield None
        return
    async with _listening(request) as hangup:
        yield hangup


@contextlib.asynccontextmanager
async def _listening(request: Request) -> AsyncIterator[Hangup]:
    hangup = Hangup()
    listener = asyncio.create_task(_listen(request, hangup), name="mia-hangup")
    try:
        yield hangup
    finally:
        listener.cancel()
        with contextlib.suppress(BaseException):
            await listener


async def unless_hung_up(request: Request, work: Awaitable[T]) -> T:
    """`work`'s result, or ClientGone (and `work` cancelled) once the client hangs up."""
    async with _listening(request) as hangup:
        return await hangup.race(work)
