"""The steps every job kind shares. A kind plugs in through JobKind; the functions here take a
session from the route that owns the transaction, or talk to the queue, never both."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import contract_wallets
from app.auth import wallet as wallet_sig
from app.auth.principals import Wallet
from app.auth.roles import suspended_error
from app.config import Settings
from app.context import AppContext
from app.db import LiteUnit, PgUnit, Unit, after_commit
from app.errors import AppError, Conflict, NotFound, RateLimited, Unauthorized
from app.leases import rules
from app.lite import read_time
from app.sqltext import as_list, sqlite
from app.models import JobStatus, Miner, read_utc, utcnow
from app.relay import Budget
from app.tokens import count as count_tokens

log = logging.getLogger(__name__)
NOT_CURRENT = "this lease is not current (expired, reassigned or not yours)"


@dataclass(frozen=True)
class Completion:
    """One result a miner posted, its signature checked."""
    key: Any  # the job's primary key
    job_id: str  # as the miner spelled it (and signed it)
    lease_id: str
    miner_id: int
    output: str
    tokens: int  # the output's tokens, counted by the server (app/tokens.py): what is credited
    reported_tokens: int | None  # the miner's own count: stored for comparison, never credited
    signature: str  # canonical: 0x + lower-case hex
    now: datetime
    finish_reason: str | None = None  # the model server's, signed with the output (chat only)


class NeedsTransaction(Exception):
    """A fast path met a job it cannot finish on its own, and wrote nothing: the caller runs the
    kind's SQLAlchemy steps instead (a chat job holding money, completed on SQLite after chat
    stopped being priced: its charge goes with its result, in one transaction)."""


@dataclass(frozen=True)
class FastPath:
    """A kind's hot path on the drivers themselves (Database.fast): on PostgreSQL one
    statement each, on SQLite one transaction each (lite_*); the SQLAlchemy steps of JobKind
    serve everything else."""
    # (connection, context, keys popped, miner id, now, cap) -> what was leased of those still
    # queued, within the cap counted in the same statement under the wallet's leasing lock
    # (mia_leases_held, rules.LEASING_LOCK; chat/pg.Leased: jobs, held, suspended, over)
    lease: Callable[[Any, AppContext, list[Any], int, datetime, int], Awaitable[Any]]
    # (connection, completions of one miner) -> per item (answer, tokens) or None; credits
    # the miner in the same statement
    complete: Callable[[Any, list[Completion]], Awaitable[list[tuple[Any, int] | None]]]
    # the same two steps on SQLite's own driver (app/lite.py; Database.lite), the first
    # argument a Lite instead of a connection
    lite_lease: Callable[[Any, AppContext, list[Any], int, datetime],
                         Awaitable[list[Any]]] | None = None
    lite_complete: Callable[[Any, list[Completion]],
                            Awaitable[list[tuple[Any, int] | None]]] | None = None
    # whether a batch completion needs a transaction (it runs more than its one statement:
    # charging held money); without one it is one statement, no BEGIN/COMMIT. SQLite's own
    # driver (lite_complete) does not charge: such batches take the SQLAlchemy path there.
    transactional: Callable[[AppContext], bool] = lambda c: False


@dataclass(frozen=True)
class JobKind:
    """A kind of leased job. The lease rules are the same for all; these are what differ."""
    name: str  # the queue's kind: "chat" or "idle"
    model: Any  # an ORM model with the columns app/leases/rules.py uses
    parse_id: Callable[[str], Any | None]  # URL/queue text -> primary key, None if malformed
    output_column: str  # where a miner's output is stored
    # what a lease hands out: one assignment per lease, in the same session
    hand_out: Callable[[AsyncSession, AppContext, list[rules.Lease]], Awaitable[list[Any]]]
    # what a result writes if its lease is current: (the single-result answer, tokens to
    # credit the miner), or None when the lease was not current
    complete: Callable[[AsyncSession, AppContext, Completion],
                       Awaitable[tuple[Any, int] | None]]
    # the single-result answer for a result repeated after it was accepted
    answer: Callable[[Any], Any]
    lease_columns: tuple[Any, ...] = ()  # read by the leasing UPDATE itself, into Lease.fields
    # true while leases of this kind should not be handed out (idle yields to waiting chat)
    yields: Callable[[AppContext], Awaitable[bool]] | None = None
    # a finished job whose result came from elsewhere (RunPod): the miner's lease is history
    finished_elsewhere: Callable[[Any], bool] = lambda job: False
    fast: FastPath | None = None  # used on PostgreSQL
    # a kind whose jobs may name a model (app/queue.py keeps a list per model): the models of
    # some of its jobs, by id, for putting them back on the right list; None: never routed
    models_of: Callable[[AppContext, list[str]], Awaitable[dict[str, str]]] | None = None
    # a kind whose miners may stream (POST .../chunk): the columns a chunk post reads beside
    # the lease's, and from them whether the job is streamed (None: it is not, 409) and what
    # the client capped the answer at
    stream_columns: tuple[Any, ...] = ()
    streamed: Callable[[tuple[Any, ...]], StreamAsk | None] | None = None
    # trust (app/trust): which lists a wallet's poll pops, as an object whose pop(most, block, slot)
    # replaces the queue's (None: the kind's own lists), and what follows an answer, after
    # its commit: (context, the job ids answered, the miner, those of them whose complete
    # marked them: a third item True in its (answer, tokens, mark); chat: trust's check jobs)
    route: Callable[[AppContext, int, str | None, Sequence[str]], Awaitable[Any]] | None = None
    completed: Callable[[AppContext, list[str], int, list[str]], Awaitable[None]] | None = None

    # run once before a batch's results are completed one by one, with their keys (idle: lock
    # the businesses that will be charged, in id order, so two batches never deadlock)
    before_complete: Callable[[AsyncSession, list[Any]], Awaitable[None]] | None = None

    # checks signed results against what their jobs asked for (chat: tool calls and structured
    # output, app/chat/options.py vet): per result, the error that refuses it, or None
    vet: Callable[[AppContext, list[Completion], dict[Any, Any] | None],
                  Awaitable[list[AppError | None]]] | None = None
    # what vet() needs of a job, as an SQL expression (PostgreSQL and SQLite alike; NULL when
    # the job asks nothing to check), read with the lease check (current_leases): no read of
    # its own on the drivers' hot path
    vet_column: str | None = None
    # what a completion's wake-up tells the job's waiters (app/notify.py ANSWERS), so they need
    # not read the job back: (the completion, complete()'s (answer, tokens)) -> a JSON-able
    # answer, or None to send only the id
    wake_answer: Callable[[Completion, Any], Any | None] | None = None


@dataclass(frozen=True)
class StreamAsk:
    """A streamed job, as its kind reads it: what bounds the lease's chunks (stream_budget)."""
    max_tokens: int | None  # the most tokens the client asked for, if it said


