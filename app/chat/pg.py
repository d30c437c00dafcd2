"""The chat job's hot path on PostgreSQL's own driver (asyncpg): one statement per state change,
each written once here and prepared per connection. SQLite runs the same steps on its own
driver (chat/lite.py): these texts where it can (app/sqltext.py names the differences), a
transaction of a few statements where PostgreSQL uses a data-modifying CTE; tests run both and
expect the same answers.

Timestamps are stored as naive UTC (app/models.py UTCDateTime): `stored_utc` going in,
`read_utc` coming out.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import orjson

from app import observability
from app.accounts import pg as accounts_pg
from app.chat.options import assignment
from app.chat.schemas import HistoryItem, ResultOut
from app.leases.protocol import Completion
from app.models import ChatJob, JobStatus, read_utc, stored_utc

# Create the business's session (first message) or find it (later ones), write the job and the
# user's turn: all or nothing, in one statement. Session ids are scoped per business: `mine`
# looks for this business's session of that name only. A session created by a concurrent first
# message after this statement's snapshot is not seen: nothing is written, and the caller runs
# the statement again.
SUBMIT = """
WITH claim AS (
    INSERT INTO chat_sessions (session_id, business_id, created_at)
    SELECT $1, $2, $3 WHERE $7
    ON CONFLICT DO NOTHING RETURNING session_id),
mine AS (SELECT 1 FROM chat_sessions WHERE session_id = $1
         AND business_id IS NOT DISTINCT FROM $2),
allowed AS (SELECT 1 WHERE EXISTS (SELECT 1 FROM claim) OR EXISTS (SELECT 1 FROM mine)),
job AS (
    INSERT INTO chat_jobs (id, business_id, session_id, prompt, context, status, attempts,
                           created_at, model, options, api_key_id)
    SELECT $4, $2, $1, $5, $6, 'queued', 0, $3, $8, $9, $10 FROM allowed RETURNING id),
turn AS (
    INSERT INTO chat_logs (session_id, message, role, timestamp, business_id, job_id)
    SELECT $1, $5, 'user', $3, $2, id FROM job)
SELECT EXISTS (SELECT 1 FROM job) AS queued
"""

# SQLite's lease (app/chat/lite.py runs this text as it is, the cap counted before it under the
# wallet's leasing lock): the queued ones among $1. PostgreSQL's LEASE below has the same rule
# and also counts the cap in the statement.
LEASE_UPDATE = """
    UPDATE chat_jobs SET status = 'assigned', lease_id = $2, lease_expires_at = $3,
                         miner_id = $4, attempts = attempts + 1, assigned_at = $5
    WHERE id = ANY($1::text[]) AND status = 'queued'
      AND NOT EXISTS (SELECT 1 FROM job_returns r      -- app/leases/rules.not_returned_by
                      WHERE r.job_table = 'chat_jobs' AND r.job_id = chat_jobs.id
                        AND r.miner_id = $4 AND (r.returned_at > $7 OR chat_jobs.attempts >= $8 - 1))
    RETURNING id, attempts, prompt, context, session_id, business_id, model, options, created_at"""

# SUBMIT for a group of submissions (app/chat/group.py), one row each, in one statement: the
# same rules row by row. A row's session counts as claimed if this statement inserted it (a
# first message, or the first of several of the group for one new session) or it was there
# before (`mine`, this statement's snapshot). Returns the ids of the jobs written; a row missing
# from it was not written, for SUBMIT's reasons.
SUBMIT_MANY = """
WITH r AS (
    SELECT * FROM unnest($1::text[], $2::int[], $3::timestamp[], $4::text[], $5::text[],
                         $6::text[], $7::bool[], $8::text[], $9::text[], $10::int[])
        WITH ORDINALITY AS r(session_id, business_id, at, job_id, prompt, context, may_claim,
                             model, options, api_key_id, ord)),
claim AS (
    INSERT INTO chat_sessions (session_id, business_id, created_at)
    SELECT DISTINCT ON (session_id, business_id) session_id, business_id, at FROM r
    WHERE may_claim ORDER BY session_id, business_id, ord
    ON CONFLICT DO NOTHING RETURNING session_id, business_id),
