"""What a wallet may lease, and from which lists, as the lease path asks on each poll
(JobKind.route): `route(c, miner_id, model)` gives the poll a Route whose pop() replaces the
queue's.

- A trusted wallet (graduated, named in TRUSTED_MINERS, or any wallet when PROBATION_JOBS=0)
  pops the business's lists first, then the check lists (verification, shadow and canary jobs).
- A wallet on probation pops the check lists only: it never holds a business's job, so no
  answer of it can reach a business (nor can its streamed chunks). A graduated wallet that
  fails a work check is back on probation at once (app/trust/reputation.py): its leases are
  taken back, every process forgets its standing, and a poll that was already waiting puts the
  business jobs it pops back rather than lease them.
- Bootstrap: while no trusted wallet has polled within TRUSTED_SEEN_S (a fresh network where
  every wallet is new), a wallet on probation pops the business's lists too, but a business job
  it pops is not leased to it: it gets a copy (a shadow) of it, and a second copy waits for
  another wallet. When two wallets' answers agree, the business's job is answered with one of
  them (app/trust/verify.py); until then the business waits.
- Higher scores lease first: a wallet scoring below 0.5 starts its long-poll up to
  LEASE_PRIORITY_DELAY_S later, so when several wallets wait for the next job the better ones
  are already blocked on the list (Redis hands a pushed job to the longest-blocked client).
  No extra round trip: the score comes with the standing, cached per process.

A check job is never leased to the wallet whose answer it checks (app/trust/checkjobs.py
NEVER); a wallet that pops one puts it back and waits on its other lists.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from sqlalchemy import select

from app.context import AppContext
from app.models import ChatJob, JobStatus, utcnow
from app.queue import PollSlot
from app.trust import checkjobs
from app.trust.lists import TRUST, list_for
from app.trust.standing import standing
from app.trust.verify import declared_key, waiting_key, wallets_key

log = logging.getLogger(__name__)
TRUSTED_SEEN_S = 60  # a trusted wallet that polled this recently ends bootstrap
ANNOUNCE_EVERY_S = 5.0  # each process writes a wallet's presence at most this often
LOOK_PAST = 8  # check jobs a wallet looks past for one it may answer (not its own answers')
_announced: dict[tuple[str, int], float] = {}
_bootstrap: dict[str, tuple[float, bool]] = {}  # prefix -> (until, bootstrap?) per process


def _trusted_key(c: AppContext) -> str:
    return f"{c.settings.redis_prefix}:trust:trusted_seen"


class Route:
    def __init__(self, c: AppContext, miner_id: int, model: str | None, probation: bool,
                 bootstrap: bool, delay_s: float, routes: Sequence[str] = ()) -> None:
        q = c.queue
        self.c, self.miner_id, self.model = c, miner_id, model
        self.probation, self.delay_s = probation, delay_s
        # the capability lists first (jobs asking for tools or structured output, which only
        # wallets declaring them may take: app/leases/served.py routes), then the model's own
        self.business = [q.key("chat", r) for r in routes] + (
            [q.key("chat", model), q.key("chat")] if model else [q.key("chat")])
        # check copies of capability jobs wait on their own check lists (list_for(route)),
        # so only wallets declaring the capability take them
        self.checks = [q.key("chat", list_for(r)) for r in routes] + (
            [q.key("chat", list_for(model)), q.key("chat", TRUST)] if model
            else [q.key("chat", TRUST)])
        if not probation:
            self.keys = self.business + self.checks
        else:
            self.keys = self.checks + (self.business if bootstrap else [])

    async def pop(self, most: int, block: float, slot: PollSlot | None = None) -> list[str]:
        if self.delay_s and block > self.delay_s:
            if slot is not None:  # it waits from here on, so it holds a long-poll slot
                await self.c.queue.hold(slot)
            await asyncio.sleep(self.delay_s)
            block -= self.delay_s
            self.delay_s = 0
        started = time.monotonic()
        key, ids = await self.c.queue.pop_from(self.keys, most, block, slot)
        if not ids:
            return []
        if key in self.checks:
            ids = await self._not_mine(key, ids, most)
            if not ids:  # only checks of its own answers came: wait on the other lists
                rest = [k for k in self.keys if k not in self.checks]
                left = max(0.0, block - (time.monotonic() - started))
                if not rest:
                    await asyncio.sleep(min(left, 1.0))
                    return []
                key, ids = await self.c.queue.pop_from(rest, most, left, slot)
        if ids and key in self.business and self.probation:
            ids = await self._shadows(key, ids)
        elif ids and key in self.business and (await standing(self.c, self.miner_id)).probation:
            # sent back to probation while this poll waited (a failed check; the standing is
            # forgotten in every process at once, so this is a cache hit unless it changed):
            # the business's jobs go back to the front for another wallet
            await self.c.redis.rpush(key, *reversed(ids))
            return []
        return ids

    async def _not_mine(self, key: str, ids: list[str], most: int) -> list[str]:
        """Up to `most` of the popped check jobs that this wallet may answer, looking a few
        further down the list past those it may not; the rest go back to the front in order."""
        more = await self.c.redis.rpop(key, LOOK_PAST) or []
        ids = ids + [m.decode() if isinstance(m, bytes) else m for m in more]
        marks = await self.c.redis.hmget(checkjobs.excluded_key(self.c), ids)
        allowed = [i for i, m in zip(ids, marks, strict=True)
                   if m is None or int(m) != self.miner_id][:most]
        back = [i for i in ids if i not in allowed]
        if back:
            await self.c.redis.rpush(key, *reversed(back))
        return allowed

    async def _shadows(self, key: str, ids: list[str]) -> list[str]:
        """Bootstrap: business jobs popped by a wallet on probation become two copies each, one
        for this wallet now, one for another; the business's job waits for their agreement."""
        c, now = self.c, utcnow()
        out: list[str] = []
        async with c.db.transaction() as session:
            jobs = (await session.execute(select(ChatJob).where(
                ChatJob.id.in_(ids), ChatJob.status == JobStatus.queued,
                ChatJob.purpose.is_(None)))).scalars().all()
            copied = set((await session.execute(select(ChatJob.origin_job_id).where(
                ChatJob.origin_job_id.in_(ids), ChatJob.status != JobStatus.failed)))
                .scalars().all())
            for job in jobs:
                if job.id in copied:
                    continue  # its copies are out already (the reconciler pushed it again)
                check_model = job.model or self.model or ""
                out.append(await checkjobs.copy(session, c, job, check_model=check_model,
                                                exclude=None, now=now, push=False))
                await checkjobs.copy(session, c, job, check_model=check_model,
                                     exclude=self.miner_id, now=now)
        return out