def stream_budget(settings: Settings, ask: StreamAsk, assigned_at: datetime) -> Budget:
    """What one lease of a streamed job may stream: STREAM_MAX_CHUNKS chunks and
    STREAM_MAX_BYTES bytes, less when the job names max_tokens (a chunk holds at least one
    token; a token is at most STREAM_BYTES_PER_TOKEN bytes), until the lease's hard end."""
    chunks, size = settings.stream_max_chunks, settings.stream_max_bytes
    if ask.max_tokens is not None:
        chunks = min(chunks, ask.max_tokens + 16)
        size = min(size, ask.max_tokens * settings.stream_bytes_per_token)
    ends = assigned_at + timedelta(seconds=settings.lease_max_total_s)
    return Budget(max_chunks=chunks, max_bytes=size, ends_at=ends.timestamp())


# Every kind a miner can lease, by name: filled as each kind's miner endpoints are mounted
# (endpoints.add_miner_endpoints). The per-wallet lease cap and suspension span all of them.
LEASABLE: dict[str, JobKind] = {}
LEASES_RETRY_AFTER_S = 1  # a lease frees as soon as the miner posts a result
MAX_ROOM = 1 << 30  # MINER_MAX_LEASES=0: no cap


def parse_ids(kind: JobKind, ids: Sequence[str]) -> list[Any]:
    """Primary keys of popped ids; malformed ones are logged and dropped."""
    keys = []
    for text in ids:
        key = kind.parse_id(text)
        if key is None:
            log.warning("dropped a malformed %s id from the queue: %r", kind.name, text[:80])
        else:
            keys.append(key)
    return keys


def miner_id_of(who: Wallet) -> int:
    if who.miner_id is None:
        raise Unauthorized("this session is not a registered miner's; POST /register_miner",
                           code="not_a_miner")
    return who.miner_id


# ------------------------------------------------------------------ leasing


def cap_of(c: AppContext) -> int:
    """MINER_MAX_LEASES as a number to compare with (0: no cap)."""
    return c.settings.miner_max_leases if c.settings.miner_max_leases > 0 else MAX_ROOM


