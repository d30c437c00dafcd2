"""On-chain deposits on eth-tester: a memo transfer is a plain ERC-20 transfer to the stablecoin;
a deposit is credited once it is CONFIRMATIONS deep and not before, once however many passes
run; a deposit in a block a reorg takes away is never credited; a credited one whose
transaction leaves the chain is reversed once; deposits without a known memo wait for an
operator."""

from __future__ import annotations

from decimal import Decimal

from chain.deposits import MEMO_CALL_LENGTH, deposit_tx, memo_of
from chain.tokens import transfers
from tests.accounts.conftest import DEPTH, DApp

REF = "00c0ffee12345678"


async def test_the_stablecoin_accepts_a_transfer_with_a_memo_appended(dapp: DApp) -> None:
    d = dapp.t.devnet
    before = await dapp.t.balance(d.quote_token, d.treasury)
    tx_hash, block = await dapp.pay("12.5", REF)
    receipt = await dapp.t.w3.eth.get_transaction_receipt(tx_hash)
    tx = await dapp.t.w3.eth.get_transaction(tx_hash)
    assert receipt["status"] == 1 and len(bytes(tx["input"])) == MEMO_CALL_LENGTH
    [moved] = transfers(receipt)
    assert (moved.token, moved.to_address, moved.amount) == (d.quote_token, d.treasury, 12_500_000)
    assert await dapp.t.balance(d.quote_token, d.treasury) - before == 12_500_000
    assert memo_of(tx["input"], tx["to"], d.quote_token, d.treasury, [12_500_000]) == REF
    # the memo is only read from the call that made exactly that transfer
    assert memo_of(tx["input"], tx["to"], d.quote_token, d.treasury, [12_500_001]) is None
    assert memo_of(tx["input"], tx["to"], d.quote_token, d.trader, [12_500_000]) is None
    assert memo_of(tx["input"], d.serv_token, d.quote_token, d.treasury, [12_500_000]) is None
    found = await deposit_tx(dapp.t.w3, tx_hash, d.quote_token, d.treasury)
    assert found is not None and found.memo == REF and found.block_number == block


async def test_credited_at_the_configured_depth_and_not_before_once(dapp_any: DApp) -> None:
    dapp = dapp_any
    acme = await dapp.business("acme", REF)
    _, block = await dapp.pay("25.000001", REF)
    for _ in range(DEPTH - 1):  # 1 .. DEPTH-1 confirmations: seen, not credited
        head = await dapp.t.w3.eth.block_number
        assert head - block + 1 < DEPTH
        result = await dapp.scan()
        assert result.credited == []
        [row] = await dapp.rows()
        assert row.status == "seen" and row.business_id == acme and row.reference == REF
        assert await dapp.balance(acme) == 0
        dapp.mine()
    assert await dapp.t.w3.eth.block_number - block + 1 == DEPTH
    result = await dapp.scan()
    [row] = await dapp.rows()
    assert result.credited == [row.id] and row.status == "credited"
    assert row.amount == 25_000_001 and row.amount_usd == Decimal("25.000001")
    assert await dapp.balance(acme) == Decimal("25.000001")
    for _ in range(3):  # more passes, deeper blocks: nothing moves twice
        dapp.mine()
        assert (await dapp.scan()).credited == []
    assert await dapp.balance(acme) == Decimal("25.000001")
    [entry] = await dapp.entries(acme)
    assert entry.kind == "topup" and entry.actor == "chain"
    assert entry.reference == f"deposit:{row.tx_hash}:{row.log_index}"
    assert row.ledger_entry_id == entry.id


async def test_a_deposit_in_a_reverted_block_is_never_credited(dapp: DApp) -> None:
    acme = await dapp.business("acme", REF)
    snapshot = dapp.t.tester.take_snapshot()
    await dapp.pay("40", REF)
    dapp.mine(DEPTH - 2)
    await dapp.scan()
    [row] = await dapp.rows()
    assert row.status == "seen"
    dapp.t.tester.revert_to_snapshot(snapshot)  # a reorg: the deposit's block is gone
    dapp.mine(DEPTH + 2)  # other blocks: the chain is past the depth by number
    result = await dapp.scan()
    [row] = await dapp.rows()
    assert result.dropped == [row.id] and row.status == "dropped" and result.credited == []
    dapp.mine(DEPTH)
    await dapp.scan()
    assert (await dapp.rows())[0].status == "dropped"
    assert await dapp.balance(acme) == 0 and await dapp.entries(acme) == []


async def test_a_reorged_deposit_mined_again_is_credited_once_where_it_is(dapp: DApp) -> None:
    acme = await dapp.business("acme", REF)
    snapshot = dapp.t.tester.take_snapshot()
    raw: list[bytes] = []
    tx_hash, first_block = await dapp.pay("7", REF, raw)
    await dapp.scan()
    dapp.t.tester.revert_to_snapshot(snapshot)
    dapp.mine(2)
    await dapp.scan()
    assert (await dapp.rows())[0].status == "dropped"
    await dapp.t.w3.eth.send_raw_transaction(raw[-1])  # the same signed payment, mined again
    receipt = await dapp.t.w3.eth.wait_for_transaction_receipt(tx_hash)
    assert receipt["blockNumber"] != first_block
    dapp.mine(DEPTH)
    result = await dapp.scan()
    [row] = await dapp.rows()
    assert row.status == "credited" and result.credited == [row.id]
    assert row.block_number == receipt["blockNumber"]
    assert await dapp.balance(acme) == Decimal(7)
    assert len(await dapp.entries(acme)) == 1


