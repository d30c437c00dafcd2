"""Wallet signatures: EIP-191 personal_sign by an EOA, or ERC-1271 by a contract wallet.

Recovery calls coincurve (libsecp256k1) directly and compares the raw 20-byte address with the
wallet's, whose bytes are computed once per address: no eth-keys objects, no EIP-55 checksum
formatting, no eth_utils conversions per signature (they were two thirds of the cost of a
result's check). Hashing is pycryptodome's Keccak, which eth-hash uses anyway, called without
eth-hash's dispatch layer.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable

from Crypto.Hash import keccak as _keccak256
from coincurve import PublicKey
from eth_keys.constants import SECPK1_N
from eth_utils import to_checksum_address

log = logging.getLogger(__name__)

# (address, eip191_hash, signature) -> valid?; set when a chain is configured
ContractVerifier = Callable[[str, bytes, bytes], Awaitable[bool]]

_EIP191 = b"\x19Ethereum Signed Message:\n"
_N = SECPK1_N.to_bytes(32, "big")  # r < n
_HALF_N = (SECPK1_N // 2).to_bytes(32, "big")  # s <= n/2 (EIP-2 low s)
_ZERO = bytes(32)


def keccak(data: bytes) -> bytes:
    """Keccak-256 (Ethereum's, not SHA3-256), 32 bytes."""
    return _keccak256.new(data=data, digest_bits=256).digest()


def eip191_hash(message: bytes) -> bytes:
    """The 32-byte hash a wallet signs for personal_sign(message): keccak256("\\x19Ethereum
    Signed Message:\\n" ‖ decimal length of message ‖ message)."""
    return keccak(_EIP191 + str(len(message)).encode() + message)


@functools.lru_cache(maxsize=65_536)
def address_bytes(address: str) -> bytes | None:
    """The 20 bytes of a 0x-hex address in any case (remembered per spelling), or None."""
    text = address[2:] if address[:2] in ("0x", "0X") else address
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        return None
    return raw if len(raw) == 20 else None


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
        if recover_bytes(hash32, eoa) == address_bytes(address):  # not a contract's format
            sig = eoa
    return "0x" + sig.hex()


def recover_bytes(hash32: bytes, sig: bytes) -> bytes | None:
    """The 20-byte address of the EOA that produced a 65-byte r‖s‖v signature over hash32
    (v as 27/28 or 0/1), or None.

    Only the low-s form counts (EIP-2: 1 <= s <= n/2): for every signature (r, s, v) the twin
    (r, n - s, v ^ 1) recovers the same address, so without the rule one signed sign-in or
    result has two valid encodings."""
    if len(sig) != 65 or len(hash32) != 32:
        return None
    v = sig[64]
    if v >= 27:
        v -= 27
    if v not in (0, 1):
        return None
    r, s = sig[:32], sig[32:64]  # big-endian, same length: bytes order is number order
    if not (_ZERO < r < _N and _ZERO < s <= _HALF_N):
        return None
    try:
        public = PublicKey.from_signature_and_message(sig[:64] + bytes((v,)), hash32,
                                                      hasher=None)
    except (ValueError, TypeError):  # no point on the curve for this r
        return None
    return keccak(public.format(compressed=False)[1:])[12:]


def recover(hash32: bytes, sig: bytes) -> str | None:
    """recover_bytes as an EIP-55 checksummed address (for callers that show or store it)."""
    raw = recover_bytes(hash32, sig)
    return None if raw is None else to_checksum_address(raw)


def _eoa_spelling(sig: bytes) -> str:
    """A signature that recovered: 0x + lower-case hex, v as 27/28."""
    return "0x" + sig[:64].hex() + ("%02x" % (sig[64] + 27 if sig[64] < 27 else sig[64]))


async def verify_canonical(address: str, message: bytes, signature: str | bytes,
                           contract_verifier: ContractVerifier | None = None) -> str | None:
    """verify() and canonical() with one recovery: the stored spelling of `signature` if
    `address` signed `message` (EIP-191, else ERC-1271 through contract_verifier), else None."""
    sig = parse_signature(signature)
    if sig is None:
        return None
    hash32 = eip191_hash(message)
    wanted = address_bytes(address)
    if wanted is not None and recover_bytes(hash32, sig) == wanted:
        return _eoa_spelling(sig)
    if contract_verifier is not None:
        try:
            if await contract_verifier(address, hash32, sig):
                return "0x" + sig.hex()  # a contract's format, as canonical() keeps it
        except Exception as exc:  # a chain hiccup must not turn into a 500
            log.warning("ERC-1271 check failed for %s: %s", address, type(exc).__name__)
    return None


async def verify(address: str, message: bytes, signature: str | bytes,
                 contract_verifier: ContractVerifier | None = None) -> bool:
    """Did `address` sign `message` (EIP-191)? Falls back to ERC-1271 for contract wallets."""
    sig = parse_signature(signature)
    if sig is None:
        return False
    hash32 = eip191_hash(message)
    wanted = address_bytes(address)
    if wanted is not None and recover_bytes(hash32, sig) == wanted:
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