def leasable_tables() -> tuple[str, ...]:
    """The tables whose assigned jobs count against a wallet's cap."""
    return tuple(k.model.__tablename__ for k in LEASABLE.values())


def too_many(held: int, cap: int) -> RateLimited:
    return RateLimited(f"this wallet holds {held} leases, the most it may (MINER_MAX_LEASES="
                       f"{cap}); post results or release leases first",
                       retry_after_s=LEASES_RETRY_AFTER_S, code="too_many_leases")


async def room(c: AppContext, miner_id: int) -> int:
    """How many more leases the miner may take under MINER_MAX_LEASES (chat and idle together,
    counted in the database, so across API processes): 429 when none, 403 when suspended."""
    kinds = list(LEASABLE.values())
    if c.db.pg is not None:
        async with c.db.fast_reads() as conn:
            row = await conn.fetchrow(rules.holding_sql([k.model.__tablename__ for k in kinds]),
                                      miner_id)
        held, suspended = (int(row["held"]), bool(row["suspended"])) if row else (0, False)
    elif c.db.lite is not None:  # the same statement on SQLite's own driver
        row = await c.db.lite.fetchrow(sqlite(rules.holding_sql([k.model.__tablename__
                                                                  for k in kinds])), miner_id)
        held, suspended = (int(row["held"]), bool(row["suspended"])) if row else (0, False)
    else:
        async with c.db.reads() as session:
            held, suspended = await rules.holding(session, [k.model for k in kinds], miner_id)
    if suspended:
        raise suspended_error()
    cap = c.settings.miner_max_leases
    if cap <= 0:
        return MAX_ROOM
    if held >= cap:
        raise too_many(held, cap)
    return cap - held


async def take_back_all(session: AsyncSession, c: AppContext, miner_id: int) -> int:
    """Every lease of the miner, of every kind, back to the queue now (a suspension); the ids
    go to the front after commit. How many were taken back."""
    taken = 0
    for kind in LEASABLE.values():
        ids = await rules.take_back(session, kind.model, miner_id)
        if ids:
            after_commit(session, lambda k=kind.name, i=ids: requeue(c, k, i),
                         what=f"requeueing {len(ids)} {kind.name} job(s) of a suspended miner")
        taken += len(ids)
    return taken


async def acquire(session: AsyncSession, ctx: AppContext, kind: JobKind, keys: list[Any],
                  miner_id: int, now: datetime) -> list[Any]:
    """Lease what is still queued among the popped keys and hand it out; stale ones (taken,
    claimed, finished or gone) are dropped."""
    leases = await rules.acquire(session, kind.model, keys, miner_id,
                                 ctx.settings.lease_seconds, now, kind.lease_columns,
                                 cooldown_s=ctx.settings.returned_job_cooldown_s,
                                 max_attempts=ctx.settings.max_attempts)
    return await kind.hand_out(session, ctx, leases) if leases else []


async def returned_by(ctx: AppContext, kind: JobKind, keys: list[Any], miner_id: int) -> list[str]:
    """Which of these popped, unleased jobs the miner may not lease now, having returned them
    (rules.not_returned_by)."""
    if not keys:
        return []
    since = utcnow() - timedelta(seconds=ctx.settings.returned_job_cooldown_s)
    async with ctx.db.reads() as session:
        return await rules.returned_by_miner(session, kind.model, keys, miner_id, since,
                                             ctx.settings.max_attempts)


# ------------------------------------------------------------------ results


@dataclass
class Holders:
    """What current_leases() read: the (key, lease id) pairs the miner holds a current lease
    under, the keys of the jobs that exist, and the kind's vet_column of each job where it is
    not NULL (None where it was not read: vet() reads it itself)."""
    current: set[tuple[Any, str]]
    known: set[Any]
    vetting: dict[Any, Any] | None = None