allowed AS (
    SELECT r.* FROM r
    WHERE EXISTS (SELECT 1 FROM claim c WHERE c.session_id = r.session_id
                  AND c.business_id IS NOT DISTINCT FROM r.business_id)
       OR EXISTS (SELECT 1 FROM chat_sessions s WHERE s.session_id = r.session_id
                  AND s.business_id IS NOT DISTINCT FROM r.business_id)),
job AS (
    INSERT INTO chat_jobs (id, business_id, session_id, prompt, context, status, attempts,
                           created_at, model, options, api_key_id)
    SELECT job_id, business_id, session_id, prompt, context, 'queued', 0, at, model, options,
           api_key_id
    FROM allowed ORDER BY ord RETURNING id),
turn AS (
    INSERT INTO chat_logs (session_id, message, role, timestamp, business_id, job_id)
    SELECT a.session_id, a.prompt, 'user', a.at, a.business_id, a.job_id
    FROM allowed a JOIN job ON job.id = a.job_id ORDER BY a.ord)
SELECT id FROM job
"""

# Lease the queued ones among $1 that fit under the wallet's cap, and read, in the same
# statement, each one's earlier turns. The cap (MINER_MAX_LEASES, $9) is counted here, over
# every leasable table, by mia_leases_held() (migration 0017): it first takes the wallet's
# leasing lock (an advisory lock held until this statement commits), then counts on a snapshot
# of its own, so no other lease statement of the wallet counts the same room. The
# first row always comes (LEFT JOIN): the room, whether the wallet is suspended, and the ids
# that did not fit (`over`, in queue order), to go back to the front of the queue.
LEASE = """
WITH room AS (
    SELECT mia_leases_held($4) AS held, suspended_at IS NOT NULL AS suspended
    FROM miners WHERE id = $4),
cand AS (
    SELECT c.id, row_number() OVER (ORDER BY array_position($1::text[], c.id)) AS n
    FROM chat_jobs c
    WHERE c.id = ANY($1::text[]) AND c.status = 'queued'
      AND NOT EXISTS (SELECT 1 FROM job_returns r      -- app/leases/rules.not_returned_by
                      WHERE r.job_table = 'chat_jobs' AND r.job_id = c.id
                        AND r.miner_id = $4 AND (r.returned_at > $7 OR c.attempts >= $8 - 1))),
fits AS (
    SELECT id FROM cand, room WHERE NOT room.suspended AND cand.n <= $9 - room.held),
leased AS (
    UPDATE chat_jobs SET status = 'assigned', lease_id = $2, lease_expires_at = $3,
                         miner_id = $4, attempts = attempts + 1, assigned_at = $5
    WHERE id IN (SELECT id FROM fits) AND status = 'queued'
    RETURNING id, attempts, prompt, context, session_id, business_id, model, options, created_at)
SELECT room.held, room.suspended,
       (SELECT array_agg(id ORDER BY n) FROM cand WHERE id NOT IN (SELECT id FROM fits)) AS over,
       l.id, l.attempts, l.prompt, l.context, l.session_id, l.model, l.options, l.created_at,
       (SELECT coalesce(json_agg(json_build_object('role', h.role, 'content', h.message)
                                 ORDER BY h.id), '[]')
        FROM (SELECT c.id, c.role, c.message FROM chat_logs c
              WHERE c.session_id = l.session_id
                AND c.business_id IS NOT DISTINCT FROM l.business_id
                AND c.id < (SELECT u.id FROM chat_logs u WHERE u.job_id = l.id AND u.role = 'user')
              ORDER BY c.id DESC LIMIT $6) h) AS history
FROM room LEFT JOIN leased l ON true
"""

# Complete every result whose lease is current, write each one's assistant turn and credit the
# miner once for all of them: one statement for a whole batch. `tokens` is the server's count
# (app/tokens.py), capped at the job's max_tokens (a /v1 client's, in options): what is
# credited and reported; `reported` the miner's, stored for comparison only.
COMPLETE = """
WITH posted AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[], $8::int[],
                         $9::text[])
        AS p(job_id, lease_id, output, tokens, signature, reported, finish)),
