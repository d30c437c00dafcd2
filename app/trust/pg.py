"""The follow-up of answered jobs (verify.py) on the drivers themselves: the reads of a judging
(PostgreSQL's asyncpg, or SQLite's own driver, the same text) and, on PostgreSQL, its common
writes: a passed check, and a verification copy of a business's job, one statement each.

Why: under `python -m bench steady` the follow-up was 15 % of the API processes' CPU, for 5 %
of the jobs: a judging cost ~5 ms and a copy ~2.7 ms, most of it SQLAlchemy's ORM and execution
layer around a dozen small statements (the reason the chat job's own path runs on the drivers,
app/db.py). The rare branches (a failed check: suspension, demotion, forfeits; a tie-break or
bootstrap copy; an answer delivered by agreement) keep the ORM code in verify.py and
reputation.py, the one place their rules are written.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from app.context import AppContext
from app.models import stored_utc
from app.sqltext import sqlite


@dataclass(frozen=True)
class Answered:
    """What a judging reads of a job (the ChatJob columns it uses, and no prompt or context)."""
    id: str
    purpose: str | None
    status: str
    miner_id: int | None
    response: str | None
    output_tokens: int | None
    reported_tokens: int | None
    check_model: str | None
    origin_job_id: str | None
    canary_id: int | None


COLUMNS = ("id, purpose, status, miner_id, response, output_tokens, reported_tokens, "
           "check_model, origin_job_id, canary_id")
JOB = f"SELECT {COLUMNS} FROM chat_jobs WHERE id = $1"
# A business's job and its verification copies (their first answers decide), and which of them
# have been judged already (a verify check names the job).
GROUP = f"""
SELECT {COLUMNS},
       EXISTS (SELECT 1 FROM trust_checks t WHERE t.kind = 'verify' AND t.job_id = c.id) AS judged
FROM chat_jobs c WHERE c.id = $1 OR c.origin_job_id = $1
ORDER BY c.completed_at, c.id
"""
# The sampled jobs that may be copied: a business's (no purpose), answered.
SAMPLED = """
SELECT id, model, options FROM chat_jobs
WHERE id = ANY($1::text[]) AND purpose IS NULL AND status = 'completed'
"""
SAMPLED_LITE = """
SELECT id, model, options FROM chat_jobs
WHERE id IN (SELECT value FROM json_each(?1)) AND purpose IS NULL AND status = 'completed'
"""

# reputation.record for a passed check of the work (verify, canary, rescore), in one statement:
# the check's row and the wallet's running reputation (never read-modify-write in Python).
PASSED = """
WITH checked AS (
    INSERT INTO trust_checks (miner_id, kind, passed, job_id, weight, similarity,
                              tokens_forfeited, detail, created_at)
    VALUES ($1, $2, true, $3, $4, $5, 0, NULL, $6))
UPDATE miners SET rep_passed = rep_passed * $7 + $4, rep_failed = rep_failed * $7,
                  checks_passed = checks_passed + 1
WHERE id = $1
RETURNING rep_passed, rep_failed, graduated_at IS NOT NULL AS graduated
"""
# reputation._passes_since_last_failure, as SQL: probation is served again after each failure.
GRADUATE = """
UPDATE miners SET graduated_at = $2
WHERE id = $1 AND graduated_at IS NULL
  AND (SELECT count(*) FROM trust_checks t
       WHERE t.miner_id = $1 AND t.kind <> 'feedback' AND t.passed
         AND t.id > (SELECT coalesce(max(f.id), 0) FROM trust_checks f
                     WHERE f.miner_id = $1 AND f.kind <> 'feedback' AND NOT f.passed)) >= $3
RETURNING id
"""

# checkjobs.copy in one statement: the copy's session gets the turns a lease of the origin shows
# before its prompt (checkjobs.history_of: the latest $3, oldest first), then the prompt as its
# own user turn, in that order (one INSERT, so the ids keep it); the job itself copies the
# origin's prompt, context, model and options and is never leased to $8 (returned_at $9: never).
COPY = """
WITH this_turn AS (SELECT id FROM chat_logs WHERE job_id = $1 AND role = 'user'),
earlier AS (
    SELECT l.id, l.role, l.message FROM chat_logs l, chat_jobs o
    WHERE o.id = $1 AND l.session_id = o.session_id AND l.id < (SELECT id FROM this_turn)
    ORDER BY l.id DESC LIMIT $3),
