"""The client IP behind proxies (FORWARDED_ALLOW_IPS): the right-most X-Forwarded-For entry that
is not a trusted proxy, never the caller-written left-most one; `*` is refused.

Over real HTTP, served as `mia serve` serves (app/serving.py): the test client connects from
127.0.0.1, which plays the trusted proxy, and each request carries the chain a proxy would have
built: whatever the caller sent, then the address the proxy saw."""

from __future__ import annotations

import itertools

import httpx
import pytest
from eth_account import Account
from pydantic import ValidationError

from app.config import Settings
from app.serving import uvicorn_limits
from tests.support.live import live_server

ADDRESS = Account.create().address
spoofs = (f"198.18.{i // 250}.{i % 250}" for i in itertools.count())  # a new "client" each time


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_star_is_refused_with_the_reason() -> None:
    for value in ("*", "10.0.0.1,*"):
        with pytest.raises(ValidationError, match="pick its own client IP"):
            settings(forwarded_allow_ips=value)


def test_addresses_and_cidr_ranges_are_accepted_and_typos_refused() -> None:
    s = settings(forwarded_allow_ips=" 10.0.0.0/8, 127.0.0.1 ,fd00::/8,192.168.1.7/24")
    assert s.forwarded_allow_ips == ["10.0.0.0/8", "127.0.0.1", "fd00::/8", "192.168.1.0/24"]
    assert settings(forwarded_allow_ips="").forwarded_allow_ips == []  # trust no proxy
    for typo in ("10.0.0.0/33", "proxy.internal", "10.0.0"):
        with pytest.raises(ValidationError, match="not an IP address or a CIDR range"):
            settings(forwarded_allow_ips=typo)


def nonce(http: httpx.Client, chain: str | None) -> int:
    headers = {"X-Forwarded-For": chain} if chain is not None else {}
    return http.get("/auth/nonce", params={"address": ADDRESS}, headers=headers).status_code


def test_sign_in_limit_counts_the_rightmost_untrusted_hop(settings_factory) -> None:  # type: ignore[no-untyped-def]
    s = settings_factory(rate_limit_signin_per_min=3,
                         forwarded_allow_ips="127.0.0.1,10.0.0.0/8")
    with live_server(s, **uvicorn_limits(s)) as url, httpx.Client(base_url=url) as http:
        # The caller forges a new left-most entry every time; an inner proxy (10.x, trusted)
        # appended the address it saw. The caller is 203.0.113.7 each time, and is counted so.
        codes = [nonce(http, f"{next(spoofs)}, 203.0.113.7, 10.1.2.3") for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        # Forging the caller's own address as a "trusted" hop does not help either.
        assert nonce(http, f"{next(spoofs)}, 10.9.9.9, 203.0.113.7") == 429
        # Another client behind the same proxy keeps its own bucket: one caller cannot use up
        # the sign-in limit of everyone behind the proxy.
        assert nonce(http, f"{next(spoofs)}, 198.51.100.9") == 200


def test_an_untrusted_peer_cannot_choose_its_ip(settings_factory) -> None:  # type: ignore[no-untyped-def]
    s = settings_factory(rate_limit_signin_per_min=3, forwarded_allow_ips="10.0.0.1")
    with live_server(s, **uvicorn_limits(s)) as url, httpx.Client(base_url=url) as http:
        # 127.0.0.1 is no trusted proxy here: its X-Forwarded-For is ignored, every request
        # counts on 127.0.0.1 whatever it claims.
        codes = [nonce(http, next(spoofs)) for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        assert nonce(http, None) == 429


async def test_the_app_resolves_the_client_ip_under_any_server(settings_factory) -> None:  # type: ignore[no-untyped-def]
    # In-process (no uvicorn at all): the app applies FORWARDED_ALLOW_IPS itself.
    from tests.support.harness import running_app

    async with running_app(settings_factory(rate_limit_signin_per_min=2)) as api:
        async def get(chain: str) -> int:
            r = await api.client.get("/auth/nonce", params={"address": ADDRESS},
                                     headers={"X-Forwarded-For": chain})
            return r.status_code
        assert [await get(f"{next(spoofs)}, 203.0.113.50") for _ in range(3)] == [200, 200, 429]
        assert await get("203.0.113.51") == 200