async def _is_bootstrap(c: AppContext) -> bool:
    prefix = c.settings.redis_prefix
    cached = _bootstrap.get(prefix)
    now = time.monotonic()
    if cached is not None and cached[0] > now:
        return cached[1]
    answer = not await c.redis.exists(_trusted_key(c))
    _bootstrap[prefix] = (now + 2.0, answer)
    return answer


async def route(c: AppContext, miner_id: int, model: str | None,
                routes: Sequence[str] = ()) -> Route:
    """The lists this wallet's poll pops, and how (the lease path's one question to trust)."""
    s = c.settings
    mine = await standing(c, miner_id)
    bootstrap = mine.probation and await _is_bootstrap(c)
    await _announce(c, miner_id, model, mine.probation)
    delay = (s.lease_priority_delay_s * (0.5 - mine.score) * 2 if mine.score < 0.5 else 0.0)
    return Route(c, miner_id, model, mine.probation, bootstrap, delay, routes)


async def _announce(c: AppContext, miner_id: int, model: str | None, probation: bool) -> None:
    """Who polls for what, for the checks' bookkeeping: which wallets could answer a check
    list, the model each declared, whether a trusted wallet or one on probation is around."""
    key = (c.settings.redis_prefix, miner_id)
    mono = time.monotonic()
    if mono - _announced.get(key, -ANNOUNCE_EVERY_S) < ANNOUNCE_EVERY_S:
        return
    _announced[key] = mono
    now = time.time()
    try:
        await _write_presence(c, miner_id, model, probation, now)
    except Exception as exc:  # bookkeeping for checks: never a reason to refuse a poll
        log.warning("trust: could not record a wallet's poll (%s)", type(exc).__name__)


async def _write_presence(c: AppContext, miner_id: int, model: str | None, probation: bool,
                          now: float) -> None:
    async with c.redis.pipeline(transaction=False) as pipe:
        pipe.zadd(wallets_key(c, list_for(model)), {str(miner_id): now})
        if model:  # it also answers the common check list
            pipe.zadd(wallets_key(c, TRUST), {str(miner_id): now})
        pipe.hset(declared_key(c), str(miner_id), model or "")
        if probation:
            pipe.set(waiting_key(c), "1", ex=30)
        else:
            pipe.set(_trusted_key(c), "1", ex=TRUSTED_SEEN_S)
        await pipe.execute()
