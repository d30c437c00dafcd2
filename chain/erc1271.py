"""ERC-1271: ask a smart-contract wallet whether a signature is valid for it."""

from __future__ import annotations

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


async def is_valid_erc1271_signature(
    w3: AsyncWeb3, wallet_address: str, message_hash: bytes, signature: bytes
) -> bool:
    """True iff the contract at ``wallet_address`` returns the ERC-1271 magic value for
    (message_hash, signature). False for EOAs, addresses without code, reverts and malformed
    answers; only connection errors propagate."""
    if len(message_hash) != 32:
        raise ValueError("message_hash must be 32 bytes")
    if not is_address(wallet_address):
        return False
    address = to_checksum_address(wallet_address)
    if not await w3.eth.get_code(address):
        return False
    contract = w3.eth.contract(address=address, abi=_ABI)
    try:
        result = await contract.functions.isValidSignature(message_hash, signature).call()
    except (ConnectionError, TimeoutError, OSError):
        raise
    except Exception:
        # reverts, empty or undecodable return data: not a valid signature for this wallet
        return False
    return bytes(result) == MAGIC_VALUE
