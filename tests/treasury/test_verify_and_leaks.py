"""GET /burns/{id}/verify must not pass on records that point at someone else's transactions,
and chain errors on public endpoints must not reveal the RPC URL (it often carries an API key)."""

from __future__ import annotations

import dataclasses
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from eth_account import Account
from sqlalchemy import update

from app.models import BuybackTx
from chain.client import make_web3
from chain.tokens import erc20
from chain.tx import TxSender
from jobs.treasury_tasks import check_buyback_threshold
from tests.treasury.conftest import TApp


async def test_a_swap_record_pointing_at_a_plain_transfer_fails_verify(tapp: TApp) -> None:
    t = tapp
    d = t.devnet
    await t.add_revenue("100")
    bid = await check_buyback_threshold({"app": t.ctx})
    assert bid is not None and await t.run(bid) == "burned"
    swap = next(r for r in await t.txs(bid) if r.kind == "swap")
    # a trader sends the treasury exactly what the swap bought: a SERV transfer to the
    # treasury of the right amount, but no swap of the treasury's stablecoin
    trader = TxSender(t.w3, Account.from_key(d.trader_key), max_fee_wei=1000 * 10**9,
                      poll_interval=0.01)
    call = await erc20(t.w3, d.serv_token).functions.transfer(
        d.treasury, int(swap.amount_out)).build_transaction({"from": trader.address})
    receipt = await trader.send(call)
    fake = "0x" + bytes(receipt["transactionHash"]).hex()
    async with t.ctx.db.transaction() as session:
        await session.execute(update(BuybackTx).where(BuybackTx.id == swap.id).values(tx_hash=fake))
    body = (await t.api.client.get(f"/burns/{bid}/verify")).json()
    failing = {c["name"] for c in body["checks"] if not c["ok"]}
    assert body["verified"] is False and failing == {"swap_output_equals_burn_input"}, body


class _Unauthorized(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        self.send_response(401)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


async def test_chain_errors_on_public_endpoints_do_not_show_the_rpc_url(tapp: TApp) -> None:
    t = tapp
    await t.add_revenue("100")
    bid = await check_buyback_threshold({"app": t.ctx})
    assert bid is not None and await t.run(bid) == "burned"
    server = HTTPServer(("127.0.0.1", 0), _Unauthorized)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    secret = "sekrit-api-key-123"
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v3/{secret}"
        tr = t.ctx.treasury
        t.ctx.treasury = dataclasses.replace(tr, w3=make_web3(url))
        for path in ("/burns/summary", f"/burns/{bid}/verify"):
            r = await t.api.client.get(path)
            assert r.status_code == 503 and r.json()["error"] == "chain_unavailable", (path, r.text)
            assert secret not in r.text, r.text
    finally:
        t.ctx.treasury = tr
        server.shutdown()
        server.server_close()
