"""Wallet signatures: EIP-191 personal_sign by an EOA, or ERC-1271 by a contract wallet.

Recovery runs on eth-keys' coincurve backend (installed with eth-keys[coincurve]).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from eth_account.messages import _hash_eip191_message, encode_defunct
from eth_keys import keys
from eth_keys.constants import SECPK1_N
from eth_keys.exceptions import BadSignature, ValidationError
from eth_utils import keccak

log = logging.getLogger(__name__)

# (address, eip191_hash, signature) -> valid?; set when a chain is configured
ContractVerifier = Callable[[str, bytes, bytes], Awaitable[bool]]


def eip191_hash(message: bytes) -> bytes:
    """The 32-byte hash a wallet signs for personal_sign(message)."""
    return bytes(_hash_eip191_message(encode_defunct(primitive=message)))


def parse_signature(signature: str | bytes) -> bytes | None:
    if isinstance(signature, str):
        text = signature[2:] if signature[:2] in ("0x", "0X") else signature
        if len(text) > 1024:
            return None
        try:
            return bytes.fromhex(text)
        except ValueError:
            return None
    return signature


def canonical(address: str, hash32: bytes, signature: str | bytes) -> str:
    """The one spelling a signature `address` made over hash32 is stored in: 0x + lower-case
    hex, and for an EOA signature the recovery id v as 27/28. Wallets write v either as 27/28 or
    as 0/1 (both recover the same key), so without this one signed answer has two stored forms.
    A contract wallet's (ERC-1271) signature is its contract's format: only the hex is made
    lower-case. Call it on a signature that verified."""
    sig = parse_signature(signature)
    if sig is None:
        raise ValueError("not a hex signature")
    if len(sig) == 65 and sig[64] in (0, 1):
        eoa = sig[:64] + bytes([sig[64] + 27])
        if recover(hash32, eoa) == address:  # not a contract's 65-byte format with v 0/1
            sig = eoa
    return "0x" + sig.hex()


def recover(hash32: bytes, sig: bytes) -> str | None:
    """The EOA that produced a 65-byte r‖s‖v signature over hash32, or None.

    Only the low-s form counts (EIP-2: 1 <= s <= n/2): for every signature (r, s, v) the twin
    (r, n - s, v ^ 1) recovers the same address, so without the rule one signed sign-in or
    result has two valid encodings."""
    if len(sig) != 65:
        return None
    v = sig[64]
    if v >= 27:
        v -= 27
    if v not in (0, 1):
        return None
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big")
    if not (1 <= r < SECPK1_N and 1 <= s <= SECPK1_N // 2):
        return None
    try:
        signature = keys.Signature(vrs=(v, r, s))
        return signature.recover_public_key_from_msg_hash(hash32).to_checksum_address()
    except (BadSignature, ValidationError, ValueError):
        return None


async def verify(address: str, message: bytes, signature: str | bytes,
                 contract_verifier: ContractVerifier | None = None) -> bool:
    """Did `address` sign `message` (EIP-191)? Falls back to ERC-1271 for contract wallets."""
    sig = parse_signature(signature)
    if sig is None:
        return False
    hash32 = eip191_hash(message)
    if recover(hash32, sig) == address:
        return True
    if contract_verifier is not None:
        try:
            return await contract_verifier(address, hash32, sig)
        except Exception as exc:  # a chain hiccup must not turn into a 500 on sign-in
            log.warning("ERC-1271 check failed for %s: %s", address, type(exc).__name__)
    return False


def result_digest(job_id: str, output: str, finish_reason: str | None = None) -> bytes:
    """What a miner signs for a result: keccak256(utf8(job_id) ‖ utf8(output)), 32 bytes; with a
    finish reason, keccak256(utf8(job_id) ‖ utf8(output) ‖ 0x00 ‖ utf8(finish_reason)) (no text
    field may hold NUL, so the two parts cannot be confused).

    The signature is EIP-191 personal_sign over these 32 bytes, i.e. in eth-account:
    Account.sign_message(encode_defunct(primitive=result_digest(job_id, output)), key).
    """
    tail = b"" if finish_reason is None else b"\x00" + finish_reason.encode()
    return keccak(job_id.encode() + output.encode() + tail)