async def test_a_credited_deposit_whose_transaction_leaves_is_reversed_once(dapp_any: DApp) -> None:
    dapp = dapp_any
    acme = await dapp.business("acme", REF)
    snapshot = dapp.t.tester.take_snapshot()
    await dapp.pay("30", REF)
    dapp.mine(DEPTH)
    assert len((await dapp.scan()).credited) == 1
    assert await dapp.balance(acme) == Decimal(30)
    dapp.t.tester.revert_to_snapshot(snapshot)  # a reorg deeper than CONFIRMATIONS
    dapp.mine(DEPTH + 3)
    result = await dapp.scan()
    [row] = await dapp.rows()
    assert result.reversed == [row.id] and row.status == "reversed"
    assert await dapp.balance(acme) == 0
    for _ in range(2):  # rescans reverse nothing twice
        dapp.mine()
        assert (await dapp.scan()).reversed == []
    credit, reversal = await dapp.entries(acme)
    assert (credit.kind, credit.amount_usd) == ("topup", Decimal(30))
    assert (reversal.kind, reversal.amount_usd) == ("adjustment", Decimal(-30))
    assert reversal.reference == "reversal:" + credit.reference.removeprefix("deposit:")
    assert row.reversal_entry_id == reversal.id


async def test_without_a_known_memo_a_deposit_waits_for_an_operator(dapp: DApp) -> None:
    acme = await dapp.business("acme", REF)
    plain, _ = await dapp.pay("5", None)
    unknown, _ = await dapp.pay("6", "ffffffffffffffff")
    dapp.mine(DEPTH)
    result = await dapp.scan()
    rows = {r.tx_hash: r for r in await dapp.rows()}
    assert sorted(result.unattributed) == sorted(r.id for r in rows.values())
    assert rows[plain].reference is None and rows[unknown].reference == "ffffffffffffffff"
    assert all(r.status == "unattributed" and r.business_id is None for r in rows.values())
    assert await dapp.balance(acme) == 0

    auth = await dapp.t.operator_auth()
    r = await dapp.t.api.client.post(f"/deposits/{rows[plain].id}/assign",
                                     json={"business_id": acme}, headers=auth)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "credited"
    assert await dapp.balance(acme) == Decimal(5)
    again = await dapp.t.api.client.post(f"/deposits/{rows[plain].id}/assign",
                                         json={"business_id": acme}, headers=auth)
    assert again.status_code == 409 and again.json()["error"] == "deposit_not_unattributed"
    assert (await dapp.t.api.client.post(f"/deposits/{rows[unknown].id}/assign",
                                         json={"business_id": acme})).status_code == 401
    dapp.mine()
    await dapp.scan()
    assert await dapp.balance(acme) == Decimal(5)


async def test_a_deposit_mined_again_but_reverted_there_is_dropped(dapp: DApp) -> None:
    """After the reorg the same signed payment is mined again, but the payer's funds went first
    in that block: it reverts, moves nothing, and is never credited."""
    from eth_account import Account

    from chain.deposits import deposit
    from chain.tokens import erc20
    from chain.tx import TxSender

    acme = await dapp.business("acme", REF)
    d, w3 = dapp.t.devnet, dapp.t.w3
    usd = erc20(w3, d.quote_token)
    trader = dapp.payer()
    payer = Account.create()
    await trader.send({"to": payer.address, "value": 10**18})
    await trader.send({"to": usd.address, "data": usd.encode_abi("transfer", [payer.address, 7 * 10**6])})
    own = TxSender(w3, payer, max_fee_wei=1000 * 10**9, poll_interval=0.01)
    await own.send({"to": usd.address, "data": usd.encode_abi("approve", [d.trader, 2**255])})
    snapshot = dapp.t.tester.take_snapshot()
    raw: list[bytes] = []
    tx_hash, _ = await deposit(own, d.quote_token, d.treasury, 7 * 10**6, REF,
                               on_prepared=lambda p: raw.append(p.raw))
    await dapp.scan()
    assert (await dapp.rows())[0].status == "seen"

    dapp.t.tester.revert_to_snapshot(snapshot)
    take = await trader.prepare({"to": usd.address, "data": usd.encode_abi(
        "transferFrom", [payer.address, d.trader, 7 * 10**6])})
    dapp.t.tester.disable_auto_mine_transactions()
    try:
        await trader.broadcast(take)
        await w3.eth.send_raw_transaction(raw[-1])
        dapp.mine(1)
    finally:
        dapp.t.tester.enable_auto_mine_transactions()
    assert (await w3.eth.get_transaction_receipt(tx_hash))["status"] == 0
    dapp.mine(DEPTH)
    result = await dapp.scan()
    [row] = await dapp.rows()
    assert row.status == "dropped" and result.dropped == [row.id] and result.credited == []
    await dapp.scan()
    assert await dapp.balance(acme) == 0 and await dapp.entries(acme) == []


async def test_the_worker_task_scans_at_its_interval_and_waits_without_a_treasury(
        dapp: DApp, settings_factory) -> None:  # type: ignore[no-untyped-def]
    from jobs.deposit_tasks import scan_deposits
    from tests.support.harness import running_app

    acme = await dapp.business("acme", REF)
    await dapp.pay("4", REF)
    dapp.mine(DEPTH)
    job: dict[str, object] = {"app": dapp.ctx}
    assert await scan_deposits(job) == 1
    assert await dapp.balance(acme) == Decimal(4)
    assert await scan_deposits(job) is None  # within DEPOSIT_SCAN_INTERVAL_S: not again
    job["deposits_next_scan"] = 0.0
    assert await scan_deposits(job) == 0  # ran; nothing new
    async with running_app(settings_factory(chain_rpc_url="eth-tester")) as bare:  # no treasury
        assert await scan_deposits({"app": bare.ctx}) is None
