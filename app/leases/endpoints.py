"""The miner endpoints of a job kind, declared once for every kind: lease one or a batch,
post one result or a batch, extend, release. Each handler owns its transactions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from redis.exceptions import LockError, RedisError
from starlette.requests import Request
from starlette.responses import Response

from app import observability
from app.accounts import billing
from app.auth.guards import wallet_guard
from app.auth.principals import Wallet
from app.auth.roles import suspended_error
from app.context import AppContext, ctx
from app.db import OUTAGES, after_commit, outage
from app.errors import AppError, Conflict, NotFound, RateLimited, queue_unavailable
from app.hangup import ClientGone, Hangup, watching
from app.leases import protocol, room, rules, served
from app.leases.polls import open_poll
from app.leases.protocol import NOT_CURRENT, Completion, JobKind, miner_id_of
from app.leases.schemas import (BatchQuery, ChunkIn, ChunkOut, ItemResult, LeaseIn, LeaseOut,
                                LeaseRefused, NextQuery, ReleaseIn, ReleaseOut, ResultsOut,
                                ResultsQuery, ReturnOut, ReturnsOut)
from app.lite import read_time
from app.models import JobStatus, read_utc, utcnow
from app.queue import MIN_BLOCK_S, PollSlot
from app.sqltext import sqlite
from app.web import Router

LEASING_LOCK_S = 5  # a wallet's leasing lock: its longest hold, and the longest wait for it
YIELD_CHECK_S = 0.5  # how often a long-poll that yields to other work looks for it
# Long-polls that start together end together, and their miners poll again together: after a
# restart, 1,000 idle miners re-polled in one burst every ~34 s (bench `hold`: /health stalled
# 1-2 s each time). A wait of SPREAD_FROM_S or more ends at a random point of its last
# POLL_SPREAD, so a herd spreads out within a few rounds (an empty answer a little early is
# within "up to `wait`"); short waits, as tests and eager miners use, keep their length.
POLL_SPREAD = 0.2
SPREAD_FROM_S = 5.0
log = logging.getLogger(__name__)
MINER = dict(auth=("MinerToken",), guard=wallet_guard("miner"))
OPERATOR = dict(auth=("MinerToken",), guard=wallet_guard("operator"))


@dataclass(frozen=True)
class Shapes:
    """A kind's request and response bodies (the OpenAPI document names each)."""
    assignment: type[BaseModel]  # GET .../next
    jobs: type[BaseModel]  # GET .../batch: {"jobs": [assignment, ...]}
    result_in: type[BaseModel]  # POST .../result
    result_out: type[BaseModel]
    results_in: type[BaseModel]  # POST .../results: {"results": [result_in, ...]}
    results_then: type[BaseModel]  # POST .../results?next=: {"results", "jobs", "lease_error"}


