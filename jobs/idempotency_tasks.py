"""Idempotency-Key housekeeping for the arq worker: WHEN keys older than IDEMPOTENCY_KEY_TTL_S
are deleted (hourly). WHAT is app/idempotency.py; an expired key already counts as new there, so
this only keeps the table small. Idempotent: two workers delete the same rows twice over."""

from __future__ import annotations

import logging
from typing import Any

from app import idempotency
from app.context import AppContext

log = logging.getLogger("jobs.idempotency")
PRUNE_MINUTE = {23}  # once an hour, off the minutes other crons use


async def prune_idempotency_keys(ctx: dict[str, Any]) -> int:
    app: AppContext = ctx["app"]
    async with app.db.transaction() as session:
        deleted = await idempotency.prune(session, app.settings.idempotency_key_ttl_s)
    if deleted:
        log.info("deleted %d expired idempotency keys", deleted)
    return deleted
