"""What happens after a chat job is answered (the lease path calls `completed` after the commit):

- a business's job is sampled for verification (VERIFY_SAMPLE_RATE, reproducible sampling
  only), copied as shadow work while wallets on probation wait for some, and may bring a canary
  (CANARY_RATE);
- a check job's answer is judged: a canary against its reference, a verification job against
  the other answers to the same job. Two answers from two wallets that agree pass both; if they
  disagree a third wallet answers, and the answer that disagrees with the other two fails its
  check (a failed check forfeits the credit of the job and may suspend the wallet).

Jobs whose sampling is not reproducible (temperature > 0) are not re-run: a sampled one is
re-scored instead, when a Rescorer runs: the claimed answer's prompt log-probabilities in one
prefill on the operator's model server (app/trust/rescore.py, on when RESCORE_URL is set; vLLM
offers them), or any other registered with `register_rescorer`. A re-score runs in a task of its
own after the commit, bounded in time and number, and records a `rescore` check (a failed one
forfeits the credit of the job, like the others). Without a Rescorer such jobs are checked by
canaries only.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from sqlalchemy import func, or_, select

from app.context import AppContext
from app.db import PgUnit
from app.models import Canary, ChatJob, JobStatus, TrustCheck, utcnow
from app.trust import checkjobs, reputation, rescore
from app.trust import pg as trust_pg
from app.trust.compare import Verdict, compare
from app.trust.lists import list_for

log = logging.getLogger(__name__)
SHADOWS_AT_ONCE = 2  # shadow copies made from one batch of answers
MAX_COPIES = 4  # check jobs per job at most: the first re-run and up to three tie-breaks
_random = random.SystemRandom()  # a miner must not predict which jobs are checked

# The second kind of check, for answers sampled at temperature > 0: (context, the job, its
# claimed answer, the model it claims to come from ('' unknown)) -> a Verdict (agree: the model
# finds the answer plausible), or None when it cannot say. RESCORE_URL's (rescore.py) is on in
# every context whose settings name one; others are registered with register_rescorer.
Rescorer = Callable[[AppContext, Any, str, str], Awaitable[Verdict | None]]
_rescorers: list[Rescorer] = []


def register_rescorer(rescorer: Rescorer) -> None:
    _rescorers.append(rescorer)


def rescorers(c: AppContext) -> list[Rescorer]:
    """The rescorers of this context: RESCORE_URL's when set, and the registered ones."""
    return ([rescore.http_rescorer] if c.settings.rescore_url else []) + _rescorers


def reproducible(options: str | None) -> bool:
    """Greedy decoding (no temperature, or 0) gives the same answer on another honest miner."""
    if not options:
        return True
    temperature = orjson.loads(options).get("temperature")
    return temperature is None or temperature == 0


def waiting_key(c: AppContext) -> str:
    return f"{c.settings.redis_prefix}:trust:waiting"  # a wallet on probation polls


def wallets_key(c: AppContext, list_name: str) -> str:
    return f"{c.settings.redis_prefix}:trust:wallets:{list_name}"


def declared_key(c: AppContext) -> str:
    return f"{c.settings.redis_prefix}:trust:declared"


async def completed(c: AppContext, job_ids: list[str], miner_id: int,
                    checks: list[str]) -> None:
    """Chat jobs `job_ids` were just answered by `miner_id` (their transaction committed);
    `checks`: those of them that are check jobs, as the completing statement read them
    (chat_jobs.purpose)."""
    try:
        await _completed(c, job_ids, miner_id, checks)
    except Exception:
        log.exception("trust: could not follow up %d answered job(s)", len(job_ids))


async def _completed(c: AppContext, job_ids: list[str], miner_id: int,
                     checks: list[str]) -> None:
    s = c.settings
    # whether a wallet on probation waits, remembered for a second
    waiting = await _probation_waits(c)
    business = [j for j in job_ids if j not in checks]
    for job_id in checks:
        await judge(c, job_id)
    follow = [j for j in business if _random.random() < s.verify_sample_rate]
    declared = None
    if waiting and business:  # shadow work for wallets on probation, while their list runs short
        declared = await _declared(c, miner_id)
        if await _shadow_wanted(c, declared):
            follow += [j for j in business if j not in follow][:SHADOWS_AT_ONCE]
    if follow:
        await _verify(c, follow, miner_id,
                      declared if declared is not None else await _declared(c, miner_id))
    canaries = sum(_random.random() < s.canary_rate for _ in business)
    for _ in range(canaries):
        await mix_canary(c)


_waits: dict[str, tuple[float, bool]] = {}  # prefix -> (until, a wallet on probation waits)


