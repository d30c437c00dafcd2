"""Public answers derived from the chain, computed once per block in each process.

`/burns/summary` and `/burns/{id}/verify` make several RPC calls each; anyone may call them. Wrapped
in `per_block(records)`, an answer (a 200) is kept under its path, the chain's latest block (its
number and hash: a reorg that replaces the head at the same height is a new block) and a
fingerprint of the database records it is computed from (`records(request)`, a cheap read), and
served again while all three are the same: a flood of calls costs one eth_getBlockByNumber
("latest") per HEAD_POLL_S, the records' read, and one computation per block or record change.
An answer can be HEAD_POLL_S behind the chain, never behind the records.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from app.context import AppContext, ctx

HEAD_POLL_S = 1.0  # the latest block number is asked at most this often per process


class HeadUnavailable(Exception):
    """The node did not give the latest block number (within the last HEAD_POLL_S)."""

    def __init__(self, cause: str):
        super().__init__(cause)
        self.cause = cause  # the error's class name: public answers never show its text
MAX_ENTRIES = 1024  # distinct paths kept; beyond it the cache starts over


@dataclass(frozen=True)
class Head:
    """The chain's latest block: its number and hash (two heads at one height after a reorg
    are two blocks)."""
    number: int
    hash: bytes


@dataclass
class _Answer:
    version: tuple[Head, Hashable]  # (the head block, records)
    status: int
    body: bytes
    headers: list[tuple[str, str]]


class BlockCache:
    def __init__(self) -> None:
        self._answers: dict[str, _Answer] = {}
        self._head: tuple[float, Head | str] | None = None  # (asked at, block or error class)
        self._asking = asyncio.Lock()
        self.flights: dict[tuple[str, tuple[Head, Hashable]], asyncio.Lock] = {}
        self.computed = 0  # answers computed, not served from the cache (tests and metrics)

    async def head(self, c: AppContext) -> Head | None:
        """The latest block, at most HEAD_POLL_S old; None without a usable chain (the handler
        itself then answers the outage: 503 chain_unavailable)."""
        if c.chain is None:
            return None
        try:
            return await self.tip(c)
        except HeadUnavailable:
            return None

    async def latest(self, c: AppContext) -> int:
        """The latest block number, as tip() (for /health)."""
        return (await self.tip(c)).number

    async def tip(self, c: AppContext) -> Head:
        """The latest block, at most HEAD_POLL_S old, or HeadUnavailable: the node is asked at
        most once per HEAD_POLL_S, failures included, however many callers (/health and the
        per-block answers) ask at once."""
        if c.chain is None:
            raise HeadUnavailable("NoChain")
        found = self._fresh()
        if found is None:
            async with self._asking:  # a burst waits for the first caller's answer
                found = self._fresh()
                if found is None:
                    try:
                        block = await c.chain.w3.eth.get_block("latest")
                        found = Head(int(block["number"]), bytes(block["hash"]))
                    except Exception as exc:
                        found = type(exc).__name__
                    self._head = (time.monotonic(), found)
        if isinstance(found, str):
            raise HeadUnavailable(found)
        return found

    def _fresh(self) -> Head | str | None:
        if self._head is not None and time.monotonic() - self._head[0] < HEAD_POLL_S:
            return self._head[1]
        return None

    def get(self, key: str, version: tuple[Head, Hashable]) -> Response | None:
        answer = self._answers.get(key)
        if answer is None or answer.version != version:
            return None
        # A new Response each time: middleware (CORS) edits a response's headers in place.
        return Response(answer.body, status_code=answer.status,
                        headers=dict(answer.headers))

    def put(self, key: str, version: tuple[Head, Hashable], response: Response) -> None:
        if len(self._answers) >= MAX_ENTRIES:
            self._answers.clear()
        headers = [(k, v) for k, v in response.headers.items() if k != "content-length"]
        self._answers[key] = _Answer(version, response.status_code, bytes(response.body),
                                     headers)


def cache_of(request: Request) -> BlockCache:
    """The app's BlockCache (one per process)."""
    return _cache(request)


def _cache(request: Request) -> BlockCache:
    state = request.app.state
    if not hasattr(state, "block_cache"):
        state.block_cache = BlockCache()
    return state.block_cache  # type: ignore[no-any-return]


Handler = Callable[..., Awaitable[Response]]
Records = Callable[[Request], Awaitable[Hashable | None]]


def per_block(records: Records) -> Callable[[Handler], Handler]:
    """Serve a handler's 200 answers from the cache while neither the chain's head nor
    `records(request)` has changed. records() returns None when there is nothing to key on (a
    malformed id, say): the handler then answers as usual, uncached."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def cached(request: Request, **kwargs: Any) -> Response:
            cache = _cache(request)
            block = await cache.head(ctx(request))
            fingerprint = await records(request) if block is not None else None
            if block is None or fingerprint is None:
                cache.computed += 1
                return await handler(request, **kwargs)
            key = request.url.path + "?" + request.url.query
            version = (block, fingerprint)
            hit = cache.get(key, version)
            if hit is not None:
                return hit
            # One computation per (path, version) at a time: a burst arriving with a new block
            # waits for the first caller's answer instead of each asking the chain.
            flight = (key, version)
            lock = cache.flights.setdefault(flight, asyncio.Lock())
            try:
                async with lock:
                    hit = cache.get(key, version)
                    if hit is not None:
                        return hit
                    response = await handler(request, **kwargs)
                    cache.computed += 1
                    if response.status_code == 200:
                        cache.put(key, version, response)
                    return response
            finally:
                if not lock.locked() and cache.flights.get(flight) is lock:
                    del cache.flights[flight]  # waiters still hold it; newcomers find the answer
        return cached
    return wrap
