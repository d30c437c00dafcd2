"""What a sender does when a step between signing and the receipt goes wrong."""

from __future__ import annotations

import pytest

from chain.errors import ChainError, TxTimeout
from chain.tx import NonceStatus, TxStatus
from tests.chain.conftest import Chain

GWEI = 10**9


async def test_mined_but_not_yet_confirmed_is_a_timeout_not_a_foreign_nonce(chain: Chain) -> None:
    """Our own transaction is in a block but lacks confirmations when the wait ends: that is no
    'nonce used by another transaction' (which a caller may read as 'my swap never happened')."""
    d = chain.devnet
    sender = chain.treasury
    p = await sender.prepare({"to": d.trader, "value": 1})
    await sender.broadcast(p)  # mined at once; nobody mines the two blocks more it waits for
    with pytest.raises(TxTimeout) as info:
        await sender.wait_or_replace(p, confirmations=3, timeout=0.1, max_replacements=1)
    assert p.tx_hash in info.value.tx_hashes and info.value.nonce == p.nonce
    assert (await sender.lookup(p.tx_hash)).status is TxStatus.SUCCESS


async def test_replacement_the_balance_cannot_pay_keeps_waiting_for_the_original(chain: Chain) -> None:
    """A replacement costs more than the original; when the balance cannot pay it, the original
    is still out there: the caller must get a TxTimeout with its hash, not InsufficientBalance
    (which means 'nothing was sent')."""
    d = chain.devnet
    poor = chain.sender("0x" + "66" * 32)
    accounts = await chain.w3.eth.accounts
    await chain.w3.eth.send_transaction({"from": accounts[0], "to": poor.address, "value": 10**18})
    max_fee, tip = await poor.fees()
    gas = 21_000
    value = 10**18 - gas * max_fee  # the original takes every wei the bump would need
    lost = await poor.prepare({"to": d.trader, "value": value}, gas=gas,
                              max_fee_per_gas=max_fee, max_priority_fee_per_gas=tip)
    with pytest.raises(TxTimeout) as info:
        await poor.wait_or_replace(lost, timeout=0.1, max_replacements=2)
    assert info.value.tx_hashes[0] == lost.tx_hash and info.value.nonce == lost.nonce