async def _probation_waits(c: AppContext) -> bool:
    prefix, now = c.settings.redis_prefix, time.monotonic()
    cached = _waits.get(prefix)
    if cached is not None and cached[0] > now:
        return cached[1]
    answer = bool(await c.redis.exists(waiting_key(c)))
    _waits[prefix] = (now + 1.0, answer)
    return answer


async def _declared(c: AppContext, miner_id: int) -> str:
    """The model the wallet declared on its polls ('' for none)."""
    found = await c.redis.hget(declared_key(c), str(miner_id))
    return found.decode() if isinstance(found, bytes) else (found or "")


async def _active_elsewhere(c: AppContext, list_name: str, miner_id: int) -> bool:
    """Another wallet polled for this list's jobs within the last minute."""
    since = time.time() - 60
    found = await c.redis.zrangebyscore(wallets_key(c, list_name), since, "+inf")
    return any(int(m) != miner_id for m in found)


async def _verify(c: AppContext, job_ids: list[str], miner_id: int, declared: str) -> None:
    now = utcnow()
    scored = rescorers(c)
    later: list[tuple[str, str]] = []  # (job id, claimed model) to re-score after the commit
    copies: list[tuple[str, str]] = []  # (job id, check model) to re-run by another wallet
    for job_id, model, options in await _sampled(c, job_ids):
        check_model = model or declared
        if not reproducible(options):
            if scored:
                later.append((job_id, check_model))
            continue
        if await _active_elsewhere(c, list_for(check_model), miner_id):
            copies.append((job_id, check_model))
        # (else nobody else could answer it: it would wait in vain)
    if copies and c.db.pg is not None:  # one statement a copy, on the driver (trust/pg.py)
        async with c.db.fast() as unit:
            assert isinstance(unit, PgUnit)
            for job_id, check_model in copies:
                await checkjobs.copy_on_driver(unit, c, job_id, check_model=check_model,
                                               exclude=miner_id, now=now)
    elif copies:
        async with c.db.transaction() as session:
            for job_id, check_model in copies:
                origin = await session.get(ChatJob, job_id)
                if origin is not None:
                    await checkjobs.copy(session, c, origin, check_model=check_model,
                                         exclude=miner_id, now=now)
    rescore.schedule(c, scored, later, miner_id)  # tasks of their own: never awaited here


async def _sampled(c: AppContext, job_ids: list[str]) -> list[tuple[str, str | None, str | None]]:
    """(id, model, options) of the sampled jobs that are a business's and answered."""
    if trust_pg.on_drivers(c):
        return [(r["id"], r["model"], r["options"]) for r in await trust_pg.sampled(c, job_ids)]
    async with c.db.reads() as session:
        rows = (await session.execute(select(ChatJob.id, ChatJob.model, ChatJob.options).where(
            ChatJob.id.in_(job_ids), ChatJob.purpose.is_(None),
            ChatJob.status == JobStatus.completed))).all()
    return [(r.id, r.model, r.options) for r in rows]


async def _shadow_wanted(c: AppContext, check_model: str) -> bool:
    """Shadow work for wallets on probation: wanted while their check list runs short."""
    depth = await c.redis.llen(c.queue.key("chat", list_for(check_model)))
    return int(depth) < 2


async def mix_canary(c: AppContext) -> str | None:
    """One canary job, from a random active canary, if some wallet could answer it."""
    async with c.db.transaction() as session:
        canary = (await session.execute(select(Canary).where(Canary.active.is_(True))
                                        .order_by(func.random()).limit(1))).scalar()
        if canary is None:
            return None
        if not await c.redis.zcount(wallets_key(c, list_for(canary.model)),
                                    time.time() - 60, "+inf"):
            return None
        return await checkjobs.canary_job(session, c, canary, utcnow())


async def judge(c: AppContext, job_id: str) -> None:
    """Judge a check job's answer (a verification job's once: _record's guard)."""
    job: Any
    if trust_pg.on_drivers(c):
        job = await trust_pg.job(c, job_id)
    else:
        async with c.db.reads() as session:
            job = await session.get(ChatJob, job_id)
    if job is None or job.purpose is None or job.status != JobStatus.completed:
        return
    if job.purpose == checkjobs.CANARY:
        await _judge_canary(c, job)
    else:
        lock = c.redis.lock(f"{c.settings.redis_prefix}:trust:group:{job.origin_job_id}",
                            timeout=30, blocking_timeout=30)
        async with lock:
            await _judge_verify(c, job)
    await c.redis.hdel(checkjobs.excluded_key(c), job_id)