done AS (
    UPDATE chat_jobs j SET status = 'completed', completed_at = $7, lease_expires_at = NULL,
                           response = p.output,
                           output_tokens = LEAST(p.tokens, coalesce(
                               (j.options::json->>'max_tokens')::int, p.tokens)),
                           reported_tokens = p.reported, signature = p.signature,
                           finish_reason = p.finish
    FROM posted p
    WHERE j.id = p.job_id AND j.lease_id = p.lease_id AND j.status = 'assigned'
      AND j.miner_id = $6 AND j.lease_expires_at > $7
    RETURNING j.id, j.session_id, j.business_id, p.output, j.output_tokens AS tokens,
              j.hold_usd, j.purpose IS NOT NULL AS checks),
turns AS (
    INSERT INTO chat_logs (session_id, message, role, timestamp, business_id, job_id)
    SELECT session_id, output, 'assistant', $7, business_id, id FROM done),
credit AS (
    UPDATE miners SET job_count = job_count + (SELECT count(*) FROM done),
                      tokens_generated = tokens_generated
                                         + (SELECT coalesce(sum(tokens), 0) FROM done),
                      last_active = $7
    WHERE id = $6 AND EXISTS (SELECT 1 FROM done))
SELECT id, session_id, tokens, hold_usd, checks FROM done
"""

# Whose answers are vetted (tool calls, structured output: chat/kind.py vet): their options, read
# as a column of the lease check (protocol.current_leases), NULL for every other job.
VET_ASKS = """(options LIKE '%"tools"%' OR options LIKE '%"response_format"%')"""
VET_COLUMN = f"CASE WHEN {VET_ASKS} THEN options END"

READ = """
SELECT id, business_id, session_id, status, response, completed_at, failure_reason, lease_id,
       miner_id, lease_expires_at, output_tokens, finish_reason, options