async def lease(c: AppContext, kind: JobKind, who: Wallet, wait_s: float, most: int,
                gone: Hangup | None = None,
                model: str | None = None, capabilities: str | None = None,
                slot: PollSlot | None = None) -> list[Any]:
    """Pops up to `most` ids (blocking up to wait_s for the first) until some can be leased,
    from `model`'s list too if the kind routes by model and the miner declared one;
    their assignments, or [] if none came. If the miner hung up while waiting, the ids go back
    to the front untouched: no lease, no attempt spent. A kind that yields (idle, to waiting
    chat) stops at once, and blocks in slices so that it notices."""
    miner_id = miner_id_of(who)
    routes: list[str] = []
    if model is not None:
        can = served.parse_capabilities(capabilities)
        await served.declare(c.redis, c.settings.redis_prefix, model, wallet=miner_id,
                             cap=c.settings.miner_max_models, ttl_s=c.settings.model_ttl_s,
                             capabilities=can)
        routes = served.routes(model, can)
        if kind.models_of is None:
            model, routes = None, []  # declared, but this kind's jobs never name one
    # MINER_MAX_LEASES, counted in the database before any id is popped, so none is popped in
    # vain (unless this process has just seen the wallet with room to spare: room.py), and
    # again after the pop, together with the lease, under the wallet's leasing lock
    # (the wallet's other requests may have leased meanwhile; what no longer fits goes back to
    # the front). The lock spans API processes (_leasing), so the cap is exact: without it, 20
    # concurrent batches under a cap of 5 leased 100 jobs, and a hoarder in `make bench`'s
    # chaos run held 33 leases under a cap of 32 with two API processes.
    most = await room.trimmed(c, miner_id, most)
    route = await kind.route(c, miner_id, model, routes) if kind.route is not None else None
    deadline = time.monotonic() + spread(min(wait_s, c.settings.miner_max_wait_s))
    while True:
        if kind.yields is not None and await kind.yields(c):
            return []
        remaining = deadline - time.monotonic()
        block = remaining if remaining >= MIN_BLOCK_S else 0
        if kind.yields is not None:
            block = min(block, YIELD_CHECK_S)
        pop = (route.pop(most, block, slot) if route is not None
               else c.queue.pop_many(kind.name, most, block, model=model, routes=routes,
                                     slot=slot))
        # A hang-up ends a blocked pop at once, freeing the server slot: the pop's connection
        # is dropped, so Redis pops nothing for it (an id whose reply was already on its way
        # in that instant goes with it; the reconciler re-pushes it from the database).
        try:
            ids = await (pop if gone is None or not block else gone.race(pop))
        except ClientGone:
            return []
        if not ids:
            if kind.yields is not None and block and deadline - time.monotonic() >= MIN_BLOCK_S:
                if gone is not None and await gone():
                    return []
                continue  # a slice ran out, the wait has not
            return []
        # Checked again after the pop: the miner may have gone, or work of the kind we yield
        # to arrived while we were blocked; the ids go back to the front untouched.
        if (gone is not None and await gone()) or (kind.yields is not None
                                                   and await kind.yields(c)):
            await protocol.requeue(c, kind.name, ids)
            return []
        async with _leasing(c, kind, miner_id, ids), _requeued_if_down(c, kind, ids):
            if c.db.pg is not None and kind.fast is not None:
                # one statement, no BEGIN/COMMIT: it counts the room itself (_fast_lease)
                keys = protocol.parse_ids(kind, ids)
                jobs = await _fast_lease(c, kind, miner_id, ids, keys)
            elif c.db.lite is not None and kind.fast is not None and kind.fast.lite_lease:
                keys = protocol.parse_ids(kind, await _within_room(c, kind, miner_id, ids))
                jobs = await kind.fast.lite_lease(c.db.lite, c, keys, miner_id, utcnow())
            else:
                async with c.db.transaction() as session:
                    if c.db.pg is not None:  # the wallet's lock in PostgreSQL, as the statement's
                        await rules.lease_lock(session, miner_id)
                    keys = protocol.parse_ids(kind, await _within_room(c, kind, miner_id, ids))
                    jobs = await protocol.acquire(session, c, kind, keys, miner_id, utcnow())
        if len(jobs) < len(keys):
            # Not leased: taken or finished meanwhile (dropped), or returned by this very miner
            # within RETURNED_JOB_COOLDOWN_S: those go back to the front for other miners, and
            # a request that got nothing else ends rather than pop them again at once.
            leased = {j.job_id for j in jobs}
            returned = await protocol.returned_by(c, kind, [k for k in keys
                                                            if str(k) not in leased], miner_id)
            if returned:
                await protocol.requeue(c, kind.name, returned)
                if not jobs:
                    return []
        if jobs:
            return jobs


def spread(wait_s: float) -> float:
    """How long a long-poll of `wait_s` waits (POLL_SPREAD)."""
    if wait_s < SPREAD_FROM_S:
        return wait_s
    return wait_s * (1 - POLL_SPREAD * random.random())


@contextlib.asynccontextmanager
async def _requeued_if_down(c: AppContext, kind: JobKind, ids: list[str]) -> AsyncIterator[None]:
    """The popped ids go back to the front if the database fails their lease, so they go out
    again at once rather than when the reconciler finds them (a lease that did commit before a
    timeout is safe: the next lease statement finds the job assigned and drops its id)."""
    try:
        yield
    except OUTAGES as exc:
        if outage(exc) is not None:
            await protocol.requeue(c, kind.name, ids)  # never raises: the reconciler's, if not
        raise


# One lock per wallet leasing in this process, dropped with its last user.
_LOCKS: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()


