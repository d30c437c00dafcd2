"""Business API keys: operator endpoints and CLI; scopes; a key is shown once and never logged."""

from __future__ import annotations

import logging

import pytest

from app.cli import main as mia
from tests.accounts.ledger_support import business_of
from tests.idle.support import auth, new_operator, operator_token, submit
from tests.support.harness import FUNDS, running_app


async def test_operator_manages_keys_and_scopes_are_enforced(settings_factory, caplog):  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG)
    operator = new_operator()
    async with running_app(settings_factory(operator_addresses=[operator.address])) as api:
        token = await operator_token(api.client, operator)
        miner = await api.miner()

        # only operators
        assert (await api.client.post("/api-keys", json={"business": "x"})).status_code == 401
        r = await api.client.post("/api-keys", json={"business": "x"}, headers=miner.auth)
        assert r.status_code == 403 and r.json()["error"] == "insufficient_role"
        assert (await api.client.get("/api-keys", headers=miner.auth)).status_code == 403

        r = await api.client.post("/api-keys", json={"business": "outside-co", "scopes": ["idle"]},
                                  headers=auth(token))
        assert r.status_code == 201, r.text
        created = r.json()
        idle_key = created["key"]
        assert idle_key.startswith(created["prefix"]) and created["scopes"] == ["idle"]
        r = await api.client.post("/api-keys", json={"business": "shop", "scopes": ["chat"]},
                                  headers=auth(token))
        chat_key = r.json()["key"]
        r = await api.client.post("/api-keys", json={"business": "shop", "scopes": ["gold"]},
                                  headers=auth(token))
        assert r.status_code == 400 and r.json()["error"] == "invalid_scopes"

        later: list[str] = []
        # a 402 until the business has a balance to pay for idle jobs with
        r = await api.client.post("/idle-job", json={"prompt": "p"}, headers=auth(idle_key))
        assert r.status_code == 402 and r.json()["error"] == "insufficient_balance", r.text
        await api.fund(await business_of(api, idle_key), FUNDS)
        job = await submit(api, idle_key)  # the right scope works
        r = await api.client.get(f"/idle-job/{job['job_id']}", headers=auth(idle_key))
        later.append(r.text)

        r = await api.client.post("/idle-job", json={"prompt": "p"})
        assert r.status_code == 401 and r.json()["error"] == "missing_api_key"
        r = await api.client.post("/idle-job", json={"prompt": "p", "api_key": idle_key})
        assert r.status_code == 401  # the seed's body key is not accepted: header only
        r = await api.client.post("/idle-job", json={"prompt": "p"}, headers=auth("mia_k_nope"))
        assert r.status_code == 401 and r.json()["error"] == "invalid_api_key"
        r = await api.client.post("/idle-job", json={"prompt": "p"}, headers=auth(chat_key))
        assert r.status_code == 403 and r.json()["error"] == "insufficient_scope"
        r = await api.client.post("/chat", json={"message": "hi"}, headers=auth(idle_key))
        assert r.status_code == 403 and r.json()["error"] == "insufficient_scope"
        r = await api.client.post("/idle-job", json={"prompt": "p", "max_tokens": 5000},
                                  headers=auth(idle_key))
        assert r.status_code == 422

        r = await api.client.get("/api-keys", headers=auth(token))
        later.append(r.text)
        listed = {k["id"]: k for k in r.json()["keys"]}
        assert listed[created["id"]]["prefix"] == created["prefix"]
        assert "key" not in listed[created["id"]]

        r = await api.client.delete(f"/api-keys/{created['id']}", headers=auth(token))
        assert r.status_code == 200 and r.json()["revoked_at"] is not None
        later.append(r.text)
        again = await api.client.delete(f"/api-keys/{created['id']}", headers=auth(token))
        assert again.json()["revoked_at"] == r.json()["revoked_at"]  # idempotent
        assert (await api.client.delete("/api-keys/9999", headers=auth(token))).status_code == 404
        assert (await api.client.delete("/api-keys/abc", headers=auth(token))).status_code == 404

        r = await api.client.post("/idle-job", json={"prompt": "p"}, headers=auth(idle_key))
        assert r.status_code == 401 and r.json()["error"] == "api_key_revoked"
        r = await api.client.get(f"/idle-job/{job['job_id']}", headers=auth(idle_key))
        assert r.status_code == 401
        later.append(r.text)
        later.append((await api.client.get("/metrics")).text)

    for text in later:
        assert idle_key not in text and chat_key not in text
    assert caplog.records  # the app did log (sign-ins, key creation, ...)
    assert idle_key not in caplog.text and chat_key not in caplog.text
    assert token not in caplog.text


@pytest.fixture
def keep_log_levels():  # type: ignore[no-untyped-def]
    """`mia` quiets noisy loggers process-wide; later tests must not inherit that."""
    saved = {name: logging.getLogger(name).level for name in ("alembic", "httpx", "arq")}
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


def test_cli_create_list_revoke(sqlite_url, monkeypatch, capsys, caplog, keep_log_levels):  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    assert mia(["apikey", "create", "--business", "outside-co", "--scopes", "chat,idle"]) == 0
    printed = capsys.readouterr().out
    key = printed.strip().rsplit(" ", 1)[-1]
    assert key.startswith("mia_k_") and "scopes: chat,idle" in printed

    assert mia(["apikey", "list"]) == 0
    listing = capsys.readouterr().out
    assert key[:10] in listing and key not in listing and "outside-co" in listing

    assert mia(["apikey", "revoke", "--prefix", key[:10]]) == 0
    assert "revoked" in capsys.readouterr().out
    assert mia(["apikey", "revoke", "--id", "4242"]) == 1
    assert mia(["apikey", "list"]) == 0
    assert "revoked" in capsys.readouterr().out
    assert key not in caplog.text
    with pytest.raises(SystemExit):
        mia(["apikey", "revoke"])  # --id or --prefix is required
