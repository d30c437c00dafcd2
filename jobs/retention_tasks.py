"""Retention for the arq worker: WHEN conversation content past its retention period is erased
(CHAT_RETENTION_DAYS, or a business's own retention_days). WHAT is app/accounts/retention.py.

The cron looks every minute; a Redis key that lives RETENTION_INTERVAL_S lets one run in that
interval go ahead (SET NX), whichever worker gets there first. Idempotent: what a run erased
is not found by the next, and a run cut short is finished by the next one."""

from __future__ import annotations

import logging
from typing import Any

from app.accounts import retention
from app.context import AppContext

log = logging.getLogger("jobs.retention")
RETENTION_SECOND = {41}  # once a minute, off the seconds other crons use


def due_key(app: AppContext) -> str:
    return f"{app.settings.redis_prefix}:retention:due"


async def erase_expired_content(ctx: dict[str, Any]) -> int:
    """Content erased by this run (jobs + messages); 0 when not due or nothing expired."""
    app: AppContext = ctx["app"]
    interval = max(1, int(app.settings.retention_interval_s))
    if not await app.redis.set(due_key(app), "1", nx=True, ex=interval):
        return 0
    done = await retention.erase_expired(app)
    for d in done:
        log.info("retention: erased %d job(s) and %d message(s) of business %s older than %s "
                 "(erasure %d)", d.jobs, d.messages, d.business_id, d.before.isoformat(),
                 d.erasure_id)
    return sum(d.jobs + d.messages for d in done)
