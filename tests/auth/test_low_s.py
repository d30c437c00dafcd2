"""EIP-2 low-s on every signature path: the high-s twin of a valid signature, which recovers the
same address, is refused at sign-in and on results (app/auth/wallet.py)."""

from __future__ import annotations

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_keys import keys
from eth_keys.constants import SECPK1_N

from app.auth.wallet import eip191_hash, verify
from tests.support.harness import SimMiner, running_app


def high_s_twin(signature: str) -> str:
    raw = bytes.fromhex(signature.removeprefix("0x"))
    r, s, v = raw[:32], int.from_bytes(raw[32:64], "big"), raw[64]
    assert s <= SECPK1_N // 2  # eth-account signs low-s
    flipped = 55 - v if v >= 27 else v ^ 1  # 27 <-> 28, or 0 <-> 1
    return "0x" + (r + (SECPK1_N - s).to_bytes(32, "big") + bytes([flipped])).hex()


async def test_the_twin_recovers_the_same_address_but_is_refused() -> None:
    account = Account.create()
    message = b"sign me"
    sig = account.sign_message(encode_defunct(primitive=message)).signature.hex()
    twin = high_s_twin(sig)
    raw = bytes.fromhex(twin[2:])  # eth-keys recovers the twin (eth-account would refuse it)
    twin_vrs = (raw[64] - 27, int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:64], "big"))
    assert keys.Signature(vrs=twin_vrs).recover_public_key_from_msg_hash(
        eip191_hash(message)).to_checksum_address() == account.address
    assert await verify(account.address, message, sig)
    assert not await verify(account.address, message, twin)


async def test_sign_in_refuses_the_high_s_twin(api) -> None:  # type: ignore[no-untyped-def]
    miner = SimMiner(api.client, Account.create())
    message, signature = await miner.signed_message()
    r = await api.client.post("/register_miner",
                              json={"message": message, "signature": high_s_twin(signature)})
    assert r.status_code == 401 and r.json()["error"] == "siwe_invalid_signature", r.text
    r = await api.client.post("/register_miner", json={"message": message, "signature": signature})
    assert r.status_code == 200  # the refused twin did not spend the nonce


async def test_a_result_signed_high_s_is_refused(settings_factory) -> None:  # type: ignore[no-untyped-def]
    async with running_app(settings_factory()) as api:
        key = await api.api_key()
        assert (await api.chat(key, "hi")).status_code == 202
        miner = await api.miner()
        job = await miner.next_job(wait=5)
        assert job is not None
        sig = miner.sign_result(job["job_id"], "hello")
        r = await miner.post_result(job, "hello", signature=high_s_twin(sig))
        assert r.status_code == 401 and r.json()["error"] == "invalid_result_signature", r.text
        assert (await miner.post_result(job, "hello", signature=sig)).status_code == 200
