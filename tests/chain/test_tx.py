from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path

import pytest
from eth_account import Account

from chain.config import ChainConfig
from chain.dex import ensure_allowance, swap
from chain.errors import ConfigError, FeeCapExceeded, NonceError, TxTimeout
from chain.tokens import erc20
from chain.tx import FileNonceStore, NonceStatus, PreparedTx, TxSender, TxStatus, load_account
from tests.chain.conftest import Chain

USD = 10**6
GWEI = 10**9


async def test_hash_and_nonce_are_known_before_broadcast(chain: Chain) -> None:
    d = chain.devnet
    sender = chain.treasury
    usd = erc20(chain.w3, d.quote_token)
    prepared = await sender.prepare({"to": usd.address, "data": usd.encode_abi("transfer", [d.trader, 1])})
    assert prepared.nonce == await chain.w3.eth.get_transaction_count(d.treasury, "pending")
    assert (await sender.lookup(prepared.tx_hash)).status is TxStatus.UNKNOWN
    assert await sender.nonce_state(prepared.nonce) is NonceStatus.FREE
    assert prepared.max_fee_per_gas <= 500 * GWEI
    assert await sender.broadcast(prepared) == prepared.tx_hash
    assert await sender.broadcast(prepared) == prepared.tx_hash  # idempotent
    receipt = await sender.wait_for_receipt(prepared.tx_hash, confirmations=1, timeout=5)
    assert "0x" + bytes(receipt["transactionHash"]).hex() == prepared.tx_hash
    found = await sender.lookup(prepared.tx_hash)
    assert found.status is TxStatus.SUCCESS and found.nonce == prepared.nonce
    assert found.block_number == receipt["blockNumber"] and found.confirmations == 1
    assert await sender.nonce_state(prepared.nonce) is NonceStatus.MINED


async def test_restart_between_buyback_steps_reuses_no_nonce(chain: Chain, tmp_path: Path) -> None:
    d = chain.devnet
    store_path = tmp_path / "nonces.json"
    path = [d.quote_token, d.serv_token]

    first = chain.sender(d.treasury_key, nonce_store=FileNonceStore(store_path))
    approve = await ensure_allowance(first, d.quote_token, d.router, 500 * USD)
    assert approve is not None
    # step 2 was signed and persisted, then the process died before broadcasting it
    usd = erc20(chain.w3, d.quote_token)
    orphan = await first.prepare({"to": usd.address, "data": usd.encode_abi("transfer", [d.trader, 7])})
    del first

    restarted = chain.sender(d.treasury_key, nonce_store=FileNonceStore(store_path))
    assert await chain.w3.eth.get_transaction_count(d.treasury, "pending") == orphan.nonce
    step = await restarted.prepare({"to": usd.address, "data": usd.encode_abi("transfer", [d.trader, 8])})
    assert step.nonce == orphan.nonce + 1  # not the orphan's nonce, although the chain has not seen it
    # the treasury re-broadcasts what it persisted, in nonce order
    with pytest.raises(NonceError):
        await restarted.broadcast(step)  # eth-tester refuses nonce gaps outright (nodes queue them)
    await restarted.broadcast_raw(orphan.raw, orphan.tx_hash)
    await restarted.broadcast(step)
    result = await swap(restarted, chain.router, 500 * USD, path, max_slippage_bps=50,
                        max_price_impact_bps=200)
    assert result.approve_tx_hash is None  # the allowance from before the restart is enough
    assert result.nonce == orphan.nonce + 2
    for h in (orphan.tx_hash, step.tx_hash):
        assert (await restarted.wait_for_receipt(h, timeout=5))["status"] == 1
    used = [approve["transactionHash"], orphan.tx_hash, step.tx_hash, result.tx_hash]
    nonces = [(await chain.w3.eth.get_transaction(h))["nonce"] for h in used]
    assert nonces == list(range(nonces[0], nonces[0] + 4))
    assert json.loads(store_path.read_text())  # persisted


async def test_concurrent_prepares_get_distinct_nonces(chain: Chain) -> None:
    d = chain.devnet
    sender = chain.treasury
    prepared = await asyncio.gather(*[sender.prepare({"to": d.trader, "value": i + 1}) for i in range(5)])
    assert sorted(p.nonce for p in prepared) == list(range(prepared[0].nonce, prepared[0].nonce + 5))
    for p in sorted(prepared, key=lambda p: p.nonce):
        await sender.broadcast(p)
    for p in prepared:
        assert (await sender.wait_for_receipt(p.tx_hash, timeout=5))["status"] == 1


async def test_release_gives_back_an_unbroadcast_nonce(chain: Chain) -> None:
    d = chain.devnet
    sender = chain.treasury
    p = await sender.prepare({"to": d.trader, "value": 1})
    assert await sender.release(p)
    again = await sender.prepare({"to": d.trader, "value": 2})
    assert again.nonce == p.nonce


