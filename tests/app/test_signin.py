"""EIP-4361 sign-in over HTTP: every way to get it wrong is a 401 with a clear reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from eth_account import Account
from eth_account.messages import encode_defunct

from app.auth import siwe
from tests.support.harness import SimMiner, running_app


def sign(account, text: str) -> str:  # type: ignore[no-untyped-def]
    return "0x" + account.sign_message(encode_defunct(text=text)).signature.hex().removeprefix("0x")


async def fresh(api, account) -> siwe.SiweMessage:  # type: ignore[no-untyped-def]
    r = await api.client.get("/auth/nonce", params={"address": account.address})
    assert r.status_code == 200, r.text
    body = r.json()
    msg = siwe.parse_message(body["message"])
    assert (msg.nonce, msg.domain, msg.uri, msg.chain_id) == (
        body["nonce"], body["domain"], body["uri"], body["chain_id"])
    return msg


async def register(api, text: str, signature: str):  # type: ignore[no-untyped-def]
    return await api.client.post("/register_miner", json={"message": text, "signature": signature})


def altered(msg: siwe.SiweMessage, **changes: object) -> str:
    fields = {**msg.__dict__, **changes}
    return siwe.SiweMessage(**fields).to_text()


async def test_register_login_and_idempotent_registration(api):  # type: ignore[no-untyped-def]
    miner = SimMiner(api.client, Account.create(), "rig")
    first = await miner.register()
    again = await miner.register()
    assert first["miner_id"] == again["miner_id"] and first["address"] == miner.address
    assert first["token"] != again["token"]
    text, signature = await miner.signed_message()
    r = await api.client.post("/auth/login", json={"message": text, "signature": signature})
    assert r.status_code == 200, r.text
    assert r.json()["roles"] == ["miner"] and r.json()["address"] == miner.address


async def test_each_bad_sign_in_is_rejected_with_a_reason(api):  # type: ignore[no-untyped-def]
    account, other = Account.create(), Account.create()
    now = datetime.now(UTC)
    cases = {}
    msg = await fresh(api, account)
    cases["wrong domain"] = (altered(msg, domain="evil.example"), None, "siwe_domain_mismatch")
    msg = await fresh(api, account)
    cases["wrong chain id"] = (altered(msg, chain_id=1), None, "siwe_chain_id_mismatch")
    msg = await fresh(api, account)
    cases["expired"] = (altered(msg, issued_at=now - timedelta(hours=2),
                                expiration_time=now - timedelta(hours=1)), None, "siwe_expired")
    msg = await fresh(api, account)
    cases["not yet valid"] = (altered(msg, not_before=now + timedelta(hours=1)), None,
                              "siwe_not_yet_valid")
    msg = await fresh(api, account)
    cases["unknown nonce"] = (altered(msg, nonce="a" * 17), None, "siwe_invalid_nonce")
    msg = await fresh(api, account)
    text = msg.to_text()
    cases["tampered after signing"] = (text.replace("Sign in", "Sign on"), sign(account, text),
                                       "siwe_invalid_signature")
    msg = await fresh(api, account)
    cases["signed by another key"] = (msg.to_text(), sign(other, msg.to_text()),
                                      "siwe_invalid_signature")
    cases["garbage message"] = ("hello", None, "siwe_malformed_message")
    cases["garbage signature"] = (msg.to_text(), "0x1234", "siwe_invalid_signature")

    for name, (text, signature, code) in cases.items():
        r = await register(api, text, signature or sign(account, text))
        assert r.status_code == 401, (name, r.text)
        assert r.json()["error"] == code, (name, r.json())
        assert r.json()["detail"], name


async def test_a_nonce_works_once(api):  # type: ignore[no-untyped-def]
    account = Account.create()
    msg = await fresh(api, account)
    text = msg.to_text()
    assert (await register(api, text, sign(account, text))).status_code == 200
    r = await register(api, text, sign(account, text))
    assert r.status_code == 401 and r.json()["error"] == "siwe_invalid_nonce"


async def test_a_nonce_is_bound_to_its_address(api):  # type: ignore[no-untyped-def]
    alice, mallory = Account.create(), Account.create()
    msg = await fresh(api, alice)
    text = altered(msg, address=mallory.address)
    r = await register(api, text, sign(mallory, text))
    assert r.status_code == 401 and r.json()["error"] == "siwe_invalid_nonce"


async def test_login_needs_registration_and_operator_role(settings_factory):  # type: ignore[no-untyped-def]
    op = Account.create()
    async with running_app(settings_factory(operator_addresses=op.address.lower())) as api:
        stranger = Account.create()
        msg = await fresh(api, stranger)
        r = await api.client.post("/auth/login", json={"message": msg.to_text(),
                                                       "signature": sign(stranger, msg.to_text())})
        assert r.status_code == 403 and r.json()["error"] == "not_registered"
        msg = await fresh(api, op)
        r = await api.client.post("/auth/login", json={"message": msg.to_text(),
                                                       "signature": sign(op, msg.to_text())})
        assert r.status_code == 200 and r.json()["roles"] == ["operator"]
        # an operator without a miner registration cannot take jobs
        r = await api.client.get("/job/next", headers={"Authorization": f"Bearer {r.json()['token']}"})
        assert r.status_code == 403


async def test_tokens_expire_and_bad_tokens_are_refused(settings_factory):  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(token_ttl_s=1)) as api:
        miner = await api.miner()
        assert (await api.client.get("/job/next", headers=miner.auth)).status_code == 204
        import asyncio
        await asyncio.sleep(1.1)
        r = await api.client.get("/job/next", headers=miner.auth)
        assert r.status_code == 401 and r.json()["error"] == "token_expired"
        for header in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic x"}):
            r = await api.client.get("/job/next", headers=header)
            assert r.status_code == 401, header


async def test_result_signed_by_another_wallet_is_refused(api):  # type: ignore[no-untyped-def]
    key = await api.api_key()
    honest = await api.miner()
    await api.chat(key, "hi")
    job = await honest.next_job(wait=2)
    forged = SimMiner(api.client, Account.create()).sign_result(job["job_id"], "forged")
    r = await honest.post_result(job, "forged", signature=forged)
    assert r.status_code == 401 and r.json()["error"] == "invalid_result_signature"
    # a signature over other output does not carry over
    r = await honest.post_result(job, "real", signature=honest.sign_result(job["job_id"], "other"))
    assert r.status_code == 401
    assert (await honest.post_result(job, "real")).status_code == 200


async def test_an_operator_removed_from_the_setting_loses_the_role_at_once(settings_factory):  # type: ignore[no-untyped-def]
    op = Account.create()
    s = settings_factory(operator_addresses=op.address)
    async with running_app(s) as api:
        msg = await fresh(api, op)
        r = await api.client.post("/auth/login", json={"message": msg.to_text(),
                                                       "signature": sign(op, msg.to_text())})
        token = r.json()["token"]
        assert (await api.client.get("/api-keys", headers={"Authorization": f"Bearer {token}"})
                ).status_code == 200
    async with running_app(settings_factory(operator_addresses="")) as api:  # same database
        r = await api.client.get("/api-keys", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 403


async def test_a_message_issued_long_ago_is_refused_whatever_its_expiry(api):  # type: ignore[no-untyped-def]
    """Issue 23 L7: a sign-in message issued in 2020 with no expiry was accepted (its fresh
    nonce was the only bound). Now SIWE_MAX_AGE_S bounds Issued At, and the future is refused
    beyond SIWE_CLOCK_SKEW_S."""
    account = Account.create()
    now = datetime.now(UTC)
    max_age = api.settings.siwe_max_age_s
    cases = {
        "2020, no expiry": dict(issued_at=datetime(2020, 1, 1, tzinfo=UTC), expiration_time=None),
        "past the bound, expiry ahead": dict(
            issued_at=now - timedelta(seconds=max_age + 120),
            expiration_time=now + timedelta(minutes=5)),
    }
    for name, fields in cases.items():
        msg = await fresh(api, account)
        text = altered(msg, **fields)
        r = await register(api, text, sign(account, text))
        assert r.status_code == 401 and r.json()["error"] == "siwe_too_old", (name, r.text)
    msg = await fresh(api, account)
    text = altered(msg, issued_at=now + timedelta(seconds=api.settings.siwe_clock_skew_s + 60))
    r = await register(api, text, sign(account, text))
    assert r.status_code == 401 and r.json()["error"] == "siwe_issued_in_future"
    # inside the bound, without an expiry, it works (and the refused ones spent no nonce)
    msg = await fresh(api, account)
    text = altered(msg, issued_at=now - timedelta(seconds=max_age - 60), expiration_time=None)
    assert (await register(api, text, sign(account, text))).status_code == 200


async def test_the_nonce_message_never_outlives_the_age_bound(settings_factory):  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(siwe_max_age_s=120)) as api:
        msg = await fresh(api, Account.create())
        assert msg.expiration_time - msg.issued_at == timedelta(seconds=120)
