"""One stored spelling per signature (issue 23, L7): wallets write the recovery id v of an EOA
signature as 27/28 or as 0/1, both recover the same key, and results were stored as sent, so one
signed answer had two stored forms. Now the stored form is 0x, lower-case hex, v = 27/28."""

from __future__ import annotations

from eth_account import Account
from eth_account.messages import encode_defunct
from sqlalchemy import select

from app.auth import wallet
from app.models import ChatJob
from tests.support.harness import running_app


def v_as_0_or_1(signature: str) -> str:
    raw = bytes.fromhex(signature.removeprefix("0x"))
    assert raw[64] in (27, 28)
    return "0x" + (raw[:64] + bytes([raw[64] - 27])).hex()


async def test_a_result_signed_with_v_0_or_1_is_stored_with_v_27_or_28(any_db, settings_factory):  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(any_db)) as api:
        key = await api.api_key()
        miner = await api.miner()
        stored = {}
        for spelling in ("27/28", "0/1 upper-case", "0/1 in a batch"):
            await api.chat(key, f"hi {spelling}")
            job = await miner.next_job(wait=2)
            signed = miner.sign_result(job["job_id"], "out")
            if spelling == "27/28":
                r = await miner.post_result(job, "out", signature=signed)
            elif spelling == "0/1 upper-case":
                r = await miner.post_result(job, "out", signature=v_as_0_or_1(signed).upper()
                                            .replace("0X", "0x"))
            else:
                r = await api.client.post("/job/results", headers=miner.auth, json={"results": [{
                    "job_id": job["job_id"], "lease_id": job["lease_id"], "output": "out",
                    "signature": v_as_0_or_1(signed)}]})
                assert r.json()["results"][0]["status"] == "completed", r.text
            assert r.status_code == 200, r.text
            stored[job["job_id"]] = signed.lower()
        async with api.ctx.db.sessions() as s:
            rows = dict((await s.execute(select(ChatJob.id, ChatJob.signature))).all())
        assert rows == stored  # every one in the 27/28 spelling


def test_canonical_keeps_what_is_not_an_eoa_signature_of_the_address() -> None:
    alice, bob = Account.create(), Account.create()
    digest = wallet.result_digest("job", "out")
    signed = "0x" + alice.sign_message(encode_defunct(primitive=digest)).signature.hex() \
        .removeprefix("0x")
    hash32 = wallet.eip191_hash(digest)
    assert wallet.canonical(alice.address, hash32, v_as_0_or_1(signed)) == signed.lower()
    assert wallet.canonical(alice.address, hash32, signed.upper().replace("0X", "0x")) == signed
    # 65 bytes with v 0/1 that are not alice's EOA signature (a contract wallet's own format,
    # e.g. a Safe's): left as they are, only lower-cased, since the contract checks those bytes
    theirs = v_as_0_or_1(signed)
    assert wallet.canonical(bob.address, hash32, theirs) == theirs
    longer = "0x" + "AB" * 97  # an ERC-1271 signature of another length
    assert wallet.canonical(bob.address, hash32, longer) == longer.lower()
