"""USD columns are exact: integer micro-dollars in the database, Decimal in Python."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import StatementError

from app.models import USD, Business, IdleJob, RevenueEvent


def test_binding_refuses_floats_and_sub_micro_amounts() -> None:
    bind = USD.process_bind_param
    assert bind(Decimal("1.000001"), None) == 1_000_001
    assert bind(3, None) == 3_000_000
    with pytest.raises(TypeError):
        bind(0.1, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        bind(Decimal("0.0000001"), None)
    assert USD.process_result_value(1_000_001, None) == Decimal("1.000001")


async def test_sums_are_exact_in_sql(any_db, settings_factory) -> None:  # type: ignore[no-untyped-def]
    from app.db import Database
    db = Database(any_db)
    try:
        amounts = [Decimal("0.000001"), Decimal("0.1"), Decimal("0.2"), Decimal("12345678.9")] * 250
        async with db.transaction() as session:
            session.add(Business(name="b"))
            for i, amount in enumerate(amounts):
                job = IdleJob(prompt="p", status="completed", max_tokens=1, attempts=0,
                              runpod_attempts=0)
                session.add(job)
                await session.flush()
                session.add(RevenueEvent(idle_job_id=job.id, amount_usd=amount, source="miner",
                                         output_tokens=i))
        async with db.sessions() as session:
            total = (await session.execute(select(func.sum(RevenueEvent.amount_usd)))).scalar_one()
        assert total == sum(amounts) == Decimal("3086419800.000250")
        with pytest.raises(StatementError):
            async with db.transaction() as session:
                session.add(RevenueEvent(idle_job_id=1, amount_usd=0.3, source="miner",
                                         output_tokens=1))
    finally:
        await db.dispose()