def _wallet_lock(miner_id: int) -> asyncio.Lock:
    lock = _LOCKS.get(miner_id)
    if lock is None:
        lock = _LOCKS[miner_id] = asyncio.Lock()
    return lock


@contextlib.asynccontextmanager
async def _leasing(c: AppContext, kind: JobKind, miner_id: int,
                   ids: list[str]) -> AsyncIterator[None]:
    """One leasing of the wallet at a time: its requests in this process queue on an asyncio
    lock (free); across API processes, on PostgreSQL, the lease itself takes the wallet's
    advisory lock (rules.LEASING_LOCK: in the lease statement, or first thing in an ORM
    lease's transaction), held until it commits. On SQLite one of them at a time takes the
    wallet's Redis lock (two round trips), so requests in different processes cannot count the
    same room. A wallet with one request at a time, as honest miners have, never waits. If the
    Redis lock cannot be had within LEASING_LOCK_S the popped ids go back to the front and the
    request answers 429."""
    async with _wallet_lock(miner_id):
        if c.db.pg is not None:
            yield
            return
        lock = c.redis.lock(f"{c.settings.redis_prefix}:leasing:{miner_id}",
                            timeout=LEASING_LOCK_S, sleep=0.005, blocking_timeout=LEASING_LOCK_S)
        try:
            got = await lock.acquire()
        except Exception:
            await protocol.requeue(c, kind.name, ids)
            raise
        if not got:  # the wallet's own requests keep it busy
            await protocol.requeue(c, kind.name, ids)
            raise RateLimited(f"this wallet's other requests kept its leasing busy for "
                              f"{LEASING_LOCK_S} s; try again", retry_after_s=1,
                              code="lease_busy")
        try:
            yield
        finally:
            try:
                await lock.release()
            except LockError:  # it ran out (LEASING_LOCK_S): another request may have it now
                log.warning("a wallet's leasing lock expired before it was released")


async def _fast_lease(c: AppContext, kind: JobKind, miner_id: int, ids: list[str],
                      keys: list[Any]) -> list[Any]:
    """_within_room and the lease in one statement (the kind's FastPath): what fits is leased,
    the popped ids that did not fit go back to the front (all of them, with the error, if none
    fit or the wallet was suspended meanwhile)."""
    assert kind.fast is not None
    cap = protocol.cap_of(c)
    try:
        async with c.db.fast_reads() as conn:
            got = await kind.fast.lease(conn, c, keys, miner_id, utcnow(), cap)
    except Exception:
        await protocol.requeue(c, kind.name, ids)
        raise
    if got.suspended:
        await protocol.requeue(c, kind.name, ids)
        raise suspended_error()
    room.seen(c, miner_id, got.held + len(got.jobs))
    if got.held >= cap:
        await protocol.requeue(c, kind.name, ids)
        raise protocol.too_many(got.held, cap)
    if got.over:
        await protocol.requeue(c, kind.name, got.over)
    return list(got.jobs)


async def _within_room(c: AppContext, kind: JobKind, miner_id: int, ids: list[str]) -> list[str]:
    """The popped ids that still fit under the miner's cap; the rest go back to the front (all
    of them, with the error, if none fits or the miner was suspended meanwhile)."""
    try:
        fits = await protocol.room(c, miner_id)
    except AppError:
        await protocol.requeue(c, kind.name, ids)
        raise
    if fits < len(ids):
        await protocol.requeue(c, kind.name, ids[fits:])
    return ids[:fits]


