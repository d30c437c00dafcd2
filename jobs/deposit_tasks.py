"""Deposit tasks for the arq worker: WHEN the treasury's incoming stablecoin Transfers are read.
WHAT a pass does (credit at CONFIRMATIONS, drop or reverse on a reorg) is app/accounts/deposits.

Registered in jobs/worker.py as the scan_deposits cron (every second, throttled to
DEPOSIT_SCAN_INTERVAL_S). Without a chain or a configured treasury it does nothing; an error
(the node down, a timeout) is logged and the next pass reads the same blocks again: the cursor
only moves after a pass that completed.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from app.accounts import deposits
from app.context import AppContext
from app.errors import AppError

log = logging.getLogger("jobs.deposits")


async def scan_deposits(ctx: dict[str, Any]) -> int | None:
    """One deposit pass when DEPOSIT_SCAN_INTERVAL_S has passed since the last; returns the
    number of deposits credited by it (None when it did not run)."""
    app: AppContext = ctx["app"]
    now = time.monotonic()
    if app.chain is None or now < ctx.get("deposits_next_scan", 0.0):
        return None
    ctx["deposits_next_scan"] = now + app.settings.deposit_scan_interval_s
    try:
        result = await deposits.scan(app)
    except AppError as exc:  # the treasury is not configured (503): nothing to watch
        if not ctx.get("deposits_unconfigured_logged"):
            log.info("deposits are not watched: %s", exc.detail)
            ctx["deposits_unconfigured_logged"] = True
        return None
    except Exception as exc:  # provider errors of any kind: the next pass retries
        log.warning("deposit scan failed (%s); retrying in %.0f s", type(exc).__name__,
                    app.settings.deposit_scan_interval_s)
        return None
    return len(result.credited)
