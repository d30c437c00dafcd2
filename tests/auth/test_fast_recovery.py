"""Result signatures are recovered with coincurve directly and compared as raw 20-byte addresses
(app/auth/wallet.py): the same answers as eth-account/eth-keys give, with one recovery per
result (verify_canonical) instead of up to two, and no checksum formatting on the way."""

from __future__ import annotations

import os

import pytest
from eth_account import Account
from eth_account.messages import _hash_eip191_message, encode_defunct
from eth_keys import keys
from eth_keys.constants import SECPK1_N

from app.auth import wallet


@pytest.mark.parametrize("message", [b"", b"x", bytes(range(7, 39)), b"y" * 1000],
                         ids=["empty", "one", "32-bytes", "long"])
def test_eip191_hash_is_eth_accounts(message: bytes) -> None:
    assert wallet.eip191_hash(message) == bytes(
        _hash_eip191_message(encode_defunct(primitive=message)))


def test_recovery_matches_eth_keys_for_random_signatures() -> None:
    for _ in range(20):
        account = Account.create()
        digest = wallet.result_digest(os.urandom(8).hex(), "out")
        sig = account.sign_message(encode_defunct(primitive=digest)).signature
        hash32 = wallet.eip191_hash(digest)
        expected = keys.Signature(sig[:64] + bytes([sig[64] - 27])) \
            .recover_public_key_from_msg_hash(hash32).to_canonical_address()
        assert wallet.recover_bytes(hash32, bytes(sig)) == expected == \
            bytes.fromhex(account.address[2:])
        assert wallet.recover(hash32, bytes(sig)) == account.address  # EIP-55, for display


async def test_verify_canonical_is_verify_then_canonical() -> None:
    alice, bob = Account.create(), Account.create()
    digest = wallet.result_digest("job", "out")
    signed = "0x" + bytes(alice.sign_message(encode_defunct(primitive=digest)).signature).hex()
    raw = bytes.fromhex(signed[2:])
    v01 = "0x" + (raw[:64] + bytes([raw[64] - 27])).hex()
    low_s = int.from_bytes(raw[32:64], "big")
    twin = "0x" + (raw[:32] + (SECPK1_N - low_s).to_bytes(32, "big")  # recovers alice too
                   + bytes([((raw[64] - 27) ^ 1) + 27])).hex()
    for spelling in (signed, signed.upper().replace("0X", "0x"), v01, v01[2:]):
        assert await wallet.verify_canonical(alice.address, digest, spelling) == signed
        # the address in any case: compared as bytes
        assert await wallet.verify_canonical(alice.address.lower(), digest, spelling) == signed
    for refused in (twin, signed[:-2], "0xzz", signed[:-2] + "1d"):
        assert await wallet.verify_canonical(alice.address, digest, refused) is None
    assert await wallet.verify_canonical(bob.address, digest, signed) is None
    assert await wallet.verify_canonical("0x1234", digest, signed) is None

    async def contract_says_yes(address: str, hash32: bytes, sig: bytes) -> bool:
        return address == bob.address and hash32 == wallet.eip191_hash(digest)
    # not bob's key: only his contract can vouch for it, and then it is kept as sent (lower-case)
    assert await wallet.verify_canonical(bob.address, digest, v01.upper().replace("0X", "0x"),
                                         contract_says_yes) == v01