async def results(c: AppContext, kind: JobKind, who: Wallet, items: list[Any]) -> list[Any]:
    """Each posted result's answer (the kind's) or its error (an AppError), in order; one bad
    item never fails the others. All winners are stored in one transaction.

    The leases are checked first, in one read: only a result for a lease the wallet holds now
    (the first of a batch for its job) has its signature checked and its output tokenized. A
    replayed batch for jobs that do not exist, or leases long gone, costs that read and no
    signature check, no chain call and no tokenizing (a 250 KB junk batch cost 108 ms of CPU
    tokenizing and one RPC per item). What a request tokenizes is bounded by MAX_BODY_BYTES and
    by the leases the wallet holds."""
    miner_id, now = miner_id_of(who), utcnow()
    keys = [kind.parse_id(item.job_id) for item in items]
    holders = await protocol.current_leases(c, kind, [k for k in keys if k is not None],
                                            miner_id, now)
    current, known = holders.current, holders.known
    checked: list[Completion | AppError] = []
    tried: set[Any] = set()
    for item, key in zip(items, keys, strict=True):
        try:
            if key is None or key not in known:
                raise NotFound("no such job", code="job_not_found")
            if (key, item.lease_id) in current and key not in tried:
                checked.append(await protocol.check_result(c, kind, who, item, now))
                tried.add(key)  # a job's first well-signed result of the batch is the one tried
            else:  # cannot win: settled below, unchecked
                checked.append(protocol.not_checked(who, item, key, now))
        except AppError as err:
            checked.append(err)
    done = [x for x in checked if isinstance(x, Completion) and x.signature]
    if done and kind.vet is not None:
        refused = {id(x): err for x, err in zip(done, await kind.vet(c, done, holders.vetting),
                                                             strict=True)
                   if err is not None}
        if refused:
            checked = [refused.get(id(x), x) for x in checked]
            done = [x for x in checked if isinstance(x, Completion) and x.signature]
    won: list[Any] | None = None
    if done and kind.fast is not None and (c.db.pg is not None or (
            c.db.lite is not None and kind.fast.lite_complete is not None
            and not kind.fast.transactional(c))):
        # one statement for the whole batch (and, for priced jobs, their charge with it)
        with contextlib.suppress(protocol.NeedsTransaction):
            async with c.db.fast(transaction=kind.fast.transactional(c)) as unit:
                won = await protocol.complete(unit, c, kind, done)
    if done and won is None:
        async with c.db.transaction() as session:
            won = await protocol.complete(session, c, kind, done)
    won = won or []
    outcome: dict[int, Any] = {id(x): w for x, w in zip(done, won, strict=True)}
    losers = [x for x in checked if isinstance(x, Completion) and outcome.get(id(x)) is None]
    settled = dict(zip(map(id, losers), await protocol.settle_losers(c, kind, losers),
                       strict=True))
    observability.count_lease_outcome(kind.name, "completed", sum(w is not None for w in won))
    observability.trace_results(kind.name, [d.job_id for d, w in zip(done, won) if w is not None])
    out: list[Any] = []
    for x in checked:
        if isinstance(x, AppError):
            out.append(x)
            observability.count_lease_outcome(kind.name, "rejected")
        else:
            answer = outcome.get(id(x))
            out.append(answer if answer is not None else settled[id(x)])
    return out


def _item(job_id: str, outcome: Any) -> ItemResult:
    if isinstance(outcome, AppError):
        return ItemResult(job_id=job_id, status="rejected", error=outcome.code,
                          detail=outcome.detail)
    return ItemResult(job_id=job_id, status="completed")


def _refused(err: AppError) -> LeaseRefused:
    retry = err.headers.get("Retry-After")
    return LeaseRefused(status=err.status, error=err.code, detail=err.detail,
                        retry_after_s=int(retry) if retry and retry.isdigit() else None)


def _key(kind: JobKind, job_id: str) -> Any:
    key = kind.parse_id(job_id)
    if key is None:
        raise NotFound("no such job", code="job_not_found")
    return key


async def _not_current(c: AppContext, kind: JobKind, key: Any,
                       limited: Callable[[Any], datetime | None] | None = None) -> AppError:
    """Why a lease change matched no row: the job is unknown (404), the lease is current but
    may not grow past LEASE_MAX_TOTAL_S (`limited` says until when it runs), or the lease is
    not current."""
    async with c.db.reads() as session:
        job = await session.get(kind.model, key)
    if job is None:
        return NotFound("no such job", code="job_not_found")
    ends = limited(job) if limited is not None else None
    if ends is not None:
        runs_out = f"{job.lease_expires_at:%H:%M:%S}"
        return Conflict(f"a delivery's lease may last {c.settings.lease_max_total_s} s in all "
                        f"(LEASE_MAX_TOTAL_S): this one runs out at {runs_out} UTC and cannot "
                        f"be extended past {ends:%H:%M:%S} UTC; post the result before then",
                        code="lease_limit")
    return Conflict(NOT_CURRENT, code="lease_not_current")


