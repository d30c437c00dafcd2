from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from eth_utils import to_checksum_address

from chain import devnet as devnet_mod
from chain.burn import BURN_ADDRESS, burn, verify_burn
from chain.dex import swap
from chain.errors import TxNotFound
from chain.tokens import erc20, received
from tests.chain.conftest import Chain, require_contracts

USD = 10**6


async def test_devnet_deploys_a_funded_pool(chain: Chain) -> None:
    d, w3 = chain.devnet, chain.w3
    for address in (d.serv_token, d.quote_token, d.weth, d.factory, d.router, d.pair):
        assert await w3.eth.get_code(address)
    reserves = await chain.router.reserves([d.quote_token, d.serv_token])
    assert reserves == [(1_000_000 * USD, 100_000_000 * 10**18)]
    assert await erc20(w3, d.quote_token).functions.balanceOf(d.treasury).call() == 100_000 * USD
    assert await erc20(w3, d.quote_token).functions.decimals().call() == 6
    assert await erc20(w3, d.serv_token).functions.decimals().call() == 18
    assert await erc20(w3, d.serv_token).functions.totalSupply().call() == 10**9 * 10**18


async def test_quote_swap_burn_verify(chain: Chain) -> None:
    d, w3 = chain.devnet, chain.w3
    treasury, router = chain.treasury, chain.router
    serv = erc20(w3, d.serv_token)
    path = [d.quote_token, d.serv_token]
    amount_in = 1_000 * USD

    quote = await router.quote(amount_in, path)
    result = await swap(treasury, router, amount_in, path, to=d.treasury,
                        max_slippage_bps=50, max_price_impact_bps=200)
    assert result.received == quote.amount_out  # nobody traded in between
    assert result.amount_out_min == quote.amount_out * 9950 // 10_000
    assert await serv.functions.balanceOf(d.treasury).call() == result.received
    receipt = await w3.eth.get_transaction_receipt(result.tx_hash)
    assert received(receipt, d.serv_token, d.treasury) == result.received

    burn_before = await serv.functions.balanceOf(BURN_ADDRESS).call()
    burned = await burn(treasury, d.serv_token, result.received)
    assert burned.amount == result.received
    assert await serv.functions.balanceOf(BURN_ADDRESS).call() == burn_before + result.received
    assert await serv.functions.balanceOf(d.treasury).call() == 0

    v = await verify_burn(w3, burned.tx_hash, token=d.serv_token, expected_amount=result.received)
    assert v.verified and v.success and v.is_burn and v.matches_expected
    assert (v.token, v.from_address, v.to_address) == (d.serv_token, d.treasury, to_checksum_address(BURN_ADDRESS))
    assert v.amount == result.received and v.block_number == burned.block_number
    assert v.confirmations == 1
    # measured: swap 148,369 gas (first buy: fresh balance slot), burn 46,645 gas
    assert 80_000 < result.gas_used < 200_000 and 25_000 < burned.gas_used < 60_000
    wrong = await verify_burn(w3, burned.tx_hash, token=d.serv_token, expected_amount=result.received + 1)
    assert wrong.matches_expected is False and not wrong.verified

    # the swap moved SERV to the treasury, not to the burn address: not a burn
    not_burn = await verify_burn(w3, result.tx_hash, token=d.serv_token)
    assert not not_burn.is_burn and not not_burn.verified and not_burn.amount == 0
    with pytest.raises(TxNotFound):
        await verify_burn(w3, "0x" + "ab" * 32)


async def test_verify_burn_rejects_burn_of_another_token(chain: Chain) -> None:
    d = chain.devnet
    usd_burn = await burn(chain.treasury, d.quote_token, 5 * USD)
    v = await verify_burn(chain.w3, usd_burn.tx_hash, token=d.serv_token, expected_amount=5 * USD)
    assert not v.is_burn and v.matches_expected is False
    v_any = await verify_burn(chain.w3, usd_burn.tx_hash)
    assert v_any.is_burn and v_any.token == d.quote_token


def test_devnet_main_prints_addresses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require_contracts()
    out = tmp_path / "devnet.json"
    started = time.perf_counter()
    assert devnet_mod.main(["--out", str(out)]) == 0
    elapsed = time.perf_counter() - started
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    for key in ("serv_token", "quote_token", "router", "factory", "weth", "pair", "treasury"):
        assert data[key] in printed
    assert f"DEX_ROUTER_ADDRESS={data['router']}" in printed
    assert "DEV ONLY" in printed
    assert elapsed < 30


def test_dev_keys_are_deterministic() -> None:
    assert devnet_mod.dev_key("treasury") == devnet_mod.dev_key("treasury")
    assert devnet_mod.dev_key("treasury") != devnet_mod.dev_key("deployer")


async def test_verify_burn_of_a_reverted_transfer(chain: Chain) -> None:
    from chain.burn import burn_tx

    d = chain.devnet
    treasury = chain.treasury
    # more SERV than the treasury holds, with a fixed gas limit so estimation does not stop it
    p = await treasury.prepare(burn_tx(chain.w3, d.serv_token, 10**18), gas=100_000)
    await treasury.broadcast(p)
    receipt = await treasury.wait_for_receipt(p.tx_hash, timeout=5)
    assert receipt["status"] == 0
    v = await verify_burn(chain.w3, p.tx_hash, token=d.serv_token, expected_amount=10**18,
                          expected_from=d.treasury)
    assert not v.success and not v.is_burn and not v.verified and v.amount == 0
    assert v.matches_expected is False
