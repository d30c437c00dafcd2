"""Long waits are spread (app/leases/endpoints.py POLL_SPREAD): miners whose long-polls started
together must not all poll again together, or an API process answers a herd at once every
`wait` seconds (bench `hold` after its sign-ins: /health stalled for a second or two each time)."""

from __future__ import annotations

import asyncio
import time

from app.leases.endpoints import POLL_SPREAD, SPREAD_FROM_S, spread
from tests.leases.test_batch_protocol import batch
from tests.support.harness import running_app


def test_a_long_wait_ends_in_its_last_fifth_and_a_short_one_keeps_its_length() -> None:
    assert spread(0) == 0 and spread(2.0) == 2.0 and spread(SPREAD_FROM_S - 0.01) == 4.99
    waits = [spread(30.0) for _ in range(2000)]
    low = 30.0 * (1 - POLL_SPREAD)
    assert all(low <= w <= 30.0 for w in waits)
    assert min(waits) < low + 0.5 and max(waits) > 29.5  # the whole fifth is used


async def test_polls_started_together_end_apart(settings_factory) -> None:  # type: ignore[no-untyped-def]
    async with running_app(settings_factory()) as api:
        miners = [await api.miner() for _ in range(8)]

        async def poll(m):  # type: ignore[no-untyped-def]
            started = time.monotonic()
            assert await batch(m, 4, wait=SPREAD_FROM_S) == []
            return time.monotonic() - started

        took = await asyncio.gather(*(poll(m) for m in miners))
        assert all(SPREAD_FROM_S * (1 - POLL_SPREAD) - 0.05 <= t <= SPREAD_FROM_S + 1 for t in took)
        # eight uniform draws over a second all within 0.2 s of each other: about 1 in 10,000
        assert max(took) - min(took) > 0.2, took