job AS (
    INSERT INTO chat_jobs (id, business_id, session_id, prompt, context, status, attempts,
                           created_at, model, options, purpose, origin_job_id, check_model,
                           returned_by, returned_at)
    SELECT $2::text, NULL, $4::text, o.prompt, o.context, 'queued', 0, $5::timestamp, o.model,
           o.options, 'verify', coalesce(o.origin_job_id, o.id), $6::text, $7::int,
           $8::timestamp
    FROM chat_jobs o WHERE o.id = $1
    RETURNING id, prompt),
turns AS (
    INSERT INTO chat_logs (session_id, message, role, timestamp, business_id, job_id)
    SELECT $4::text, t.message, t.role, $5::timestamp, NULL, t.job_id FROM (
        SELECT 0 AS part, e.id AS n, e.role, e.message, NULL AS job_id FROM earlier e
        UNION ALL
        SELECT 1, 0, 'user', job.prompt, job.id FROM job) t
    ORDER BY t.part, t.n)
SELECT id FROM job
"""


def _answered(row: Any) -> Answered:
    return Answered(row["id"], row["purpose"], row["status"], row["miner_id"], row["response"],
                    row["output_tokens"], row["reported_tokens"], row["check_model"],
                    row["origin_job_id"], row["canary_id"])


def on_drivers(c: AppContext) -> bool:
    """Whether the judging's reads run here (PostgreSQL or SQLite on their drivers)."""
    return c.db.pg is not None or c.db.lite is not None


async def _fetch(c: AppContext, sql: str, *args: Any) -> list[Any]:
    if c.db.pg is not None:
        async with c.db.fast_reads() as conn:
            return list(await conn.fetch(sql, *args))
    assert c.db.lite is not None
    return await c.db.lite.fetch(sqlite(sql), *args)


async def job(c: AppContext, job_id: str) -> Answered | None:
    rows = await _fetch(c, JOB, job_id)
    return _answered(rows[0]) if rows else None


async def group(c: AppContext, origin_id: str) -> tuple[list[Answered], set[str]]:
    """The origin and its copies, oldest answer first, and the ids already judged."""
    rows = await _fetch(c, GROUP, origin_id)
    return [_answered(r) for r in rows], {r["id"] for r in rows if r["judged"]}


async def sampled(c: AppContext, job_ids: list[str]) -> list[Any]:
    """(id, model, options) of the sampled jobs still worth copying."""
    if c.db.pg is not None:
        return await _fetch(c, SAMPLED, job_ids)
    assert c.db.lite is not None  # (an array parameter on SQLite: JSON, read by json_each)
    return await c.db.lite.fetch(SAMPLED_LITE, orjson.dumps(job_ids).decode())


async def passed(conn: asyncpg.Connection, *, miner_id: int, kind: str, job_id: str | None,
                 now: datetime, weight: float, similarity: float | None,
                 keep: float) -> tuple[float, float, bool] | None:
    """A passed check of the wallet's work, in the connection's transaction: its reputation
    after it (rep_passed, rep_failed) and whether it has graduated; None: no such wallet."""
    row = await conn.fetchrow(PASSED, miner_id, kind, job_id, weight, similarity,
                              stored_utc(now), keep)
    return None if row is None else (row["rep_passed"], row["rep_failed"], row["graduated"])


async def graduate(conn: asyncpg.Connection, miner_id: int, now: datetime, after: int) -> bool:
    """Ends the wallet's probation if it passed `after` checks since its last failed one."""
    return await conn.fetchval(GRADUATE, miner_id, stored_utc(now), after) is not None


async def copy(conn: asyncpg.Connection, *, origin_id: str, check_model: str,
               exclude: int | None, now: datetime, history_limit: int,
               never: datetime) -> str | None:
    """A verification job for `origin_id`, in the connection's transaction: its id, or None if
    the origin is gone."""
    job_id = str(uuid.uuid4())
    written = await conn.fetchval(COPY, origin_id, job_id, history_limit, str(uuid.uuid4()),
                                  stored_utc(now), check_model, exclude,
                                  stored_utc(never) if exclude is not None else None)
    return written