async def _judge_canary(c: AppContext, job: Any) -> None:
    async with c.db.reads() as session:
        canary = await session.get(Canary, job.canary_id)
    if canary is None or job.miner_id is None:
        return
    verdict = await compare(c.settings, job.response or "", canary.reference)
    async with c.db.transaction() as session:
        await reputation.record(session, c, miner_id=job.miner_id, kind="canary",
                                passed=verdict.agree, job_id=job.id, now=utcnow(),
                                similarity=verdict.similarity, forfeit_tokens=job.output_tokens,
                                detail=None if verdict.agree else
                                f"canary {canary.id}: similarity {verdict.similarity}")


async def _judge_verify(c: AppContext, x: Any) -> None:
    """x: the check job (a ChatJob, or what app/trust/pg.py reads of one: the same fields)."""
    origin_id = x.origin_job_id
    group: Sequence[Any]
    if trust_pg.on_drivers(c):
        group, judged = await trust_pg.group(c, origin_id)
    else:
        async with c.db.reads() as session:
            group = (await session.execute(select(ChatJob).where(
                or_(ChatJob.id == origin_id, ChatJob.origin_job_id == origin_id))
                .order_by(ChatJob.completed_at))).scalars().all()
            judged = set((await session.execute(select(TrustCheck.job_id).where(
                TrustCheck.kind == "verify",
                TrustCheck.job_id.in_([g.id for g in group])))).scalars().all())
    origin = next((g for g in group if g.id == origin_id), None)
    copies = sum(1 for g in group if g.purpose is not None)
    answers: dict[int, Any] = {}  # the first answer of each wallet
    for g in group:
        if g.status == JobStatus.completed and g.miner_id is not None and g.response is not None:
            answers.setdefault(g.miner_id, g)
    mine = answers.get(x.miner_id) if x.miner_id is not None else None
    if mine is None or mine.id != x.id:
        # this wallet answered the job before: no check, but the job still needs another wallet
        if not judged and copies < MAX_COPIES and origin is not None:
            await _another_copy(c, origin.id, x)
        return
    others = [a for m, a in answers.items() if m != x.miner_id]
    if not others:
        return  # the first answer of a pair (bootstrap): the other one judges
    verdicts = {a.id: await compare(c.settings, x.response or "", a.response or "")
                for a in others}
    agree = [a for a in others if verdicts[a.id].agree]
    disagree = [a for a in others if not verdicts[a.id].agree]
    if not agree:  # two wallets disagree: a third one decides (a tie-break with no ally: none)
        if len(others) == 1 and copies < MAX_COPIES and origin is not None:
            await _another_copy(c, origin.id, x)
        return
    now = utcnow()
    checks = [(x, True, verdicts[agree[0].id]), *((a, True, verdicts[a.id]) for a in agree)]
    if len(agree) + 1 > len(disagree):  # the majority outvotes them
        checks += [(a, False, verdicts[a.id]) for a in disagree]
    deliver = origin is not None and origin.status == JobStatus.queued
    # the common case, all agree and nothing to deliver: on the driver
    on_driver = c.db.pg is not None and not deliver and all(p for _, p, _ in checks)
    async with (c.db.fast() if on_driver else c.db.transaction()) as unit:
        for job, passed, verdict in checks:
            await _record(unit, c, job, passed, verdict, judged)
        if deliver:
            await checkjobs.deliver(unit, c, origin_id, agree[0], now)


async def _another_copy(c: AppContext, origin_id: str, x: Any) -> None:
    """One more verification job for the origin, never for x's wallet."""
    async with c.db.transaction() as session:
        origin = await session.get(ChatJob, origin_id)
        if origin is not None:
            await checkjobs.copy(session, c, origin, check_model=x.check_model or "",
                                 exclude=x.miner_id, now=utcnow())


async def _record(unit: Any, c: AppContext, job: Any, passed: bool, verdict: Verdict,
                  judged: set[str | None]) -> None:
    """A verify check of job's wallet, once per job: on the driver (a PgUnit: passes only,
    reputation.record_passed) or through the ORM session."""
    if job.id in judged or job.miner_id is None:
        return
    judged.add(job.id)
    if isinstance(unit, PgUnit):
        assert passed and unit.conn is not None
        await reputation.record_passed(unit.conn, c, miner_id=job.miner_id, kind="verify",
                                       job_id=job.id, now=utcnow(),
                                       similarity=verdict.similarity)
        return
    await reputation.record(
        unit, c, miner_id=job.miner_id, kind="verify", passed=passed, job_id=job.id,
        now=utcnow(), similarity=verdict.similarity, forfeit_tokens=job.output_tokens,
        detail=None if passed else f"disagreed with other wallets (similarity "
                                   f"{verdict.similarity})")
