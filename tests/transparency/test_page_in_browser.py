"""/transparency in headless Chromium, against the real app over HTTP with a real buyback and
burn on the local chain (Uniswap V2 on eth-tester behind JSON-RPC): the burn's hashes are on the
page, one click verifies it with every check passing, the chart is drawn, the page fits a phone,
and with the chain gone the page says so and still shows our records. Screenshots are kept in
tests/artifacts/."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from eth_account import Account
from pydantic import SecretStr

from app.accounts.deposits import scan as scan_deposits
from app.config import Settings
from app.models import Business
from app.localredis import free_port
from chain.client import close, make_web3
from chain.deposits import deposit
from chain.devnet import dev_key
from chain.tokens import erc20
from chain.tx import TxSender
from jobs.treasury_tasks import check_buyback_threshold
from tests.support.browser import PageProblems, artifact, chromium, require_chromium
from tests.support.harness import running_app
from tests.support.live import live_server
from tests.treasury.conftest import add_revenue, treasury_app

# Pixels of the chart's canvas that are drawn on (not transparent): axes, line and bars.
DRAWN_PIXELS = """(canvas) => {
  const d = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n;
}"""
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True,
         "has_touch": True}
DESKTOP = {"viewport": {"width": 1280, "height": 900}}


async def someone_else_burns(settings: Settings, whole_serv: int) -> None:
    """A stranger (the devnet's trader) sends $SERV straight to the burn address, as anyone can."""
    w3 = make_web3(settings.chain_rpc_url)
    try:
        serv = erc20(w3, str(settings.serv_token_address))
        sender = TxSender(w3, Account.from_key(dev_key("trader")), max_fee_wei=1_000 * 10**9,
                          poll_interval=0.02)
        await sender.send({"to": serv.address, "data": serv.encode_abi(
            "transfer", [settings.burn_address, whole_serv * 10**18])})
    finally:
        await close(w3)


@dataclass
class Burned:
    settings: Settings
    burn: dict[str, Any]
    summary: dict[str, Any]
    checks: list[str]
    deposit: dict[str, Any]


@pytest.fixture
async def burned(chain_node_url, treasury_settings, devnet_layout, operator) -> Burned:  # type: ignore[no-untyped-def]
    """Real buybacks and burns (swaps on the router, transfers to the burn address), recorded
    in the test's database, with the chain left running behind JSON-RPC."""
    require_chromium()  # skip before spending a buyback on a machine without a browser
    settings = treasury_settings(chain_rpc_url=chain_node_url)
    async with treasury_app(settings, devnet_layout, operator) as t:
        for usd in ("123.45", "150.00"):  # two burns: the chart has a line to draw
            await t.add_revenue(usd)
            bid = await check_buyback_threshold({"app": t.ctx})
            assert bid is not None and await t.run(bid) == "burned"
        # and a business's top-up: the stablecoin sent to the treasury with its reference
        async with t.ctx.db.transaction() as session:
            session.add(Business(name="acme", deposit_ref="00c0ffee00c0ffee"))
        payer = TxSender(t.w3, Account.from_key(t.devnet.trader_key), max_fee_wei=1000 * 10**9,
                         poll_interval=0.02)
        await deposit(payer, t.devnet.quote_token, t.devnet.treasury, 10 * 10**6,
                      "00c0ffee00c0ffee")
        assert len((await scan_deposits(t.ctx)).credited) == 1  # CONFIRMATIONS=1
        burn = (await t.api.client.get("/burns")).json()["items"][0]  # the newest
        summary = (await t.api.client.get("/burns/summary")).json()
        assert summary["deposits_usd"] == "10.000000"
        verified = (await t.api.client.get(f"/burns/{bid}/verify")).json()
        assert verified["verified"] is True, verified
        [paid] = (await t.api.client.get("/deposits")).json()["items"]
    return Burned(settings, burn, summary, [c["name"] for c in verified["checks"]], paid)


async def test_a_person_sees_the_burn_and_verifies_it(burned: Burned) -> None:
    burn = burned.burn
    with live_server(burned.settings) as url:
        async with chromium(**DESKTOP) as browser:
            page = await browser.new_page()
            problems = PageProblems(page, url)
            response = await page.goto(f"{url}/transparency")
            assert response is not None and response.status == 200
            assert "script-src 'self'" in response.headers["content-security-policy"]

            burn_link = page.locator(f'a.hash[data-hash="{burn["burn_tx_hash"]}"]')
            await burn_link.wait_for(timeout=15_000)
            assert await burn_link.get_attribute("href") == burn["burn_explorer_url"]
            assert await burn_link.text_content() == (burn["burn_tx_hash"][:10] + "…"
                                                      + burn["burn_tx_hash"][-8:])
            for swap in burn["swap_tx_hashes"]:
                assert await page.locator(f'[data-hash="{swap}"]').count() == 1
            assert await page.locator("#revenue").text_content() == "$273.45"
            assert await page.locator("#bought").text_content() == "$273.45"
            recorded = burned.summary["recorded_burned_decimal"]
            assert await page.locator("#recorded").get_attribute("title") == recorded
            assert await page.locator("#onchain").get_attribute("title") == recorded
            assert await page.locator("#difference").text_content() == "0"
            assert "They match" in (await page.locator("#difference-note").text_content() or "")
            assert await page.locator("#chain-banner").is_hidden()
            assert await page.locator("#idle-rate").text_content() == "0.4"  # 2 jobs in 5 min
            # deposits in, beside the USD bought back and the $SERV burned
            assert await page.locator("#deposits-in").text_content() == "$10.00"
            assert "1 deposit credited" in (await page.locator("#deposits-note").text_content() or "")
            paid = burned.deposit
            row = page.locator(f'tr.deposit[data-id="{paid["id"]}"]')
            assert await row.get_attribute("data-status") == "credited"
            link = row.locator(f'a.hash[data-hash="{paid["tx_hash"]}"]')
            assert await link.get_attribute("href") == paid["explorer_url"]

            await page.locator(f'button.verify[data-id="{burn["buyback_id"]}"]').click()
            verdict = page.locator(f'tr.result[data-for="{burn["buyback_id"]}"] .verdict')
            await verdict.filter(has_text="Verified").wait_for(timeout=15_000)
            checks = page.locator(f'tr.result[data-for="{burn["buyback_id"]}"] ul.checks li')
            names = [await li.get_attribute("data-check") for li in await checks.all()]
            # every check /verify makes (7 since the treasury compares usd_swapped with the swaps)
            assert names == burned.checks and "usd_swapped_matches_swaps" in names
            assert [await li.get_attribute("class") for li in await checks.all()] == ["ok"] * 7
            assert "✓ Verified: all 7 checks passed" in (await verdict.text_content() or "")

            canvas = page.locator("#chart canvas")
            assert await canvas.count() == 1
            box = await canvas.bounding_box()
            assert box is not None and box["width"] > 300 and box["height"] > 150
            drawn = await canvas.evaluate(DRAWN_PIXELS)
            assert drawn > 2_000, f"the chart drew only {drawn} pixels"

            shot = artifact("transparency-desktop.png")
            await page.screenshot(path=str(shot), full_page=True)
            print(f"\nscreenshot: {shot}")
            assert problems.errors == []

        await someone_else_burns(burned.settings, 1)
        async with chromium(**PHONE) as browser:  # a new profile: nothing cached
            page = await browser.new_page()
            problems = PageProblems(page, url)
            await page.goto(f"{url}/transparency")
            await page.locator(f'[data-hash="{burn["burn_tx_hash"]}"]').wait_for(timeout=15_000)
            assert await page.locator("#difference").text_content() == "+1"
            assert "anyone can send $SERV to the burn address" in (
                await page.locator("#difference-note").text_content() or "")
            await page.locator("button.verify").first.click()
            await page.locator(".verdict.ok").wait_for(timeout=15_000)
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"the page is {width}px wide on a 390px phone"
            assert await page.locator("#chart canvas").evaluate(DRAWN_PIXELS) > 1_000
            shot = artifact("transparency-phone.png")
            await page.screenshot(path=str(shot), full_page=True)
            print(f"screenshot: {shot}")
            assert problems.errors == []


async def test_without_the_chain_the_page_says_so_and_shows_our_records(burned: Burned) -> None:
    # METRICS_TOKEN closes /metrics: the page reads only what stays public
    gone = burned.settings.model_copy(update={"chain_rpc_url": f"http://127.0.0.1:{free_port()}",
                                              "metrics_token": SecretStr("operators-only")})
    burn = burned.burn
    with live_server(gone) as url:
        async with chromium(**DESKTOP) as browser:
            page = await browser.new_page()
            problems = PageProblems(page, url)
            await page.clock.install()  # the page's 15 s timer, run on demand below
            await page.goto(f"{url}/transparency")
            banner = page.locator("#chain-banner")
            await banner.wait_for(timeout=15_000)
            assert "The blockchain is unreachable right now." in (await banner.text_content() or "")
            await page.locator(f'[data-hash="{burn["burn_tx_hash"]}"]').wait_for()
            assert await page.locator("#revenue").text_content() == "$273.45"
            assert await page.locator("#deposits-in").text_content() == "$10.00"  # our records
            recorded = Decimal(burned.summary["recorded_burned_decimal"])  # from /network now
            assert Decimal(await page.locator("#recorded").get_attribute("title") or "") == recorded
            assert recorded > 0
            assert await page.locator("#onchain").text_content() == "–"
            assert await page.locator("#chart canvas").evaluate(DRAWN_PIXELS) > 2_000

            await page.locator(f'button.verify[data-id="{burn["buyback_id"]}"]').click()
            verdict = page.locator(".verdict.bad")
            await verdict.wait_for(timeout=15_000)
            assert "the blockchain is unreachable" in (await verdict.text_content() or "")

            # It refreshes itself: new revenue shows up on the next tick, with no reload.
            async with running_app(gone) as app:
                await add_revenue(app.ctx, "1.50")
            await page.clock.run_for(15_000)
            await page.locator("#revenue").filter(has_text="$274.95").wait_for(timeout=15_000)
            assert "waiting for the next buyback" in (await page.locator("#bought-note")
                                                      .text_content() or "")
            assert await page.locator("tr.result .verdict.bad").count() == 1  # still shown

            shot = artifact("transparency-no-chain.png")
            await page.screenshot(path=str(shot), full_page=True)
            print(f"\nscreenshot: {shot}")
            # The 503s themselves are logged by Chromium as failed loads; anything else is not.
            assert [e for e in problems.errors if "status of 503" not in e] == []


async def test_before_any_burn_and_without_a_chain_configured(settings_factory) -> None:  # type: ignore[no-untyped-def]
    require_chromium()
    settings = settings_factory(run_maintenance_in_api=False, metrics_token="operators-only")
    with live_server(settings) as url:  # no CHAIN_RPC_URL
        async with chromium(**PHONE) as browser:
            page = await browser.new_page()
            problems = PageProblems(page, url)
            await page.goto(f"{url}/transparency")
            banner = page.locator("#chain-banner")
            await banner.wait_for(timeout=15_000)
            assert "not connected to a blockchain" in (await banner.text_content() or "")
            assert await page.locator("#burns-empty").is_visible()
            assert await page.locator("#burns").is_hidden()
            assert "after the first burn" in (await page.locator("#chart").text_content() or "")
            assert await page.locator("#revenue").text_content() == "$0.00"
            assert await page.locator("#recorded").text_content() == "0"
            assert await page.locator("#miners").text_content() == "0"
            assert await page.locator("#deposits-in").text_content() == "$0.00"
            assert await page.locator("#deposits-empty").is_visible()
            shot = artifact("transparency-empty-phone.png")
            await page.screenshot(path=str(shot), full_page=True)
            print(f"\nscreenshot: {shot}")
            assert [e for e in problems.errors if "status of 503" not in e] == []