async def current_leases(ctx: AppContext, kind: JobKind, keys: Sequence[Any], miner_id: int,
                         now: datetime) -> Holders:
    """Of these jobs, who holds them (Holders); one read. What a posted result is checked
    against first, so that a result for a lease that is not current costs no signature check
    (no RPC for a contract wallet) and no tokenizing."""
    keys = list(dict.fromkeys(keys))
    if not keys:
        return Holders(set(), set(), {})
    vetting: dict[Any, Any] | None = None
    if kind.fast is not None and (ctx.db.pg is not None or ctx.db.lite is not None):
        sql = rules.holders_sql(kind.model.__tablename__, kind.vet_column)
        if ctx.db.pg is not None:
            async with ctx.db.fast_reads() as conn:
                rows = await conn.fetch(sql, keys)
            read = read_utc
        else:
            assert ctx.db.lite is not None
            rows = await ctx.db.lite.fetch(sqlite(sql), as_list(keys))
            read = read_time
        held = {r["id"]: (r["status"], r["lease_id"], r["miner_id"],
                          read(r["lease_expires_at"])) for r in rows}
        if kind.vet_column:
            vetting = {r["id"]: r["extra"] for r in rows if r["extra"] is not None}
    else:
        async with ctx.db.reads() as session:
            held = await rules.holders(session, kind.model, keys)
    current = {(key, lease_id) for key, (status, lease_id, holder, expires) in held.items()
               if status == JobStatus.assigned and holder == miner_id and expires is not None
               and expires > now}
    return Holders(current, set(held), vetting)


async def check_signature(ctx: AppContext, who: Wallet, job_id: str, output: str,
                          signature: str, finish_reason: str | None = None) -> str:
    """The canonical signature (wallet.canonical: 0x, lower-case, v as 27/28) if `who` signed
    keccak256(job_id ‖ output) (‖ 0x00 ‖ finish_reason, when the result carries one). A
    signature that does not recover to the wallet is put to its contract (ERC-1271) only if
    the wallet signed in as a contract wallet, within its rate (app/auth/contract_wallets.py):
    for any other wallet it is refused without a chain call."""
    digest = wallet_sig.result_digest(job_id, output, finish_reason)
    ask = contract_wallets.Asker(ctx, who.address)
    canonical = await wallet_sig.verify_canonical(who.address, digest, signature, ask)
    if canonical is None:
        ask.raise_if_limited()
        raise Unauthorized("the result signature does not recover to your wallet; sign "
                           "keccak256(utf8(job_id) || utf8(output)) with personal_sign",
                           code="invalid_result_signature")
    return canonical


async def check_result(ctx: AppContext, kind: JobKind, who: Wallet, item: Any,
                       now: datetime) -> Completion:
    """A posted result (job_id, lease_id, output, output_tokens, signature) whose lease was
    found current (current_leases) made a Completion, or the error the single endpoint answers
    for it. The output is counted here, once, after the signature is checked, so that an
    unsigned result costs no tokenizing."""
    key = kind.parse_id(item.job_id)
    if key is None:
        raise NotFound("no such job", code="job_not_found")
    finish = getattr(item, "finish_reason", None)  # chat results may carry one
    signature = await check_signature(ctx, who, item.job_id, item.output, item.signature, finish)
    tokens = await count_tokens(ctx.settings.tokenizer, item.output)
    return Completion(key, item.job_id, item.lease_id, miner_id_of(who), item.output,
                      tokens, item.output_tokens, signature, now, finish)


def not_checked(who: Wallet, item: Any, key: Any, now: datetime) -> Completion:
    """A posted result whose lease is not current, unchecked and uncounted: it cannot win, and
    settle_losers() says why (or answers a repeat of an accepted result the same again)."""
    return Completion(key, item.job_id, item.lease_id, miner_id_of(who), item.output, 0,
                      item.output_tokens, "", now)


async def complete(unit: Unit, ctx: AppContext, kind: JobKind,
                   done: list[Completion]) -> list[Any | None]:
    """Store each result whose lease is current, in the caller's transaction: the kind's answer
    for each winner, None for each loser. Waiters are woken after the commit."""
    if isinstance(unit, PgUnit) and kind.fast is not None:
        won = await kind.fast.complete(unit.conn, done)  # credits the miner itself
    elif isinstance(unit, LiteUnit) and kind.fast is not None and kind.fast.lite_complete:
        won = await kind.fast.lite_complete(unit.lite, done)  # credits the miner itself
    else:
        session = unit if isinstance(unit, AsyncSession) else None
        if session is None:
            raise TypeError(f"{kind.name} jobs have no PostgreSQL fast path")
        if kind.before_complete is not None and len(done) > 1:
            await kind.before_complete(session, [c.key for c in done])
        won = [await kind.complete(session, ctx, c) for c in done]
        if any(w is not None for w in won):  # one credit: every result of a request is one miner's
            await credit_miner(session, done[0].miner_id,
                               sum(w[1] for w in won if w is not None), done[0].now,
                               jobs=sum(w is not None for w in won))
    ids = [c.job_id for c, w in zip(done, won, strict=True) if w is not None]
    if ids:
        answers = _answers(kind, done, won)
        after_commit(unit, lambda: ctx.queue.publish_done(*ids, answers=answers),
                     what=f"waking the waiters of {len(ids)} {kind.name} job(s)")
        if kind.completed is not None:
            followed = kind.completed
            marked = [c.job_id for c, w in zip(done, won, strict=True)
                      if w is not None and len(w) > 2 and w[2]]
            after_commit(unit, lambda: followed(ctx, ids, done[0].miner_id, marked),
                         what=f"following up {len(ids)} answered {kind.name} job(s)")
    return [w[0] if w is not None else None for w in won]