async def post_chunk(c: AppContext, kind: JobKind, who: Wallet, job_id: str,
                     body: ChunkIn) -> ChunkOut:
    """Append streamed output to the job's relay buffer (app/relay.py) if the lease is current,
    the job is streamed, and the lease's budget (protocol.stream_budget) has room."""
    key = _key(kind, job_id)
    miner_id, now = miner_id_of(who), utcnow()
    if c.db.pg is not None:  # a read per chunk: one statement on the driver itself
        async with c.db.fast_reads() as conn:
            row = await conn.fetchrow(rules.holder_sql(
                kind.model.__tablename__, [col.name for col in kind.stream_columns]), key)
        held = None if row is None else (row["status"], row["lease_id"], row["miner_id"],
                                         read_utc(row["lease_expires_at"]),
                                         read_utc(row["assigned_at"]),
                                         tuple(row[col.name] for col in kind.stream_columns))
    elif c.db.lite is not None:  # the same statement on SQLite's own driver
        row = await c.db.lite.fetchrow(sqlite(rules.holder_sql(
            kind.model.__tablename__, [col.name for col in kind.stream_columns])), key)
        held = None if row is None else (row["status"], row["lease_id"], row["miner_id"],
                                         read_time(row["lease_expires_at"]),
                                         read_time(row["assigned_at"]),
                                         tuple(row[col.name] for col in kind.stream_columns))
    else:
        async with c.db.reads() as session:
            job = await session.get(kind.model, key)
        held = None if job is None else (job.status, job.lease_id, job.miner_id,
                                         job.lease_expires_at, job.assigned_at,
                                         tuple(getattr(job, col.key)
                                               for col in kind.stream_columns))
    if held is None:
        raise NotFound("no such job", code="job_not_found")
    status, lease_id, holder, expires, assigned_at, fields = held
    if status != JobStatus.assigned or lease_id != body.lease_id or holder != miner_id:
        raise Conflict(NOT_CURRENT, code="lease_not_current")
    if expires is None or expires <= now:
        raise Conflict("your lease has expired", code="lease_expired")
    ask = kind.streamed(fields) if kind.streamed is not None else None
    if ask is None or assigned_at is None:
        raise Conflict("this job is not streamed (its assignment says stream: false): post "
                       "only the whole, signed result", code="not_streamed")
    budget = protocol.stream_budget(c.settings, ask, assigned_at)
    added = await c.relay.append(job_id, body.lease_id, body.seq, body.delta, budget)
    if added.outcome == "gap":
        raise Conflict(f"chunk {body.seq} came before chunk {added.next_seq}: resend from "
                       f"{added.next_seq}", code="chunk_gap", extra={"next_seq": added.next_seq})
    if added.outcome in ("too_many", "too_big"):
        raise Conflict(f"this lease may stream at most {budget.max_chunks} chunks and "
                       f"{budget.max_bytes} bytes in all (STREAM_MAX_CHUNKS, STREAM_MAX_BYTES, "
                       "less for a small max_tokens); stop streaming and post the whole, signed "
                       "result: the client gets the rest with it", code="stream_budget",
                       extra={"next_seq": added.next_seq})
    return ChunkOut(job_id=job_id, next_seq=added.next_seq, watching=added.watching)


