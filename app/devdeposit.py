"""`mia deposit --business-ref REF --amount 10`: DEV ONLY. The local chain's funded trader
account (chain/devnet.py, a publicly known key) sends the stablecoin to the treasury with the
reference appended to its transfer call, as a business's wallet would; the worker credits it
after CONFIRMATIONS. Refuses to run with ENV=production (the key is public: whatever it holds on
a real chain is anyone's)."""

from __future__ import annotations

import json
import sys
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from pathlib import Path

from app.config import Settings


async def send_dev_deposit(settings: Settings, reference: str, amount: str, devnet: str) -> int:
    from eth_account import Account

    from chain.client import close, make_web3
    from chain.deposits import deposit, deposit_call, normalize_memo
    from chain.devnet import dev_key
    from chain.tokens import erc20
    from chain.tx import TxSender

    if settings.env == "production":
        print("mia deposit: refusing with ENV=production: this command pays from a publicly "
              "known dev key", file=sys.stderr)
        return 2
    saved = json.loads(Path(devnet).read_text()) if Path(devnet).is_file() else {}
    rpc = settings.chain_rpc_url or saved.get("rpc_url")
    token = settings.quote_token_address or saved.get("quote_token")
    treasury = settings.treasury_address or saved.get("treasury")
    try:
        memo = normalize_memo(reference)
        usd = Decimal(amount)
    except (ValueError, InvalidOperation) as exc:
        print(f"mia deposit: {exc}", file=sys.stderr)
        return 2
    if not (rpc and token and treasury):
        print("mia deposit: no local chain found: run `mia dev` (it writes .dev/devnet.json) or "
              "set CHAIN_RPC_URL, QUOTE_TOKEN_ADDRESS and TREASURY_ADDRESS", file=sys.stderr)
        return 2
    w3 = make_web3(rpc)
    try:
        decimals = int(await erc20(w3, token).functions.decimals().call())
        units = int((usd * 10**decimals).to_integral_value(ROUND_FLOOR))
        if units <= 0:
            print("mia deposit: the amount must be positive", file=sys.stderr)
            return 2
        sender = TxSender(w3, Account.from_key(dev_key("trader")), max_fee_wei=1_000 * 10**9,
                          poll_interval=0.05)
        tx_hash, block = await deposit(sender, token, treasury, units, memo)
    finally:
        await close(w3)
    print(f"sent {usd} USD ({units} base units) to the treasury {treasury} with reference "
          f"{memo}: tx {tx_hash} in block {block}; the worker credits it once it is "
          "CONFIRMATIONS deep (GET /deposits shows its status)")
    print(f"the call any wallet can send: to {token}, data "
          f"{deposit_call(token, treasury, units, memo)['data']}")
    return 0