def _answers(kind: JobKind, done: list[Completion], won: list[Any]) -> bytes | None:
    """The winners' answers for their waiters, as the done message carries them (app/notify.py
    ANSWERS), or None if the kind sends none."""
    if kind.wake_answer is None:
        return None
    told = {c.job_id: a for c, w in zip(done, won, strict=True) if w is not None
            and (a := kind.wake_answer(c, w)) is not None}
    return orjson.dumps(told) if told else None


async def settle_losers(ctx: AppContext, kind: JobKind,
                        lost: Sequence[Completion]) -> list[Any | AppError]:
    """Results that did not win: the same answer again for a repeat of the accepted result,
    else the 409 (or 404) that says why not. One read for all of them."""
    if not lost:
        return []
    async with ctx.db.reads() as session:
        rows = (await session.execute(select(kind.model).where(
            kind.model.id.in_({c.key for c in lost})))).scalars().all()
    jobs = {job.id: job for job in rows}
    out: list[Any | AppError] = []
    for c in lost:
        job = jobs.get(c.key)
        try:
            if job is None:
                raise NotFound("no such job", code="job_not_found")
            out.append(kind.answer(job) if _is_repeat(kind, job, c) else None)
        except AppError as err:
            out.append(err)
    return out


def _is_repeat(kind: JobKind, job: Any, c: Completion) -> bool:
    """True if `c` repeats the accepted result; otherwise raises the 409 that says why not."""
    if kind.finished_elsewhere(job):
        raise Conflict(NOT_CURRENT, code="lease_not_current")
    if job.lease_id == c.lease_id and job.miner_id == c.miner_id:
        if job.status == JobStatus.completed and getattr(job, kind.output_column) == c.output:
            return True
        if job.status == JobStatus.completed:
            raise Conflict("this job was already completed with a different output",
                           code="already_completed")
        if job.status == JobStatus.failed:
            raise Conflict(f"this job has failed: {job.failure_reason}", code="job_failed")
        if (job.status == JobStatus.assigned and job.lease_expires_at
                and job.lease_expires_at <= c.now):
            raise Conflict("your lease has expired", code="lease_expired")
    raise Conflict(NOT_CURRENT, code="lease_not_current")


async def credit_miner(session: AsyncSession, miner_id: int, tokens: int, now: datetime,
                       jobs: int = 1) -> None:
    """Bookkeeping for completed jobs, as one atomic UPDATE (never read-modify-write)."""
    await session.execute(
        update(Miner.__table__).where(Miner.id == miner_id)
        .values(job_count=Miner.job_count + jobs,
                tokens_generated=Miner.tokens_generated + tokens, last_active=now))


# ------------------------------------------------------------------ the queue


async def announce(ctx: AppContext, job_id: str) -> None:
    """Wake whoever waits on the job; best effort (waiters re-check the DB on a timer)."""
    try:
        await ctx.queue.publish_done(str(job_id))
    except Exception as exc:
        log.debug("could not announce job %s: %s", job_id, type(exc).__name__)


async def requeue(ctx: AppContext, kind: str, job_ids: list[str]) -> None:
    """Redeliveries go to the front (of their model's list, if they name one). If Redis is down,
    the reconciler pushes them later. A stream watching one hears that the job changed hands."""
    try:
        by_list: dict[str | None, list[str]] = {}
        models_of = LEASABLE[kind].models_of if kind in LEASABLE else None
        named = await models_of(ctx, job_ids) if models_of is not None and job_ids else {}
        for job_id in job_ids:
            by_list.setdefault(named.get(job_id), []).append(job_id)
        for model, ids in by_list.items():
            await ctx.queue.push_front(kind, *ids, model=model)
        if named:
            await ctx.queue.publish_done(*named)
    except Exception as exc:
        log.warning("could not requeue %d %s job(s) (%s); the reconciler will",
                    len(job_ids), kind, type(exc).__name__)
