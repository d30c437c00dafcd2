"""Helpers for account tests: an app with an operator signed in, businesses made over HTTP."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from app.config import Settings
from tests.idle.support import auth, new_operator, operator_token
from tests.support.harness import Harness, running_app


@dataclass
class Ops:
    api: Harness
    headers: dict[str, str]  # the operator's session

    async def business(self, name: str = "acme", **fields: Any) -> dict[str, Any]:
        r = await self.api.client.post("/businesses", json={"name": name, **fields},
                                       headers=self.headers)
        assert r.status_code == 201, r.text
        return r.json()  # type: ignore[no-any-return]

    async def key(self, business_id: int, scopes: list[str] | None = None,
                  **fields: Any) -> dict[str, Any]:
        r = await self.api.client.post(f"/businesses/{business_id}/keys",
                                       json={"scopes": scopes or ["chat", "idle"], **fields},
                                       headers=self.headers)
        assert r.status_code == 201, r.text
        return r.json()  # type: ignore[no-any-return]

    async def credit(self, business_id: int, amount: str, reference: str,
                     path: str = "credits", **fields: Any) -> Any:
        return await self.api.client.post(f"/businesses/{business_id}/{path}",
                                          json={"amount_usd": amount, "reference": reference,
                                                **fields}, headers=self.headers)


@contextlib.asynccontextmanager
async def operating(settings_factory: Any, database_url: str, **overrides: Any
                    ) -> AsyncIterator[Ops]:
    operator = new_operator()
    settings: Settings = settings_factory(database_url, operator_addresses=[operator.address],
                                          **overrides)
    async with running_app(settings) as api:
        yield Ops(api, auth(await operator_token(api.client, operator)))
