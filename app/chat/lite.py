"""The chat job's hot path on SQLite (app/lite.py: the stdlib driver, no ORM): the same four
steps as app/chat/pg.py, each ONE transaction run in one hop to the writer thread (submit,
lease, complete) or one statement on the reader thread (read). Where SQLite can run pg.py's
statement its text is used as it is (app/sqltext.py names the differences); where it cannot
(PostgreSQL's data-modifying CTEs) the statements below stand for it, in the same order and with
the same conditions, so a rule changed in one must be changed in the other (tests run both).
"""

from __future__ import annotations

import sqlite3
import uuid
from datetime import datetime, timedelta
from typing import Any

import orjson

from app import observability
from app.chat import pg
from app.chat.options import assignment
from app.chat.schemas import ChatAssignment, HistoryItem
from app.leases.protocol import Completion, NeedsTransaction
from app.lite import Lite, db_time, read_time
from app.models import ChatJob
from app.sqltext import as_list, sqlite

# pg.SUBMIT, in three statements: claim the session if it may be claimed, write the job only if
# the session is this business's (`business_id IS NOT DISTINCT FROM`), then the user's turn.
CLAIM = """
INSERT INTO chat_sessions (session_id, business_id, created_at) VALUES (?1, ?2, ?3)
ON CONFLICT DO NOTHING
"""
JOB = """
INSERT INTO chat_jobs (id, business_id, session_id, prompt, context, status, attempts,
                       created_at, model, options, api_key_id)
SELECT ?4, ?2, ?1, ?5, ?6, 'queued', 0, ?3, ?7, ?8, ?9
WHERE EXISTS (SELECT 1 FROM chat_sessions WHERE session_id = ?1
              AND business_id IS NOT DISTINCT FROM ?2)
"""
TURN = """
INSERT INTO chat_logs (session_id, message, role, timestamp, business_id, job_id)
VALUES (?1, ?2, ?3, ?4, ?5, ?6)
"""

# pg.LEASE's UPDATE, its very text (the cooldown rule of app/leases/rules.not_returned_by),
# then each leased job's earlier turns (the json_agg of pg.LEASE) by HISTORY.
LEASE = sqlite(pg.LEASE_UPDATE)
HISTORY = """
SELECT role, message FROM (
    SELECT c.id, c.role, c.message FROM chat_logs c
    WHERE c.session_id = ?1 AND c.business_id IS NOT DISTINCT FROM ?2
      AND c.id < (SELECT u.id FROM chat_logs u WHERE u.job_id = ?3 AND u.role = 'user')
    ORDER BY c.id DESC LIMIT ?4)
ORDER BY id
"""

# pg.COMPLETE in three statements: the jobs whose lease is current (one UPDATE for the batch,
# posted as a JSON array of rows), their assistant turns, one credit for the miner. `tokens`
# is capped at the job's max_tokens as in pg.COMPLETE (options.capped).
COMPLETE = """
WITH posted(job_id, lease_id, output, tokens, signature, reported, finish) AS (
    SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6
    FROM json_each(?1))
UPDATE chat_jobs SET status = 'completed', completed_at = ?3, lease_expires_at = NULL,
                     response = p.output,
                     output_tokens = min(p.tokens, coalesce(
                         json_extract(chat_jobs.options, '$.max_tokens'), p.tokens)),
                     reported_tokens = p.reported, signature = p.signature,
                     finish_reason = p.finish
FROM posted p
WHERE chat_jobs.id = p.job_id AND chat_jobs.lease_id = p.lease_id
  AND chat_jobs.status = 'assigned' AND chat_jobs.miner_id = ?2
  AND chat_jobs.lease_expires_at > ?3
RETURNING id, session_id, business_id, response, output_tokens, purpose, hold_usd
"""
CREDIT = """
UPDATE miners SET job_count = job_count + ?2, tokens_generated = tokens_generated + ?3,
                  last_active = ?4
WHERE id = ?1
"""


def _submit(conn: sqlite3.Connection, session_id: str, business_id: int | None, now: str,
            job_id: str, prompt: str, context: str | None, may_claim: bool, model: str | None,
            options: str | None, api_key_id: int | None) -> bool:
    if may_claim:
        conn.execute(CLAIM, (session_id, business_id, now))
    if conn.execute(JOB, (session_id, business_id, now, job_id, prompt, context, model,
                          options, api_key_id)).rowcount != 1:
        return False
    conn.execute(TURN, (session_id, prompt, "user", now, business_id, job_id))
    return True


