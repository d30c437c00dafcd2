"""Regressions: Prometheus label escaping; concurrent API keys for a new business."""

from __future__ import annotations

import asyncio

from sqlalchemy import update

from app.models import IdleJob
from app.ops import metrics
from tests.idle.support import submit
from tests.support.harness import running_app


async def test_prometheus_label_values_are_escaped(api):  # type: ignore[no-untyped-def]
    """Statuses come from the database (seed rows included): a quote, backslash or newline in
    a label value must be escaped, or the whole exposition fails to parse."""
    key = await api.api_key("outside-co", "idle")
    created = await submit(api, key)
    async with api.ctx.db.transaction() as s:
        await s.execute(update(IdleJob).where(IdleJob.id == int(created["job_id"]))
                        .values(status='a"b\\c\nd'))
    text = metrics.as_prometheus(await metrics.collect(api.ctx))
    assert 'status="a\\"b\\\\c\\nd"' in text
    for line in text.splitlines():
        assert line.startswith("# ") or line.startswith("mia_"), repr(line)


async def test_concurrent_keys_for_a_new_business_are_both_created(any_db, settings_factory):  # type: ignore[no-untyped-def]
    """Two operators (or a retried request) creating the first keys of one business at once:
    the losing INSERT of the business must not turn into a 500."""
    from tests.idle.support import auth, new_operator, operator_token

    operator = new_operator()
    async with running_app(settings_factory(any_db, operator_addresses=[operator.address])) as api:
        token = await operator_token(api.client, operator)
        for round_ in range(5):
            rs = await asyncio.gather(*(
                api.client.post("/api-keys", json={"business": f"new-co-{round_}", "scopes": ["idle"]},
                                headers=auth(token)) for _ in range(4)))
            assert [r.status_code for r in rs] == [201] * 4, [r.text for r in rs]
            assert len({r.json()["key"] for r in rs}) == 4
