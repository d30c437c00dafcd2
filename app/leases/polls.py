"""MINER_MAX_POLLS: how many long-polls one wallet keeps open at once, across API processes.

A counter per wallet in Redis (one key, no hash tag: it lives on any cluster node), raised on
entry and lowered when the poll ends. Each raise also sets the key's expiry, so the count a
crashed process left behind vanishes once the wallet has opened no poll for POLL_KEY_TTL_S past
the longest wait. Each change is one script, so a count never loses its expiry.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from app import observability
from app.context import AppContext
from app.errors import RateLimited

log = logging.getLogger(__name__)
RETRY_AFTER_S = 1  # a slot frees whenever one of the wallet's polls answers
MARGIN_S = 30  # beyond MINER_MAX_WAIT_S: a poll also spends time on the database

_ENTER = """
local n = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[1])
return n
"""
# Never below zero, never a key without an expiry: a poll that outlived its key (a lost
# expiry race) must not leave a -1 that lets one more poll in forever.
_LEAVE = """
local n = redis.call('DECR', KEYS[1])
if n <= 0 then redis.call('DEL', KEYS[1]) end
return n
"""


def key(prefix: str, address: str) -> str:
    return f"{prefix}:polls:{address.lower()}"


@contextlib.asynccontextmanager
async def open_poll(c: AppContext, address: str, wait_s: float) -> AsyncIterator[None]:
    """Holds one of the wallet's MINER_MAX_POLLS long-poll slots while the body runs; 429 with
    Retry-After if all are taken. A request that does not wait (wait_s == 0) takes none; a
    limit of 0 disables it."""
    cap = c.settings.miner_max_polls
    if wait_s <= 0 or cap <= 0:
        yield
        return
    name = key(c.settings.redis_prefix, address)
    count = int(await c.redis.eval(_ENTER, 1, name, c.settings.miner_max_wait_s + MARGIN_S))
    try:
        if count > cap:
            raise RateLimited(f"this wallet already holds {cap} open long-polls "
                              "(MINER_MAX_POLLS); wait for one to answer",
                              retry_after_s=RETRY_AFTER_S, code="too_many_polls")
        with observability.long_poll_open():  # mia_long_polls_open
            yield
    finally:
        try:
            await c.redis.eval(_LEAVE, 1, name)
        except Exception as exc:  # the key's expiry clears it instead
            log.warning("could not release a long-poll slot (%s)", type(exc).__name__)
