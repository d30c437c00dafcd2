"""ERC-1271: ask a smart-contract wallet whether a signature is valid for it."""

from __future__ import annotations

import time

from eth_utils import is_address, to_checksum_address
from web3 import AsyncWeb3

MAGIC_VALUE = bytes.fromhex("1626ba7e")
_ABI = [
    {
        "type": "function",
        "name": "isValidSignature",
        "stateMutability": "view",
        "inputs": [{"name": "hash", "type": "bytes32"}, {"name": "signature", "type": "bytes"}],
        "outputs": [{"name": "magicValue", "type": "bytes4"}],
    }
]


class CodeCache:
    """Whether an address holds code, remembered for `ttl_s` (at most `size` addresses): a
    wallet's code is read once, not on every signature check."""

    def __init__(self, ttl_s: float = 300.0, size: int = 10_000) -> None:
        self.ttl_s, self.size = ttl_s, size
        self._seen: dict[str, tuple[bool, float]] = {}

    async def has_code(self, w3: AsyncWeb3, address: str) -> bool:
        now = time.monotonic()
        hit = self._seen.get(address)
        if hit is not None and hit[1] > now:
            return hit[0]
        found = bool(await w3.eth.get_code(address))
        if len(self._seen) >= self.size:
            self._seen.clear()
        self._seen[address] = (found, now + self.ttl_s)
        return found


async def is_valid_erc1271_signature(
    w3: AsyncWeb3, wallet_address: str, message_hash: bytes, signature: bytes,
    *, gas: int | None = None, codes: CodeCache | None = None
) -> bool:
    """True iff the contract at ``wallet_address`` returns the ERC-1271 magic value for
    (message_hash, signature). False for EOAs, addresses without code, reverts, calls that run
    out of `gas` (a wallet's own code runs here: it must not run unbounded) and malformed
    answers; only connection errors propagate. `codes` remembers which addresses hold code."""
    if len(message_hash) != 32:
        raise ValueError("message_hash must be 32 bytes")
    if not is_address(wallet_address):
        return False
    address = to_checksum_address(wallet_address)
    if not await (codes.has_code(w3, address) if codes is not None
                  else w3.eth.get_code(address)):
        return False
    contract = w3.eth.contract(address=address, abi=_ABI)
    try:
        call = contract.functions.isValidSignature(message_hash, signature)
        result = await (call.call({"gas": gas}) if gas is not None else call.call())
    except (ConnectionError, TimeoutError, OSError):
        raise
    except Exception:
        # reverts, out of gas, empty or undecodable return data: not a valid signature
        return False
    return bytes(result) == MAGIC_VALUE