def add_miner_endpoints(router: Router, kind: JobKind, prefix: str, shapes: Shapes,
                        noun: str, *, chunks: bool = False) -> None:
    """GET {prefix}/next, GET {prefix}/batch, POST {prefix}/result, POST {prefix}/results,
    POST {prefix}/{job_id}/extend and POST {prefix}/{job_id}/release for `kind`; with
    `chunks`, POST {prefix}/{job_id}/chunk for streamed output."""
    yields = (", and at once while any chat job is waiting (chat comes first)"
              if kind.yields is not None else "")

    protocol.LEASABLE[kind.name] = kind

    async def poll(request: Request, who: Wallet, query: NextQuery, most: int) -> list[Any]:
        """Lease up to `most` jobs, long-polling `query.wait` seconds in one of the wallet's
        MINER_MAX_POLLS slots; a client that hangs up ends the wait."""
        c = ctx(request)
        async with (open_poll(c, who.address, query.wait) as slot,
                    watching(request, query.wait > 0) as gone):
            return await lease(c, kind, who, query.wait, most, gone, query.model,
                               query.capabilities, slot)

    async def next_job(request: Request, who: Wallet, query: NextQuery) -> Response | Any:
        jobs = await poll(request, who, query, 1)
        return jobs[0] if jobs else Response(status_code=204)

    next_job.__doc__ = (f"Lease the next {noun}, long-polling up to `wait` seconds; 204 if "
                        f"none came{yields}.")
    next_job.__name__ = f"next_{kind.name}_job"

    async def batch(request: Request, who: Wallet, query: BatchQuery) -> Response | Any:
        jobs = await poll(request, who, query, query.max)
        return shapes.jobs(jobs=jobs) if jobs else Response(status_code=204)

    batch.__doc__ = (f"Lease up to `max` {noun}s at once, long-polling up to `wait` seconds for "
                     f"the first; the answer comes as soon as one is there; 204 if none "
                     f"came{yields}. Each is leased exactly as by {prefix}/next.")
    batch.__name__ = f"batch_{kind.name}_jobs"

    async def post_result(request: Request, who: Wallet, body: Any) -> Any:
        outcome = (await results(ctx(request), kind, who, [body]))[0]
        if isinstance(outcome, AppError):
            raise outcome
        return outcome

    post_result.__doc__ = (f"Complete a leased {noun} with the output and the wallet's "
                           "signature over keccak256(utf8(job_id) || utf8(output)) (EIP-191 "
                           "personal_sign of those 32 bytes).")
    post_result.__name__ = f"post_{kind.name}_result"

    async def post_results(request: Request, who: Wallet, body: Any,
                           query: ResultsQuery) -> BaseModel:
        items = body.results
        outcomes = await results(ctx(request), kind, who, items)
        answers = [_item(i.job_id, o) for i, o in zip(items, outcomes, strict=True)]
        if not query.next:
            return ResultsOut(results=answers)
        # The results are stored: whatever the lease part meets, they are answered (a refusal
        # of the lease, or Redis failing it, rides beside them instead of failing the request
        # and hiding them).
        try:
            jobs = await poll(request, who, query, query.next)
        except AppError as err:
            return shapes.results_then(results=answers, jobs=[], lease_error=_refused(err))
        except RedisError as exc:
            log.warning("Redis unavailable for a result request's lease part: %s",
                        type(exc).__name__)
            return shapes.results_then(results=answers, jobs=[],
                                       lease_error=_refused(queue_unavailable()))
        except OUTAGES as exc:
            down = outage(exc)
            if down is None:  # a bug: a logged 500, as anywhere else
                raise
            log.warning("%s in a result request's lease part: %s", down.code,
                        type(exc).__name__)
            return shapes.results_then(results=answers, jobs=[], lease_error=_refused(down))
        return shapes.results_then(results=answers, jobs=jobs)

    post_results.__doc__ = (f"Complete several leased {noun}s, each item as the body of "
                            f"{prefix}/result (each signed on its own). One answer per item, in "
                            "order: a rejected item carries the error code the single endpoint "
                            "would answer, and never fails the others; a repeated item gets "
                            "the same answer as the first time.")
    post_results.__doc__ += (f" With `next`, the same request then leases up to `next` "
                             f"{noun}s exactly as {prefix}/batch?max=next&wait=... would, and "
                             "answers both (`jobs` may be empty; a refused lease says why in "
                             "`lease_error`): a miner that posts its results and asks for more "
                             "spends one request where it spent two.")
    post_results.__name__ = f"post_{kind.name}_results"

    async def extend(request: Request, who: Wallet, body: LeaseIn) -> LeaseOut:
        c = ctx(request)
        job_id = request.path_params["job_id"]
        key = _key(kind, job_id)
        s = c.settings
        length = min(body.seconds or s.lease_seconds, s.lease_max_extend_s)
        miner_id, now = miner_id_of(who), utcnow()
        async with c.db.transaction() as session:
            expires = await rules.extend(session, kind.model, key, body.lease_id, miner_id,
                                         now, length, s.lease_max_total_s)
        if expires is None:
            raise await _not_current(c, kind, key, lambda job: rules.past_limit(
                job, body.lease_id, miner_id, now, length, s.lease_max_total_s))
        return LeaseOut(job_id=job_id, lease_id=body.lease_id, lease_expires_at=expires)

    extend.__doc__ = f"Extend the current lease on a {noun} (for long generations)."
    extend.__name__ = f"extend_{kind.name}_lease"

    async def release(request: Request, who: Wallet, body: ReleaseIn) -> ReleaseOut:
        c = ctx(request)
        job_id = request.path_params["job_id"]
        key = _key(kind, job_id)
        async with c.db.transaction() as session:
            status = await rules.release(session, kind.model, key, body.lease_id,
                                         miner_id_of(who), utcnow(), c.settings.max_attempts,
                                         body.reason)
            if status == JobStatus.queued:
                after_commit(session, lambda: protocol.requeue(c, kind.name, [job_id]),
                             what=f"requeueing {kind.name} job {job_id}")
            elif status is not None:  # failed on its last delivery: nothing to pay
                await billing.release(session, kind.name, [key], note="no miner could answer")
                after_commit(session, lambda: c.queue.publish_done(job_id),
                             what=f"waking the waiters of {kind.name} job {job_id}")
        if status is None:
            raise await _not_current(c, kind, key)
        observability.count_lease_outcome(kind.name, "released")
        return ReleaseOut(job_id=job_id, status=status)

    release.__doc__ = (f"Give a leased {noun} back (it is redelivered, or failed after the "
                       "last attempt).")
    release.__name__ = f"release_{kind.name}_lease"

    async def returns(request: Request, who: Wallet) -> ReturnsOut:
        c = ctx(request)
        job_id = request.path_params["job_id"]
        key = _key(kind, job_id)
        async with c.db.reads() as session:
            if await session.get(kind.model, key) is None:
                raise NotFound("no such job", code="job_not_found")
            rows = await rules.returns_of(session, kind.model, key)
        return ReturnsOut(job_id=job_id, returns=[
            ReturnOut(miner_id=r.miner_id, returned_at=r.returned_at, how=r.how, reason=r.reason)
            for r in rows])

    returns.__doc__ = (f"Operator: every delivery of a {noun} that ended without a result (given "
                       "back or lapsed), with the miner's own reason. Businesses never see "
                       "these reasons: a failed job says only that no miner could answer.")
    returns.__name__ = f"{kind.name}_job_returns"

    async def chunk(request: Request, who: Wallet, body: ChunkIn) -> ChunkOut:
        return await post_chunk(ctx(request), kind, who, request.path_params["job_id"], body)

    chunk.__doc__ = (f"Stream part of a leased {noun}'s output while generating, for a client "
                     "watching it (the assignment says `stream: true`). Chunks of a lease are "
                     "numbered from 0; a repeated number is ignored, a gap is refused (409 "
                     "chunk_gap with `next_seq`). Only a streamed job takes chunks (409 "
                     "not_streamed), and a lease's chunks have a budget (409 stream_budget: "
                     "stop streaming). The final result is still posted whole and "
                     "signed; the client's stream checks the chunks against it.")
    chunk.__name__ = f"post_{kind.name}_chunk"
    if chunks:
        router.post(f"{prefix}/{{job_id}}/chunk", body=ChunkIn, responses={200: ChunkOut},
                    errors=(403, 404, 409), **MINER)(chunk)

    router.get(f"{prefix}/next", query=NextQuery, responses={200: shapes.assignment, 204: None},
               errors=(400, 403), safe=False, **MINER)(next_job)
    router.get(f"{prefix}/batch", query=BatchQuery, responses={200: shapes.jobs, 204: None},
               errors=(400, 403), safe=False, **MINER)(batch)
    router.post(f"{prefix}/result", body=shapes.result_in, responses={200: shapes.result_out},
                errors=(403, 404, 409), **MINER)(post_result)
    router.post(f"{prefix}/results", body=shapes.results_in, query=ResultsQuery,
                responses={200: shapes.results_then}, errors=(400, 403), **MINER)(post_results)
    router.post(f"{prefix}/{{job_id}}/extend", body=LeaseIn, responses={200: LeaseOut},
                errors=(403, 404, 409), **MINER)(extend)
    router.post(f"{prefix}/{{job_id}}/release", body=ReleaseIn, responses={200: ReleaseOut},
                errors=(403, 404, 409), **MINER)(release)
    router.get(f"{prefix}/{{job_id}}/returns", responses={200: ReturnsOut},
               errors=(403, 404), **OPERATOR)(returns)
