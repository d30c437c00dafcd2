"""Burn $SERV by transferring it to the burn address, and verify a burn from the chain alone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_utils import to_checksum_address
from web3 import AsyncWeb3

from chain.config import DEFAULT_BURN_ADDRESS
from chain.errors import ConfigError, InsufficientBalance, TxNotFound
from chain.tokens import TRANSFER_TOPIC, erc20, transfers
from chain.tx import OnPrepared, TxSender, canonical_receipt

BURN_ADDRESS = DEFAULT_BURN_ADDRESS


@dataclass(frozen=True)
class BurnResult:
    tx_hash: str
    nonce: int
    token: str
    amount: int  # base units, read back from the receipt's Transfer log
    burn_address: str
    gas_used: int
    block_number: int


@dataclass(frozen=True)
class BurnVerification:
    """What a block explorer shows for a burn transaction."""

    tx_hash: str
    success: bool  # receipt status 1
    is_burn: bool  # a Transfer of ``token`` to ``burn_address`` is in the logs
    token: str | None
    from_address: str | None
    to_address: str | None
    amount: int  # base units moved to the burn address by this tx (0 if not a burn)
    block_number: int
    confirmations: int
    matches_expected: bool | None  # None when no expected amount was given

    @property
    def verified(self) -> bool:
        return self.success and self.is_burn and self.matches_expected is not False


def burn_tx(w3: AsyncWeb3, token: str, amount: int, burn_address: str = BURN_ADDRESS) -> dict[str, Any]:
    """Unsigned ERC-20 transfer(burn_address, amount) call."""
    contract = erc20(w3, token)
    data = contract.encode_abi("transfer", [to_checksum_address(burn_address), int(amount)])
    return {"to": contract.address, "data": data, "value": 0}


async def burn(
    sender: TxSender,
    token: str,
    amount: int,
    *,
    burn_address: str = BURN_ADDRESS,
    confirmations: int = 1,
    timeout: float = 120.0,
    on_prepared: OnPrepared | None = None,
) -> BurnResult:
    """Transfer ``amount`` base units of ``token`` from the sender to ``burn_address``.
    Checks the balance first, so nothing is sent when it is short."""
    if amount <= 0:
        raise ConfigError("burn amount must be positive")
    burn_address = to_checksum_address(burn_address)
    contract = erc20(sender.w3, token)
    balance = await contract.functions.balanceOf(sender.address).call()
    if balance < amount:
        raise InsufficientBalance(f"{sender.address} holds {balance} of {token}, cannot burn {amount}")
    data = contract.encode_abi("transfer", [burn_address, int(amount)])
    receipt, final = await sender.send_tracked(
        {"to": contract.address, "data": data},
        confirmations=confirmations, timeout=timeout, on_prepared=on_prepared,
    )
    moved = sum(
        t.amount for t in transfers(receipt)
        if t.token == contract.address and t.to_address == burn_address
    )
    return BurnResult(
        tx_hash=final.tx_hash, nonce=final.nonce, token=contract.address, amount=moved,
        burn_address=burn_address, gas_used=int(receipt["gasUsed"]),
        block_number=int(receipt["blockNumber"]),
    )


async def burned_by(
    w3: AsyncWeb3,
    token: str,
    sender: str,
    *,
    burn_address: str = BURN_ADDRESS,
    from_block: int,
    to_block: int,
    step: int = 10_000,
) -> int:
    """Base units of ``token`` that ``sender`` transferred to ``burn_address`` in blocks
    [from_block, to_block], from the chain's Transfer logs (``step`` blocks per eth_getLogs
    call: providers cap the range). What the chain says an account burned, independent of any
    records, and of what others sent to the burn address."""
    def topic(address: str) -> str:
        return "0x" + bytes(12).hex() + to_checksum_address(address)[2:].lower()

    total = 0
    start = max(from_block, 0)
    while start <= to_block:
        end = min(start + step - 1, to_block)
        logs = await w3.eth.get_logs({"address": to_checksum_address(token), "fromBlock": start,
                                      "toBlock": end, "topics": ["0x" + TRANSFER_TOPIC.hex(),
                                                                 topic(sender),
                                                                 topic(burn_address)]})
        total += sum(int.from_bytes(bytes(x["data"]), "big") for x in logs)
        start = end + 1
    return total


async def verify_burn(
    w3: AsyncWeb3,
    tx_hash: str,
    *,
    token: str | None = None,
    burn_address: str = BURN_ADDRESS,
    expected_amount: int | None = None,
    expected_from: str | None = None,
) -> BurnVerification:
    """Read the receipt of ``tx_hash`` and report the burn in it. Raises TxNotFound for a hash
    the chain does not know (or not yet mined, or mined in a block that is no longer the chain's
    block at that number); a mined tx that is no burn gives is_burn=False.
    With ``token`` set, only transfers of that token count; ``expected_from`` restricts the
    sender of the tokens."""
    receipt = await canonical_receipt(w3, tx_hash)
    if receipt is None:  # unknown, not mined, or in a block a reorg took away
        raise TxNotFound(f"no mined transaction {tx_hash} on the canonical chain")
    burn_address = to_checksum_address(burn_address)
    want_token = to_checksum_address(token) if token else None
    want_from = to_checksum_address(expected_from) if expected_from else None
    matching = [
        t for t in transfers(receipt)
        if t.to_address == burn_address
        and (want_token is None or t.token == want_token)
        and (want_from is None or t.from_address == want_from)
    ]
    success = receipt["status"] == 1
    head = await w3.eth.block_number
    block = int(receipt["blockNumber"])
    tokens = {t.token for t in matching}
    senders = {t.from_address for t in matching}
    amount = sum(t.amount for t in matching) if success else 0
    is_burn = success and bool(matching) and len(tokens) == 1
    return BurnVerification(
        tx_hash=tx_hash,
        success=success,
        is_burn=is_burn,
        token=tokens.pop() if len(tokens) == 1 else None,
        from_address=senders.pop() if len(senders) == 1 else None,
        to_address=burn_address if matching else None,
        amount=amount,
        block_number=block,
        confirmations=head - block + 1,
        matches_expected=None if expected_amount is None else (is_burn and amount == expected_amount),
    )