async def test_failed_broadcast_in_send_leaves_no_nonce_gap(chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    d = chain.devnet
    sender = chain.treasury
    real = chain.w3.eth.send_raw_transaction

    async def refuse(raw):  # noqa: ANN001, ANN202
        raise ConnectionError("connection reset by peer")

    monkeypatch.setattr(chain.w3.eth, "send_raw_transaction", refuse)
    seen = []
    with pytest.raises(ChainError):
        await sender.send({"to": d.trader, "value": 1}, on_prepared=seen.append)
    assert await sender.nonce_state(seen[0].nonce) is NonceStatus.FREE
    monkeypatch.setattr(chain.w3.eth, "send_raw_transaction", real)
    receipt = await sender.send({"to": d.trader, "value": 2}, timeout=2)
    assert (await chain.w3.eth.get_transaction(receipt["transactionHash"]))["nonce"] == seen[0].nonce


async def test_failing_on_prepared_leaves_no_nonce_gap(chain: Chain) -> None:
    d = chain.devnet
    sender = chain.treasury
    seen = []

    def persist_fails(p):  # noqa: ANN001, ANN202
        seen.append(p)
        raise OSError("database is gone")

    with pytest.raises(OSError):
        await sender.send({"to": d.trader, "value": 1}, on_prepared=persist_fails)
    assert (await sender.lookup(seen[0].tx_hash)).status is TxStatus.UNKNOWN
    receipt = await sender.send({"to": d.trader, "value": 2}, timeout=2)
    assert (await chain.w3.eth.get_transaction(receipt["transactionHash"]))["nonce"] == seen[0].nonce


async def test_another_accounts_transaction_is_never_re_signed(chain: Chain) -> None:
    """After a key change the persisted transactions belong to the old account: replacing one
    with the new key would be a second, independent transaction (a second swap), not a
    replacement."""
    from chain.errors import ConfigError
    from chain.tx import PreparedTx

    d = chain.devnet
    old = await chain.trader.prepare({"to": d.treasury, "value": 1})
    restored = PreparedTx.from_raw(old.raw)
    with pytest.raises(ConfigError):
        await chain.treasury.wait_or_replace(restored, timeout=0.1, max_replacements=1)
    assert await chain.w3.eth.get_transaction_count(d.treasury, "pending") == 0


async def test_a_replacement_refused_as_underpriced_is_bumped_again(chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    d = chain.devnet
    sender = chain.treasury
    lost = await sender.prepare({"to": d.trader, "value": 1})  # never reaches the node
    real = chain.w3.eth.send_raw_transaction
    refused = []

    async def picky_node(raw):  # noqa: ANN001, ANN202
        if not refused:  # this node wants more than a 10% bump, once
            refused.append(raw)
            raise ValueError("replacement transaction underpriced")
        return await real(raw)

    monkeypatch.setattr(chain.w3.eth, "send_raw_transaction", picky_node)
    signed = []
    receipt = await sender.wait_or_replace(lost, timeout=0.1, max_replacements=3, on_prepared=signed.append)
    assert len(signed) == 2 and signed[0].tx_hash != signed[1].tx_hash
    assert signed[1].max_fee_per_gas * 10 >= signed[0].max_fee_per_gas * 11
    assert "0x" + bytes(receipt["transactionHash"]).hex() == signed[1].tx_hash


async def test_confirmed_while_checking_the_nonce_is_returned(chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    d = chain.devnet
    sender = chain.treasury
    p = await sender.prepare({"to": d.trader, "value": 1})
    await sender.broadcast(p)
    real = sender.nonce_state

    async def block_arrives(nonce: int) -> NonceStatus:
        chain.tester.mine_blocks(1)  # the second confirmation lands just as the wait ended
        return await real(nonce)

    monkeypatch.setattr(sender, "nonce_state", block_arrives)
    receipt = await sender.wait_or_replace(p, confirmations=2, timeout=0.1, max_replacements=0)
    assert "0x" + bytes(receipt["transactionHash"]).hex() == p.tx_hash


async def test_a_reorged_transaction_is_rebroadcast_and_its_nonce_never_handed_out(chain: Chain) -> None:
    """A reorg dropped a transaction of ours whose signed bytes we stored: a new sender (a new
    run, no memory) re-broadcasts those bytes and signs the next transaction with the nonce
    after it. Without them it would hand out the dropped nonce, and the stored transaction
    could then never be mined."""
    from chain.tx import PreparedTx

    d = chain.devnet
    stored: list[bytes] = []

    async def outstanding(from_nonce: int) -> list[bytes]:
        return [raw for raw in stored if PreparedTx.from_raw(raw).nonce >= from_nonce]

    snapshot = chain.tester.take_snapshot()
    sender = chain.sender(d.treasury_key, outstanding=outstanding)
    receipt, dropped = await sender.send_tracked({"to": d.trader, "value": 7},
                                                 on_prepared=lambda p: stored.append(p.raw))
    assert receipt["status"] == 1
    chain.tester.revert_to_snapshot(snapshot)  # the reorg
    assert (await sender.lookup(dropped.tx_hash)).status is TxStatus.UNKNOWN

    forgetful = chain.sender(d.treasury_key)  # what a sender without the stored bytes does
    assert (await forgetful.prepare({"to": d.trader, "value": 8})).nonce == dropped.nonce

    fresh = chain.sender(d.treasury_key, outstanding=outstanding)
    nxt = await fresh.prepare({"to": d.trader, "value": 8})
    assert nxt.nonce == dropped.nonce + 1
    found = await fresh.lookup(dropped.tx_hash)  # mined again from its stored bytes
    assert found.status is TxStatus.SUCCESS and found.nonce == dropped.nonce
    await fresh.broadcast(nxt)
    assert (await fresh.wait_for_receipt(nxt.tx_hash))["status"] == 1


async def test_a_receipt_from_a_block_no_longer_canonical_does_not_count(chain: Chain) -> None:
    """A reorg that re-mines the same transaction at another block: gone while it is out, then
    the receipt of the block that is the chain's block at that number."""
    from chain.tx import canonical_receipt

    d = chain.devnet
    sender = chain.treasury
    snapshot = chain.tester.take_snapshot()
    p = await sender.prepare({"to": d.trader, "value": 9})
    await sender.broadcast(p)
    first = await canonical_receipt(chain.w3, p.tx_hash)
    assert first is not None
    chain.tester.revert_to_snapshot(snapshot)
    assert await canonical_receipt(chain.w3, p.tx_hash) is None
    chain.tester.time_travel(chain.tester.get_block_by_number("latest")["timestamp"] + 30)
    await sender.broadcast_raw(p.raw, p.tx_hash)  # the same bytes, in another block
    again = await canonical_receipt(chain.w3, p.tx_hash)
    assert again is not None and again["blockHash"] != first["blockHash"]
