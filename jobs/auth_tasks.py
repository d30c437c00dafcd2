"""Auth housekeeping for the arq worker: WHEN expired session tokens are deleted. WHAT is deleted
is app/auth/sessions.py.

Registered in jobs/worker.py's CRONS as
`(auth_tasks.prune_expired_tokens, dict(minute=auth_tasks.PRUNE_MINUTE, second={0}))`: hourly.
It is idempotent, so two workers running it at once only delete the same rows twice over.
"""

from __future__ import annotations

import logging
from typing import Any

from app.auth.sessions import prune_expired_tokens as prune
from app.context import AppContext

log = logging.getLogger("jobs.auth")
PRUNE_MINUTE = {17}  # once an hour, off the hour when other crons run


async def prune_expired_tokens(ctx: dict[str, Any]) -> int:
    app: AppContext = ctx["app"]
    async with app.db.transaction() as session:
        deleted = await prune(session)
    if deleted:
        log.info("deleted %d expired session tokens", deleted)
    return deleted
