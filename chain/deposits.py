"""Stablecoin deposits into an address, read from the chain alone, and the memo that names who
sent them.

The memo scheme: a plain ERC-20 ``transfer(to, amount)`` call with MEMO_BYTES extra bytes after
its ABI-encoded arguments. Solidity's ABI decoder ignores calldata past the arguments, so any
ERC-20 accepts it, the funds land in ``to`` directly (no per-payer address, no sweep, no extra
key), and the memo stays in the transaction's input for anyone to read. A deposit carries a memo
only when its transaction is exactly that call on the token itself (selector, 64 bytes of
arguments naming ``to`` and the logged amount, then the memo); anything else (a contract
wallet's batch, an exchange withdrawal, a transfer without memo) carries none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eth_utils import to_checksum_address
from web3 import AsyncWeb3
from web3.exceptions import BlockNotFound, TransactionNotFound

from chain.tokens import TRANSFER_TOPIC, transfers
from chain.tx import OnPrepared, TxSender, canonical_receipt

MEMO_BYTES = 8
TRANSFER_SELECTOR = bytes.fromhex("a9059cbb")  # transfer(address,uint256)
MEMO_CALL_LENGTH = 4 + 64 + MEMO_BYTES


@dataclass(frozen=True)
class TransferLog:
    """One Transfer log of the token into the watched address. ``amount`` in base units."""

    tx_hash: str
    log_index: int
    block_number: int
    block_hash: str
    from_address: str
    amount: int


@dataclass(frozen=True)
class DepositTx:
    """A mined transaction on the canonical chain and its Transfers of the token into the
    watched address, in log order (``amount`` base units; ``memo`` 16 lowercase hex or None)."""

    tx_hash: str
    block_number: int
    block_hash: str
    success: bool
    transfers: tuple[tuple[int, str, int], ...]  # (log_index, from, amount)
    memo: str | None


def hex_of(value: bytes | str) -> str:
    if isinstance(value, str):
        return (value if value.startswith("0x") else "0x" + value).lower()
    return "0x" + bytes(value).hex()


def _topic(address: str) -> str:
    return "0x" + bytes(12).hex() + to_checksum_address(address)[2:].lower()


def normalize_memo(memo: str) -> str:
    """16 lowercase hex characters (8 bytes), with or without 0x; ValueError otherwise."""
    text = memo.lower().removeprefix("0x")
    if len(text) != 2 * MEMO_BYTES or any(c not in "0123456789abcdef" for c in text):
        raise ValueError(f"a deposit memo is {2 * MEMO_BYTES} hex characters ({MEMO_BYTES} bytes)")
    return text


async def transfer_logs(w3: AsyncWeb3, token: str, to: str, from_block: int, to_block: int,
                        step: int = 2_000) -> list[TransferLog]:
    """Every Transfer of ``token`` to ``to`` in blocks [from_block, to_block], ``step`` blocks
    per eth_getLogs call (providers cap the range), in chain order."""
    out: list[TransferLog] = []
    start = max(from_block, 0)
    while start <= to_block:
        end = min(start + step - 1, to_block)
        logs = await w3.eth.get_logs({"address": to_checksum_address(token), "fromBlock": start,
                                      "toBlock": end,
                                      "topics": ["0x" + TRANSFER_TOPIC.hex(), None, _topic(to)]})
        for x in logs:
            if len(x["topics"]) != 3 or len(bytes(x["data"])) != 32 or x.get("removed"):
                continue
            out.append(TransferLog(
                tx_hash=hex_of(x["transactionHash"]), log_index=int(x["logIndex"]),
                block_number=int(x["blockNumber"]), block_hash=hex_of(x["blockHash"]),
                from_address=to_checksum_address(bytes(x["topics"][1])[-20:]),
                amount=int.from_bytes(bytes(x["data"]), "big")))
        start = end + 1
    return out


def memo_of(tx_input: bytes | str, tx_to: str | None, token: str, to: str,
            amounts: Sequence[int]) -> str | None:
    """The memo of a direct ``token.transfer(to, amount) + memo`` call, or None. ``amounts``
    are the logged Transfers into ``to``: the call must have made exactly one, of its amount."""
    data = bytes.fromhex(hex_of(tx_input)[2:]) if isinstance(tx_input, str) else bytes(tx_input)
    if tx_to is None or to_checksum_address(tx_to) != to_checksum_address(token):
        return None
    if len(data) != MEMO_CALL_LENGTH or data[:4] != TRANSFER_SELECTOR:
        return None
    recipient, amount = data[4:36], data[36:68]
    if recipient[:12] != bytes(12) or to_checksum_address(recipient[12:]) != to_checksum_address(to):
        return None
    if list(amounts) != [int.from_bytes(amount, "big")]:
        return None
    return data[68:].hex()


async def canonical_hash(w3: AsyncWeb3, number: int) -> str | None:
    """The hash of the chain's block at ``number`` now, or None when there is none yet."""
    try:
        block = await w3.eth.get_block(number)
    except BlockNotFound:
        return None
    return hex_of(block["hash"]) if block is not None else None


async def deposit_tx(w3: AsyncWeb3, tx_hash: str, token: str, to: str) -> DepositTx | None:
    """The transaction's deposits on the canonical chain now; None when it is not mined there
    (unknown, pending, or in a block a reorg took away)."""
    receipt = await canonical_receipt(w3, tx_hash)
    if receipt is None:
        return None
    token, to = to_checksum_address(token), to_checksum_address(to)
    moved = tuple((t.log_index, t.from_address, t.amount) for t in transfers(receipt)
                  if t.token == token and t.to_address == to)
    memo = None
    if moved:
        try:
            tx = await w3.eth.get_transaction(tx_hash)  # type: ignore[arg-type]
        except TransactionNotFound:
            return None
        memo = memo_of(tx["input"], tx.get("to"), token, to, [m[2] for m in moved])
    return DepositTx(tx_hash=hex_of(tx_hash), block_number=int(receipt["blockNumber"]),
                     block_hash=hex_of(receipt["blockHash"]), success=receipt["status"] == 1,
                     transfers=moved, memo=memo)


def deposit_call(token: str, to: str, amount: int, memo: str) -> dict[str, Any]:
    """Unsigned ``token.transfer(to, amount)`` with the memo appended (base units)."""
    if amount <= 0:
        raise ValueError("a deposit is a positive amount")
    data = (TRANSFER_SELECTOR + bytes(12) + bytes.fromhex(to_checksum_address(to)[2:])
            + int(amount).to_bytes(32, "big") + bytes.fromhex(normalize_memo(memo)))
    return {"to": to_checksum_address(token), "data": "0x" + data.hex(), "value": 0}


async def deposit(sender: TxSender, token: str, to: str, amount: int, memo: str, *,
                  confirmations: int = 1, timeout: float = 120.0,
                  on_prepared: OnPrepared | None = None) -> tuple[str, int]:
    """Send a memo deposit from the sender's account; (tx hash, block number) once mined."""
    receipt, final = await sender.send_tracked(deposit_call(token, to, amount, memo),
                                               confirmations=confirmations, timeout=timeout,
                                               on_prepared=on_prepared)
    return final.tx_hash, int(receipt["blockNumber"])
