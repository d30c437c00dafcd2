"""/burns/summary is `reconciled` only when the chain agrees with the records too: the audit's
phantom burn (recorded burned, not on chain: difference -1.04e18) still said `reconciled: true`,
because only the USD ledger was checked. The chain part compares the treasury's Transfers of
$SERV to the burn address (eth_getLogs) with the recorded burns; what others send to the burn
address is not a disagreement."""

from __future__ import annotations

from eth_account import Account

from chain.tokens import erc20
from chain.tx import TxSender
from jobs.treasury_tasks import check_buyback_threshold
from tests.treasury.conftest import TApp

GWEI = 10**9


async def _burned(t: TApp, amount: str = "150", snapshots: list[int] | None = None) -> int:
    await t.add_revenue(amount)
    bid = await check_buyback_threshold({"app": t.ctx})
    assert bid is not None

    async def before_burn(name: str) -> None:
        if name == "burn:prepared" and snapshots is not None:
            snapshots.append(t.tester.take_snapshot())

    assert await t.run(bid, checkpoint=before_burn) == "burned"
    return bid


async def test_reconciled_when_the_chain_and_the_ledger_agree(tapp: TApp) -> None:
    t = tapp
    bid = await _burned(t)
    # someone else burns $SERV too: the burn address's balance grows, our burns do not
    d = t.devnet
    trader = TxSender(t.w3, Account.from_key(d.trader_key), max_fee_wei=1000 * GWEI)
    serv = erc20(t.w3, d.serv_token)
    await trader.send({"to": d.serv_token, "data": serv.encode_abi(
        "transfer", [d.burn_address, 5 * 10**18])})
    s = (await t.api.client.get("/burns/summary")).json()
    bb = await t.buyback(bid)
    assert int(s["chain_burned_by_treasury"]) == int(s["recorded_burned"]) == bb.serv_burned
    assert int(s["difference"]) == 5 * 10**18
    assert (s["reconciled"], s["chain_reconciled"], s["ledger_reconciled"],
            s["disagreements"]) == (True, True, True, [])


async def test_a_burn_the_chain_does_not_have_is_not_reconciled(tapp: TApp) -> None:
    """A burn recorded as burned that a reorg (deeper than CONFIRMATIONS, here 1) took away."""
    t = tapp
    snapshots: list[int] = []
    bid = await _burned(t, snapshots=snapshots)
    t.tester.revert_to_snapshot(snapshots[0])
    s = (await t.api.client.get("/burns/summary")).json()
    bb = await t.buyback(bid)
    assert int(s["recorded_burned"]) == bb.serv_burned > 0
    assert int(s["chain_burned_by_treasury"]) == 0
    assert int(s["difference"]) == -bb.serv_burned
    assert s["ledger_reconciled"] is True  # the USD ledger alone says nothing is wrong
    assert (s["reconciled"], s["chain_reconciled"]) == (False, False)
    assert s["disagreements"] and all(p.startswith("chain:") for p in s["disagreements"])
    assert f"chain - records = {-bb.serv_burned}" in s["disagreements"][0]


async def test_a_treasury_burn_outside_the_records_is_a_disagreement(tapp: TApp) -> None:
    t = tapp
    await _burned(t)
    d = t.devnet
    serv = erc20(t.w3, d.serv_token)
    trader = TxSender(t.w3, Account.from_key(d.trader_key), max_fee_wei=1000 * GWEI)
    await trader.send({"to": d.serv_token, "data": serv.encode_abi("transfer", [d.treasury, 1])})
    treasury = TxSender(t.w3, Account.from_key(d.treasury_key), max_fee_wei=1000 * GWEI)
    await treasury.send({"to": d.serv_token, "data": serv.encode_abi(
        "transfer", [d.burn_address, 1])})
    s = (await t.api.client.get("/burns/summary")).json()
    assert (s["reconciled"], s["chain_reconciled"], s["ledger_reconciled"]) == (False, False, True)
    assert "chain - records = 1" in s["disagreements"][0]
