"""API keys and session tokens share one cache but never stand in for each other: the wrong kind
of secret is a 401 on every endpoint, warm cache or cold."""

from __future__ import annotations

from tests.support.harness import running_app


async def test_a_session_token_is_no_api_key_and_an_api_key_no_session_token(settings_factory) -> None:  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(auth_cache_ttl_s=3600)) as api:
        key = await api.api_key("acme", "chat,idle")
        miner = await api.miner()
        for _ in range(2):  # cold, then with both secrets remembered by the process
            assert (await api.chat(key)).status_code == 202
            await miner.next_job()  # the token is now remembered too
            r = await api.chat(miner.token)  # a session token on /chat
            assert r.status_code == 401 and r.json()["error"] == "invalid_api_key", r.text
            r = await api.client.post("/idle-job", json={"prompt": "p"},
                                      headers=miner.auth)
            assert r.status_code == 401 and r.json()["error"] == "invalid_api_key", r.text
            for path in ("/job/next", "/idle-job/next"):  # an API key on the miner endpoints
                r = await api.client.get(path, params={"wait": 0},
                                         headers={"Authorization": f"Bearer {key}"})
                assert r.status_code == 401 and r.json()["error"] == "invalid_token", r.text


def count_reads(api, table: str) -> list[str]:  # type: ignore[no-untyped-def]
    """Every statement the app sends that reads `table` (sync engine events; no mock)."""
    from sqlalchemy import event

    seen: list[str] = []

    def record(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        if f"FROM {table}" in statement:
            seen.append(statement)
    event.listen(api.ctx.db.engine.sync_engine, "before_cursor_execute", record)
    return seen


async def test_a_bogus_secret_costs_one_database_read(settings_factory) -> None:  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(rate_limit_auth_fail_per_min=100)) as api:
        keys, tokens = count_reads(api, "api_keys"), count_reads(api, "auth_tokens")
        for _ in range(5):
            assert (await api.chat("mia_k_bogus")).status_code == 401
            r = await api.client.get("/job/next", headers={"Authorization": "Bearer mia_t_x"})
            assert r.status_code == 401 and r.json()["error"] == "invalid_token"
        assert len(keys) == 1 and len(tokens) == 1


async def test_failed_authentications_are_limited_per_ip(settings_factory) -> None:  # type: ignore[no-untyped-def]
    settings = settings_factory(rate_limit_auth_fail_per_min=3, auth_cache_ttl_s=3600)
    async with running_app(settings) as api:
        good, unused = await api.api_key("acme"), await api.api_key("beta")
        assert (await api.chat(good)).status_code == 202  # remembered from here on
        codes = [(await api.chat(f"mia_k_guess{i}")).status_code for i in range(4)]
        assert codes == [401, 401, 401, 429]
        reads = count_reads(api, "api_keys")
        r = await api.chat("mia_k_guess-again")
        assert r.status_code == 429 and 15 <= int(r.headers["retry-after"]) <= 20
        # Until then this IP's unknown secrets are refused from memory: no database read (a
        # valid key it has not used yet included), while a remembered key still works.
        assert (await api.chat(unused)).status_code == 429
        assert reads == []
        assert (await api.chat(good)).status_code == 202
        # Another client (behind the trusted proxy) has its own budget.
        r = await api.client.post("/chat", json={"message": "hi"},
                                  headers={"Authorization": "Bearer mia_k_nope",
                                           "X-Forwarded-For": "203.0.113.9"})
        assert r.status_code == 401
