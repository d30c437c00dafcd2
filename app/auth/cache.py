"""Who a bearer secret belongs to, remembered for a few seconds in each process.

Without it every authenticated request reads its key or token row first, which was the most
frequent statement on the hot path. Entries are keyed by the kind of secret ("key" or "token")
and its SHA-256 as stored, so an API key can never be taken for a session token or the other way
round. A revocation clears the cache of every process at once through Redis pub/sub
(app/notify.py); AUTH_CACHE_TTL_S bounds what a lost message can cost. Expiry and scopes are
still checked on every request.

A secret in use never lapses on a request's path: one used past half its TTL is marked due, and
one background task per process re-reads every due secret in one statement per kind
(refresh_soon), so a busy key or token costs no read and no wait on any request, and a
revocation or suspension missed by pub/sub is still seen within AUTH_CACHE_TTL_S. A read that
began before a revocation cleared the cache is not remembered (SecretCache.generation).

Refusals are remembered too (REFUSAL_TTL_S), so a bogus secret sent again and again costs no
database read; and a client IP whose failed authentications ran out of its per-IP budget is
refused here, without a database read, until its Retry-After has passed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import apikeys, sessions
from app.errors import Unauthorized
from app.ttlcache import REFUSAL_TTL_S, SecretCache

if TYPE_CHECKING:
    from app.context import AppContext

log = logging.getLogger(__name__)

GATHER_SHARE = 0.1  # refresh() gathers due secrets for this share of the TTL before reading
EVENT_CHANNEL = "events:auth"  # under the Redis prefix; any message means "forget everything"
AuthCache = SecretCache  # the context's auth_cache (app/ttlcache.py)
__all__ = ["REFUSAL_TTL_S", "AuthCache", "announce_revocation", "channel", "forget_everywhere",
           "refresh_soon"]
# kind -> reads the answers for several secret hashes in one statement
READERS: dict[str, Callable[[AsyncSession, list[str]], Awaitable[dict[str, Any]]]] = {
    "key": apikeys.authenticate_many, "token": sessions.authenticate_many}


def channel(redis_prefix: str) -> str:
    return f"{redis_prefix}:{EVENT_CHANNEL}"


async def forget_everywhere(redis: Any, redis_prefix: str) -> bool:
    """Tell every process to drop what it remembers (after a revocation). False if Redis could
    not be told: the other processes then forget within their TTL."""
    try:
        await redis.publish(channel(redis_prefix), "revoked")
        return True
    except Exception:
        return False


async def announce_revocation(c: AppContext) -> None:
    """After a key or token is revoked (committed): this process forgets at once, the others
    when Redis tells them, or within AUTH_CACHE_TTL_S if it cannot."""
    c.auth_cache.clear()
    if not await forget_everywhere(c.redis, c.settings.redis_prefix):
        log.warning("could not announce a revocation over Redis; other processes honour it "
                    "within AUTH_CACHE_TTL_S")


def refresh_soon(c: AppContext) -> None:
    """Start the background re-read of the secrets due, unless one is running (no wait)."""
    cache = c.auth_cache
    if cache.due and (cache.refreshing is None or cache.refreshing.done()):
        cache.refreshing = asyncio.get_running_loop().create_task(refresh(c),
                                                                   name="mia-auth-refresh")


async def refresh(c: AppContext) -> None:
    """Re-read the due secrets, one statement per kind; remember the answers (or refusals)
    unless a revocation cleared the cache meanwhile. A failure is left to the TTL: an entry
    that lapses is read by the next request that brings it, as on a first use."""
    cache = c.auth_cache
    # Wait a tenth of the TTL first, so the secrets falling due meanwhile are read in the same
    # statement: a secret is due at half its TTL, so this still leaves it 40 % to spare. Without
    # it, busy keys and tokens, each due at its own moment, cost a statement apiece (a profile
    # of `python -m bench steady` found 2.4 % of the API's CPU in these re-reads).
    await asyncio.sleep(cache.ttl_s * GATHER_SHARE)
    due, cache.due = cache.due, set()
    generation = cache.generation
    by_kind: dict[str, list[str]] = {}
    for kind, secret_hash in due:
        by_kind.setdefault(kind, []).append(secret_hash)
    for kind, hashes in by_kind.items():
        try:
            async with c.db.reads() as session:
                found = await READERS[kind](session, hashes)
        except Exception as exc:
            log.warning("re-reading %d remembered secrets failed (%s); they lapse at their TTL",
                        len(hashes), type(exc).__name__)
            continue
        if cache.generation != generation:
            return  # a revocation came while reading: the next requests read afresh
        for secret_hash, answer in found.items():
            if isinstance(answer, Unauthorized):
                cache.forget(kind, secret_hash)
                cache.refuse(kind, secret_hash, answer.code, answer.detail)
            else:
                cache.put(kind, secret_hash, answer)
