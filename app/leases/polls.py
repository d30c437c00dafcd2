"""MINER_MAX_POLLS: how many long-polls one wallet keeps open at once, across API processes.

A counter per wallet in Redis, raised when a poll starts to wait and lowered when it ends. Each
raise also sets the key's expiry, so the count a crashed process left behind vanishes once the
wallet has opened no poll for POLL_KEY_TTL_S past the longest wait. Each change is one script,
so a count never loses its expiry.

A poll takes its slot only when it has to wait: the pop's first round trip (app/queue.py TAKE)
takes what is waiting, or, finding nothing, the slot, in one script. A poll that finds jobs at
once holds no slot (it does not wait), and spends one round trip where it spent three (take the
slot, pop, give the slot back). The counter shares the queue's hash tag, so that script stays
in one Redis Cluster slot.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from app import observability
from app.context import AppContext
from app.errors import RateLimited
from app.queue import PollSlot, PollsTaken, tagged

log = logging.getLogger(__name__)
RETRY_AFTER_S = 1  # a slot frees whenever one of the wallet's polls answers
MARGIN_S = 30  # beyond MINER_MAX_WAIT_S: a poll also spends time on the database

# Never below zero, never a key without an expiry: a poll that outlived its key (a lost
# expiry race) must not leave a -1 that lets one more poll in forever.
_LEAVE = """
local n = redis.call('DECR', KEYS[1])
if n <= 0 then redis.call('DEL', KEYS[1]) end
return n
"""


def key(prefix: str, address: str) -> str:
    return tagged(prefix, f"polls:{address.lower()}")


@contextlib.asynccontextmanager
async def open_poll(c: AppContext, address: str, wait_s: float
                    ) -> AsyncIterator[PollSlot | None]:
    """One of the wallet's MINER_MAX_POLLS long-poll slots for the body, taken by its pop if it
    has to wait (pass the slot to the pop); 429 with Retry-After if all are taken. A request that
    does not wait (wait_s == 0) gets none; a limit of 0 disables it."""
    cap = c.settings.miner_max_polls
    if wait_s <= 0 or cap <= 0:
        yield None
        return
    slot = PollSlot(key(c.settings.redis_prefix, address), cap,
                    c.settings.miner_max_wait_s + MARGIN_S)
    try:
        with observability.long_poll_open():  # mia_long_polls_open
            yield slot
    except PollsTaken:
        raise RateLimited(f"this wallet already holds {cap} open long-polls "
                          "(MINER_MAX_POLLS); wait for one to answer",
                          retry_after_s=RETRY_AFTER_S, code="too_many_polls") from None
    finally:
        await slot.settled()
        if slot.held:
            try:
                await c.redis.eval(_LEAVE, 1, slot.key)
            except Exception as exc:  # the key's expiry clears it instead
                log.warning("could not release a long-poll slot (%s)", type(exc).__name__)