FROM chat_jobs WHERE id = $1
"""


async def submit(conn: asyncpg.Connection, *, job_id: str, business_id: int | None,
                 session_id: str, may_claim: bool, prompt: str, context: str | None,
                 now: datetime, model: str | None = None,
                 options: str | None = None, api_key_id: int | None = None) -> bool:
    """Whether the job was written: not when the session may not be claimed (an anonymous
    caller's unknown id) or was claimed after this statement's snapshot. (Unpriced chat only:
    a priced one holds money, through SQLAlchemy: app/chat/service.py.)"""
    return bool(await conn.fetchval(SUBMIT, session_id, business_id, stored_utc(now), job_id,
                                    prompt, context, may_claim, model, options, api_key_id))


async def submit_many(conn: asyncpg.Connection, rows: Sequence[Any]) -> list[bool]:
    """submit() for several rows (app/chat/group.Row) in one statement: per row, whether its
    job was written."""
    written = {r["id"] for r in await conn.fetch(
        SUBMIT_MANY, [r.session_id for r in rows], [r.business_id for r in rows],
        [stored_utc(r.now) for r in rows], [r.job_id for r in rows], [r.prompt for r in rows],
        [r.context for r in rows], [r.may_claim for r in rows], [r.model for r in rows],
        [r.options for r in rows], [r.api_key_id for r in rows])}
    return [r.job_id in written for r in rows]


@dataclass(frozen=True)
class Leased:
    """What one LEASE statement did: the assignments, the wallet's leases before it (`held`),
    whether the wallet is suspended, and the popped ids that did not fit under the cap."""
    jobs: list[Any]
    held: int
    suspended: bool
    over: list[str]


async def lease(conn: asyncpg.Connection, keys: list[str], miner_id: int, lease_s: int,
                now: datetime, history_limit: int, cooldown_s: int = 0,
                max_attempts: int = 1 << 30, *, cap: int = 1 << 30) -> Leased:
    lease_id = str(uuid.uuid4())
    expires = now + timedelta(seconds=lease_s)
    rows = await conn.fetch(LEASE, keys, lease_id, stored_utc(expires),
                            miner_id, stored_utc(now), history_limit,
                            stored_utc(now - timedelta(seconds=cooldown_s)), max_attempts, cap)
    if not rows:  # no such miner
        return Leased([], 0, False, list(keys))
    first = rows[0]
    rows = [r for r in rows if r["id"] is not None]
    order = {key: i for i, key in enumerate(keys)}
    rows.sort(key=lambda r: order.get(r["id"], 0))  # in the queue's order
    observability.observe_dispatched("chat", now, ((r["attempts"], r["created_at"], r["id"])
                                                    for r in rows))
    jobs = [assignment(job_id=r["id"], lease_id=lease_id, expires_at=expires, prompt=r["prompt"],
                       context=r["context"], session_id=r["session_id"],
                       history=[HistoryItem(**h) for h in orjson.loads(r["history"])],
                       attempt=r["attempts"], model=r["model"], raw_options=r["options"])
            for r in rows]
    return Leased(jobs, int(first["held"]), bool(first["suspended"]), list(first["over"] or []))


async def complete(conn: asyncpg.Connection, done: list[Completion]) -> list[Any]:
    """For each result: (ResultOut, tokens) if it won, else None. The first of several results
    for one job in a batch is the one tried; the others settle as repeats or conflicts."""
    first: dict[str, Completion] = {}
    for c in done:
        first.setdefault(c.job_id, c)
    tried = list(first.values())
    now, miner_id = done[0].now, done[0].miner_id
    rows = await conn.fetch(COMPLETE, [c.job_id for c in tried], [c.lease_id for c in tried],
                            [c.output for c in tried], [c.tokens for c in tried],
                            [c.signature for c in tried], miner_id, stored_utc(now),
                            [c.reported_tokens for c in tried],
                            [c.finish_reason for c in tried])
    won = {r["id"]: (r["session_id"], r["tokens"], r["checks"]) for r in rows}
    # Accounts: the jobs that held money are charged, in this unit's transaction (the endpoint
    # opens one while chat is priced); unpriced chat returns no hold and runs nothing more.
    held = [(r["id"], r["tokens"]) for r in rows if r["hold_usd"] is not None]
    if held:
        await accounts_pg.settle(conn, "chat", held, now, "chat")
    return answers(done, first, won, now)


def answers(done: list[Completion], first: dict[str, Completion],
            won: dict[str, tuple[str, int, bool]], now: datetime) -> list[Any]:
    """Per posted result, in order: (ResultOut, tokens, whether the job is a trust check job)
    for the first try of a job that won, None otherwise (a repeat in the batch or a lost
    lease). SQLite's complete uses it too."""
    out: list[Any] = []
    for c in done:
        if first[c.job_id] is c and c.job_id in won:
            session_id, tokens, checks = won[c.job_id]
            out.append((ResultOut(job_id=c.job_id, status="completed", session_id=session_id,
                                  output_tokens=tokens, completed_at=now), tokens, bool(checks)))
        else:
            out.append(None)
    return out


async def read(conn: asyncpg.Connection, job_id: str) -> ChatJob | None:
    row = await conn.fetchrow(READ, job_id)
    return None if row is None else read_job(row, read_utc)


def read_job(row: Any, when: Callable[[Any], datetime | None]) -> ChatJob:
    """A READ row as the job a waiter sees; `when` reads the driver's timestamps (read_utc
    here, app.sqltext read_time on SQLite)."""
    return ChatJob(id=row["id"], business_id=row["business_id"], session_id=row["session_id"],
                   status=JobStatus(row["status"]), response=row["response"],
                   completed_at=when(row["completed_at"]),
                   failure_reason=row["failure_reason"], lease_id=row["lease_id"],
                   miner_id=row["miner_id"], lease_expires_at=when(row["lease_expires_at"]),
                   output_tokens=row["output_tokens"], finish_reason=row["finish_reason"],
                   options=row["options"])