async def submit(lite: Lite, *, job_id: str, business_id: int | None, session_id: str,
                 may_claim: bool, prompt: str, context: str | None, now: datetime,
                 model: str | None = None, options: str | None = None,
                 api_key_id: int | None = None) -> bool:
    """Whether the job was written (pg.submit): not when the session may not be claimed (an
    anonymous caller's unknown id). SQLite has one writer at a time, so no concurrent claim
    can slip in between the statements."""
    return await lite.write(_submit, session_id, business_id, db_time(now), job_id, prompt,
                            context, may_claim, model, options, api_key_id)


def _lease(conn: sqlite3.Connection, keys: str, lease_id: str, expires: str, miner_id: int,
           now: str, since: str, max_attempts: int, history_limit: int) -> list[Any]:
    rows = conn.execute(LEASE, (keys, lease_id, expires, miner_id, now, history_limit, since,
                                max_attempts)).fetchall()
    return [(r, conn.execute(HISTORY, (r["session_id"], r["business_id"], r["id"],
                                       history_limit)).fetchall()) for r in rows]


async def lease(lite: Lite, keys: list[str], miner_id: int, lease_s: int, now: datetime,
                history_limit: int, cooldown_s: int = 0,
                max_attempts: int = 1 << 30) -> list[ChatAssignment]:
    lease_id = str(uuid.uuid4())
    expires = now + timedelta(seconds=lease_s)
    leased = await lite.write(_lease, as_list(keys), lease_id, db_time(expires), miner_id,
                              db_time(now), db_time(now - timedelta(seconds=cooldown_s)),
                              max_attempts, history_limit)
    order = {key: i for i, key in enumerate(keys)}
    leased.sort(key=lambda rh: order.get(rh[0]["id"], 0))  # in the queue's order
    observability.observe_dispatched("chat", now, ((r["attempts"], read_time(r["created_at"]),
                                                    r["id"]) for r, _ in leased))
    return [assignment(job_id=r["id"], lease_id=lease_id, expires_at=expires, prompt=r["prompt"],
                       context=r["context"], session_id=r["session_id"],
                       history=[HistoryItem(role=h[0], content=h[1]) for h in history],
                       attempt=r["attempts"], model=r["model"], raw_options=r["options"])
            for r, history in leased]


def _complete(conn: sqlite3.Connection, posted: str, miner_id: int,
              now: str) -> list[sqlite3.Row]:
    rows = conn.execute(COMPLETE, (posted, miner_id, now)).fetchall()
    if any(r["hold_usd"] is not None for r in rows):
        # held while chat was priced, completed after: charged by the SQLAlchemy step, whose
        # transaction settles it with the result (raising rolls this one back)
        raise NeedsTransaction()
    if rows:
        conn.executemany(TURN, [(r["session_id"], r["response"], "assistant", now,
                                 r["business_id"], r["id"]) for r in rows])
        conn.execute(CREDIT, (miner_id, len(rows), sum(r["output_tokens"] for r in rows), now))
    return rows


async def complete(lite: Lite, done: list[Completion]) -> list[Any]:
    """pg.complete: for each result (ResultOut, tokens) if it won, else None."""
    first: dict[str, Completion] = {}
    for c in done:
        first.setdefault(c.job_id, c)
    now, miner_id = done[0].now, done[0].miner_id
    posted = orjson.dumps([[c.job_id, c.lease_id, c.output, c.tokens, c.signature,
                            c.reported_tokens, c.finish_reason] for c in first.values()]).decode()
    rows = await lite.write(_complete, posted, miner_id, db_time(now))
    # (the purpose itself, not `purpose IS NOT NULL`: SQLite 3.40 answered 1 for a NULL
    # purpose in this UPDATE ... FROM's RETURNING)
    won = {r["id"]: (r["session_id"], r["output_tokens"], r["purpose"] is not None)
           for r in rows}
    return pg.answers(done, first, won, now)


async def read(lite: Lite, job_id: str) -> ChatJob | None:
    """pg.read: the job as a waiter sees it (pg.READ's text, run on SQLite)."""
    row = await lite.fetchrow(sqlite(pg.READ), job_id)
    return None if row is None else pg.read_job(row, read_time)
