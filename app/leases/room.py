"""A wallet's room under MINER_MAX_LEASES before a long-poll pops anything, without a read when
this process has just seen it.

A lease request counts the wallet's leases twice: before the pop (protocol.room: a read, so that
no id is popped in vain and a batch is trimmed to what fits) and again in the lease statement
itself, under the wallet's leasing lock (app/leases/endpoints.py), which is what keeps the cap
exact. The first count is only a courtesy to the queue. An honest miner polls again right after
each answer with one lease or none; for it the read said the same thing every time, and cost a
statement per lease (2.5 % of the API's samples under `steady-single`, more on PostgreSQL).

So the lease statement's own count is remembered, per database and wallet, and the read is
skipped while that count is younger than MEMO_S and leaves room for the request twice over
(held + most <= cap / 2). A wallet that leased elsewhere meanwhile (another process) may have
less room than remembered: then its request pops ids the statement refuses, and they go back to
the front of the queue at once (the cap itself never moves). A wallet near its cap, or one not
seen lately, is read as before.
"""

from __future__ import annotations

import time
import weakref

from app.context import AppContext
from app.db import Database
from app.leases import protocol

MEMO_S = 30.0
MEMO_MOST = 10_000  # wallets remembered per database; past it, the stale ones are dropped

_SEEN: weakref.WeakKeyDictionary[Database, dict[int, tuple[int, float]]] = \
    weakref.WeakKeyDictionary()


def seen(c: AppContext, miner_id: int, held: int) -> None:
    """The lease statement counted `held` leases of the wallet, its new ones included."""
    memo = _SEEN.get(c.db)
    if memo is None:
        memo = _SEEN[c.db] = {}
    now = time.monotonic()
    if len(memo) >= MEMO_MOST:
        for key in [k for k, (_, at) in memo.items() if now - at >= MEMO_S]:
            del memo[key]
        if len(memo) >= MEMO_MOST:
            memo.clear()
    memo[miner_id] = (held, now)


async def trimmed(c: AppContext, miner_id: int, most: int) -> int:
    """`most`, or less if the wallet has less room (403 if suspended, 429 if full: from the read,
    when it happens)."""
    known = _SEEN.get(c.db, {}).get(miner_id)
    if known is not None:
        held, at = known
        if time.monotonic() - at < MEMO_S and held + most <= protocol.cap_of(c) // 2:
            return most
    return min(most, await protocol.room(c, miner_id))
