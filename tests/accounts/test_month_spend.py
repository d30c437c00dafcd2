"""A key's monthly spend (billing.month_spend): a job counts in the calendar month (UTC) of its
hold, whatever month it completes or fails in; open holds count in full, completed jobs their
charge, failed ones nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from app.accounts import billing, ledger
from app.accounts.ledger import JobRef
from app.accounts.keys import create_api_key
from tests.accounts.ledger_support import check_invariants
from tests.support.harness import running_app

JAN_31 = datetime(2026, 1, 31, 23, 59, 59, tzinfo=UTC)
FEB_1 = datetime(2026, 2, 1, 0, 0, 0, tzinfo=UTC)
PRICE = Decimal("0.002")


async def test_a_job_counts_in_the_month_of_its_hold(any_db, settings_factory):  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(any_db)) as api:
        db = api.ctx.db
        async with db.transaction() as s:
            key, _ = await create_api_key(s, "outside-co", "idle")
            await ledger.credit(s, key.business_id, Decimal(1), reference="inv-1", actor="test")

        async def hold(job_id: str, now: datetime) -> None:
            async with db.transaction() as s:
                await ledger.hold(s, key.business_id, JobRef("idle", job_id),
                                  ledger.price_of(100, PRICE), tokens=100, price_per_1k_usd=PRICE,
                                  api_key_id=key.id, now=now)

        await hold("1", JAN_31)  # completes in February: 10 tokens
        await hold("2", JAN_31)  # fails in February
        await hold("3", JAN_31)  # still open
        await hold("4", FEB_1)  # completes in February: 50 tokens
        async with db.transaction() as s:
            await billing.settle(s, "idle", "1", 10, source="miner", now=FEB_1)
            await billing.release(s, "idle", ["2"])
            await billing.settle(s, "idle", "4", 50, source="miner", now=FEB_1)
        async with db.sessions() as s:
            january = await billing.month_spend(s, key.id, JAN_31)
            february = await billing.month_spend(s, key.id, FEB_1)
        assert january == Decimal("0.000020") + Decimal("0.000200")  # charge of 1, hold of 3
        assert february == Decimal("0.000100")  # charge of 4
        assert billing.month_start(datetime(2026, 3, 15, 1, tzinfo=UTC)) == datetime(
            2026, 3, 1, tzinfo=UTC)
        assert billing.next_month_start(datetime(2026, 12, 31, 23, tzinfo=UTC)) == datetime(
            2027, 1, 1, tzinfo=UTC)
        await check_invariants(api)


