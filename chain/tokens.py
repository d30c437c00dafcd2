"""ERC-20 helpers shared by dex and burn. Amounts are integer base units."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_utils import keccak, to_checksum_address
from web3 import AsyncWeb3
from web3.contract import AsyncContract

from chain import artifacts

TRANSFER_TOPIC = keccak(text="Transfer(address,address,uint256)")


def erc20(w3: AsyncWeb3, address: str) -> AsyncContract:
    return w3.eth.contract(address=to_checksum_address(address), abi=artifacts.abi("ERC20"))


@dataclass(frozen=True)
class Transfer:
    token: str
    from_address: str
    to_address: str
    amount: int
    log_index: int


def _topic_address(topic: Any) -> str:
    return to_checksum_address(bytes(topic)[-20:])


def transfers(receipt: Any) -> list[Transfer]:
    """Every ERC-20 Transfer event in a receipt, decoded from the raw logs."""
    out = []
    for entry in receipt["logs"]:
        topics = entry["topics"]
        if len(topics) != 3 or bytes(topics[0]) != TRANSFER_TOPIC:
            continue  # ERC-721 Transfers have 4 topics; skip anything else
        data = bytes(entry["data"])
        if len(data) != 32:
            continue
        out.append(
            Transfer(
                token=to_checksum_address(entry["address"]),
                from_address=_topic_address(topics[1]),
                to_address=_topic_address(topics[2]),
                amount=int.from_bytes(data, "big"),
                log_index=int(entry["logIndex"]),
            )
        )
    return out


def received(receipt: Any, token: str, to: str) -> int:
    """Sum of ``token`` transferred to ``to`` in this receipt (base units)."""
    token, to = to_checksum_address(token), to_checksum_address(to)
    return sum(t.amount for t in transfers(receipt) if t.token == token and t.to_address == to)
