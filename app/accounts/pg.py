"""billing.settle for a batch, as one statement on the PostgreSQL hot path (asyncpg): what the chat
batch completion (app/chat/pg.py) runs, in its transaction, for the completed jobs that held
money. Same rules as ledger.settle, written in SQL over the stored integer micro-dollars:
release the whole hold, charge the tokens (capped at those held for) at the held price, half
up, never more than the hold; book the charge as revenue (RevenueEvent.ledger_entry_id).

The businesses' rows are locked in id order before they are moved: two batches that touch the
same businesses wait for each other instead of deadlocking.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import asyncpg

from app.models import MICRO_PER_USD, USD_PLACES, stored_utc

SETTLE = """
WITH posted AS (
    SELECT * FROM unnest($1::text[], $2::int[]) AS p(job_id, tokens)),
held AS (
    SELECT h.business_id, h.job_id, h.api_key_id, h.model, -h.amount_usd AS hold,
           LEAST(p.tokens, coalesce(h.tokens, p.tokens)) AS tokens,
           coalesce(h.price_per_1k_usd, 0) AS price
    FROM posted p JOIN ledger_entries h
      ON h.job_kind = $3 AND h.job_id = p.job_id AND h.kind = 'hold'
    WHERE NOT EXISTS (SELECT 1 FROM ledger_entries r WHERE r.job_kind = $3
                      AND r.job_id = p.job_id AND r.kind = 'release')),
priced AS (
    SELECT *, LEAST((tokens::bigint * price + 500) / 1000, hold) AS charge FROM held),
locked AS (
    SELECT b.id FROM businesses b WHERE b.id IN (SELECT business_id FROM priced)
    ORDER BY b.id FOR NO KEY UPDATE),
moved AS (
    UPDATE businesses b SET balance_usd = b.balance_usd + d.delta
    FROM (SELECT business_id, sum(hold - charge)::bigint AS delta FROM priced
          GROUP BY business_id) d
    WHERE b.id = d.business_id AND b.id IN (SELECT id FROM locked)),
released AS (
    INSERT INTO ledger_entries (business_id, kind, amount_usd, job_kind, job_id, api_key_id,
                                model, created_at)
    SELECT business_id, 'release', hold, $3, job_id, api_key_id, model, $4 FROM priced),
charged AS (
    INSERT INTO ledger_entries (business_id, kind, amount_usd, job_kind, job_id, api_key_id,
                                model, tokens, price_per_1k_usd, actor, created_at)
    SELECT business_id, 'charge', -charge, $3, job_id, api_key_id, model, tokens, price,
           'system', $4 FROM priced
    RETURNING id, job_id, -amount_usd AS charge, tokens),
booked AS (
    INSERT INTO revenue_events (amount_usd, source, output_tokens, created_at, ledger_entry_id)
    SELECT charge, $5, tokens, $4, id FROM charged)
SELECT job_id, charge FROM charged
"""


async def settle(conn: asyncpg.Connection, job_kind: str, done: list[tuple[str, int]],
                 now: datetime, source: str) -> dict[str, Decimal]:
    """Settle these just-completed jobs (job id, the server's token count), those with an
    unreleased hold: {job id: USD charged}."""
    if not done:
        return {}
    rows = await conn.fetch(SETTLE, [j for j, _ in done], [t for _, t in done], job_kind,
                            stored_utc(now), source)
    return {r["job_id"]: (Decimal(r["charge"]) / MICRO_PER_USD).quantize(USD_PLACES)
            for r in rows}
