"""`mia business create | credit | key`, as an operator types them."""

from __future__ import annotations

import logging
import re
from decimal import Decimal

import pytest
from sqlalchemy import select

from app.accounts import ledger
from app.cli import main as mia
from app.db import Database
from app.models import ApiKey, Business
from tests.idle.support import auth
from tests.support.harness import running_app


@pytest.fixture
def keep_log_levels():  # type: ignore[no-untyped-def]
    """`mia` sets up logging process-wide (its root handler writes to this test's captured
    stderr, closed after it; noisy loggers quieted): later tests must inherit none of it."""
    root = logging.getLogger()
    handlers, root_level = list(root.handlers), root.level
    saved = {name: logging.getLogger(name).level for name in ("alembic", "httpx", "arq")}
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(root_level)


async def test_business_commands(any_db, settings_factory, monkeypatch, capsys, keep_log_levels):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DATABASE_URL", any_db)
    assert await _run(["business", "create", "Acme Bikes", "--email", "hi@acme.example",
                       "--phone", "+1 555 0100"]) == 0
    out = capsys.readouterr().out
    found = re.search(r"business (\d+) 'Acme Bikes' created; deposit_ref: ([0-9a-f]{16})", out)
    assert found, out
    business_id, ref = int(found.group(1)), found.group(2)

    assert await _run(["business", "create", "Acme Bikes"]) == 2
    assert "exists" in capsys.readouterr().err
    assert await _run(["business", "create", "Bad", "--email", "nope"]) == 2
    assert "contact_email" in capsys.readouterr().err

    assert await _run(["business", "credit", str(business_id), "25.50", "--reference", "inv-1"]) == 0
    assert "balance 25.500000 USD" in capsys.readouterr().out
    assert await _run(["business", "credit", str(business_id), "25.50", "--reference", "inv-1"]) == 0
    assert "already credited" in capsys.readouterr().out
    for bad in (["x"], ["-1"], ["0"], ["1.0000001"], ["2000000"]):
        assert await _run(["business", "credit", str(business_id), *bad, "--reference", "r"]) == 2
        assert "AMOUNT" in capsys.readouterr().err
    assert await _run(["business", "credit", "4242", "1", "--reference", "r"]) == 2
    assert "no such business" in capsys.readouterr().err

    assert await _run(["business", "key", str(business_id), "--scopes", "chat,idle",
                       "--monthly-limit", "50"]) == 0
    printed = capsys.readouterr().out
    key = printed.strip().rsplit(" ", 1)[-1]
    assert key.startswith("mia_k_") and "monthly limit 50 USD" in printed
    assert await _run(["business", "key", str(business_id), "--scopes", "gold"]) == 2
    assert await _run(["business", "key", str(business_id), "--monthly-limit", "lots"]) == 2
    capsys.readouterr()

    db = Database(any_db)
    try:
        async with db.sessions() as s:
            b = (await s.execute(select(Business).where(Business.id == business_id))).scalar_one()
            assert (b.deposit_ref, b.contact_email, b.contact_phone) == (
                ref, "hi@acme.example", "+1 555 0100")
            assert await ledger.sum_of_entries(s, business_id) == Decimal("25.5") == b.balance_usd
            k = (await s.execute(select(ApiKey).where(ApiKey.business_id == business_id))
                 ).scalar_one()
            assert k.monthly_limit_usd == Decimal(50) and k.scopes == "chat,idle"
    finally:
        await db.dispose()
    async with running_app(settings_factory(any_db)) as api:
        r = await api.client.get("/account", headers=auth(key))
        assert r.status_code == 200 and r.json()["balance_usd"] == "25.500000"


async def _run(argv: list[str]) -> int:
    """`mia` runs its own event loop (asyncio.run): off this test's loop, in a thread."""
    import asyncio

    return await asyncio.to_thread(mia, argv)