async def test_stuck_transaction_is_replaced_with_same_nonce_and_higher_fees(chain: Chain) -> None:
    d = chain.devnet
    sender = chain.treasury
    lost = await sender.prepare({"to": d.trader, "value": 12345})
    # `lost` never reaches the node (dropped from a mempool): the timeout replaces it
    replacements = []
    receipt = await sender.wait_or_replace(
        lost, confirmations=1, timeout=0.2, max_replacements=2, on_prepared=replacements.append
    )
    assert len(replacements) == 1
    repl = replacements[0]
    assert repl.nonce == lost.nonce and repl.tx_hash != lost.tx_hash
    assert repl.max_fee_per_gas * 10 >= lost.max_fee_per_gas * 11
    assert repl.max_priority_fee_per_gas * 10 >= lost.max_priority_fee_per_gas * 11
    assert "0x" + bytes(receipt["transactionHash"]).hex() == repl.tx_hash
    assert (await sender.lookup(lost.tx_hash)).status is TxStatus.UNKNOWN
    assert (await sender.lookup(repl.tx_hash)).status is TxStatus.SUCCESS
    assert await sender.nonce_state(lost.nonce) is NonceStatus.MINED


async def test_timeout_reports_every_hash_tried(chain: Chain) -> None:
    d = chain.devnet
    sender = chain.treasury
    lost = await sender.prepare({"to": d.trader, "value": 1})
    with pytest.raises(TxTimeout) as info:
        await sender.wait_or_replace(lost, timeout=0.1, max_replacements=0)
    assert info.value.tx_hashes == (lost.tx_hash,) and info.value.nonce == lost.nonce
    with pytest.raises(TxTimeout):
        await sender.wait_for_receipt("0x" + "cd" * 32, timeout=0.05)


async def test_waits_for_confirmations(chain: Chain) -> None:
    d = chain.devnet
    sender = chain.treasury
    p = await sender.prepare({"to": d.trader, "value": 1})
    await sender.broadcast(p)

    async def mine_later() -> None:
        for _ in range(2):
            await asyncio.sleep(0.05)
            chain.tester.mine_blocks(1)

    miner = asyncio.create_task(mine_later())
    receipt = await sender.wait_for_receipt(p.tx_hash, confirmations=3, timeout=5)
    await miner
    assert await chain.w3.eth.block_number - receipt["blockNumber"] + 1 >= 3
    assert (await sender.lookup(p.tx_hash)).confirmations == 3


async def test_fee_cap(chain: Chain) -> None:
    d = chain.devnet
    base = (await chain.w3.eth.get_block("latest"))["baseFeePerGas"]
    sender = chain.sender(d.treasury_key, max_fee_wei=base)
    with pytest.raises(FeeCapExceeded):
        await sender.send({"to": d.trader, "value": 1})
    assert await chain.w3.eth.get_transaction_count(d.treasury, "pending") == 0
    capped = chain.sender(d.treasury_key, max_fee_wei=base + GWEI, priority_fee_wei=5 * GWEI)
    p = await capped.prepare({"to": d.trader, "value": 1})
    assert p.max_fee_per_gas <= base + GWEI and p.max_priority_fee_per_gas <= p.max_fee_per_gas


async def test_signer_from_keystore_and_secrets_stay_out_of_repr(chain: Chain, tmp_path: Path) -> None:
    d = chain.devnet
    keystore = tmp_path / "treasury.json"
    keystore.write_text(json.dumps(Account.encrypt(d.treasury_key, "pw", iterations=2)))
    config = ChainConfig(treasury_keystore=keystore, treasury_keystore_password="pw",
                         max_fee_gwei=Decimal("500"), router=d.router.lower())
    sender = TxSender.from_config(chain.w3, config)
    assert sender.address == d.treasury
    assert d.treasury_key[2:] not in repr(sender)
    assert config.router == d.router  # checksummed
    with pytest.raises(ConfigError):
        load_account(keystore=keystore, password="wrong")
    secret = ChainConfig(treasury_private_key=d.treasury_key, treasury_keystore_password="pw")
    assert d.treasury_key not in repr(secret) and "pw" not in repr(secret)
    assert ChainConfig(max_fee_gwei=Decimal("1.5")).max_fee_wei == 1_500_000_000
    with pytest.raises(ConfigError):
        ChainConfig(router="0x1234")
    with pytest.raises(ConfigError):
        load_account(private_key="0x00")


async def test_prepared_tx_survives_a_restart_as_raw_bytes(chain: Chain) -> None:
    d = chain.devnet
    sender = chain.treasury
    usd = erc20(chain.w3, d.quote_token)
    prepared = await sender.prepare({"to": usd.address, "data": usd.encode_abi("transfer", [d.trader, 3])})
    persisted = "0x" + prepared.raw.hex()  # what the treasury stores next to hash and nonce
    restored = PreparedTx.from_raw(persisted)
    assert restored.tx_hash == prepared.tx_hash and restored.nonce == prepared.nonce
    assert restored.sender == d.treasury and dict(restored.tx) == dict(prepared.tx)
    restarted = chain.treasury
    receipt = await restarted.wait_or_replace(restored, timeout=0.1, max_replacements=1)
    # the node never saw the original: a replacement (same nonce) was mined instead
    assert (await restarted.lookup(prepared.tx_hash)).status is TxStatus.UNKNOWN
    assert (await chain.w3.eth.get_transaction(receipt["transactionHash"]))["nonce"] == prepared.nonce


async def test_block_time_is_read_from_the_chains_timestamps(chain) -> None:  # type: ignore[no-untyped-def]
    import time as _time

    from chain.tx import block_time

    chain.tester.time_travel(int(_time.time()) + 3600)
    for _ in range(5):
        # time_travel(T) mines a block at T - 1
        chain.tester.time_travel(chain.tester.get_block_by_number("latest")["timestamp"] + 6)
    assert await block_time(chain.w3, 5) == 5.0
    assert await block_time(chain.w3, 6) == pytest.approx((5 * 5 + 3600) / 6, rel=0.01)
