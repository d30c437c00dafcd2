"""Verify every published burn from chain data alone, for auditors: `mia verify-burns --rpc URL
--api URL` (or `python -m chain.audit ...`). Reads no database and trusts the API only for the
list of claimed burns (and, unless given, which token and burn address to look at).

For each burn the API lists: the receipt exists and succeeded, it holds a Transfer of the token
to the burn address, and that amount equals the published one. Then, over the whole chain: the
sum of every Transfer of the token INTO the burn address equals the burn address's balance
(nothing was ever sent out of it), and the published burns are part of that sum.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
from eth_utils import to_checksum_address
from web3 import AsyncWeb3

from chain.burn import verify_burn
from chain.client import close, make_web3
from chain.errors import TxNotFound
from chain.tokens import TRANSFER_TOPIC, erc20

PAGE = 200


@dataclass
class BurnCheck:
    buyback_id: int
    tx_hash: str
    published_amount: int
    ok: bool
    problems: list[str] = field(default_factory=list)


@dataclass
class AuditReport:
    token: str
    burn_address: str
    block_number: int
    burns: list[BurnCheck]
    published_total: int
    transfers_in_total: int  # every Transfer of the token to the burn address, from_block..head
    balance: int  # the burn address's balance at block_number
    ok: bool
    problems: list[str] = field(default_factory=list)


async def published_burns(api: httpx.AsyncClient) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    offset = 0
    while True:
        r = await api.get("/burns", params={"limit": PAGE, "offset": offset})
        r.raise_for_status()
        page = r.json()
        items.extend(page["items"])
        offset += len(page["items"])
        if not page["items"] or offset >= int(page["total"]):
            return items


async def transfers_in(w3: AsyncWeb3, token: str, to: str, from_block: int, to_block: int,
                       step: int) -> int:
    """Sum of the token's Transfer logs to ``to`` in [from_block, to_block], ``step`` blocks per
    eth_getLogs call (providers cap the range)."""
    topic_to = "0x" + bytes(12).hex() + to_checksum_address(to)[2:].lower()
    total = 0
    start = from_block
    while start <= to_block:
        end = min(start + step - 1, to_block)
        logs = await w3.eth.get_logs({"address": to_checksum_address(token),
                                      "fromBlock": start, "toBlock": end,
                                      "topics": ["0x" + TRANSFER_TOPIC.hex(), None, topic_to]})
        total += sum(int.from_bytes(bytes(x["data"]), "big") for x in logs)
        start = end + 1
    return total


async def audit(w3: AsyncWeb3, api: httpx.AsyncClient, *, token: str | None = None,
                burn_address: str | None = None, from_block: int = 0,
                step: int = 50_000) -> AuditReport:
    if token is None or burn_address is None:
        r = await api.get("/burns/summary")
        r.raise_for_status()
        summary = r.json()
        token = token or summary["serv_token"]
        burn_address = burn_address or summary["burn_address"]
    token, burn_address = to_checksum_address(token), to_checksum_address(burn_address)
    head = await w3.eth.block_number
    checks: list[BurnCheck] = []
    for item in await published_burns(api):
        amount = int(item["serv_burned"])
        check = BurnCheck(int(item["buyback_id"]), item["burn_tx_hash"], amount, ok=False)
        try:
            v = await verify_burn(w3, item["burn_tx_hash"], token=token,
                                  burn_address=burn_address, expected_amount=amount)
        except (TxNotFound, ValueError):
            check.problems.append("the chain knows no mined transaction with this hash")
        else:
            if not v.success:
                check.problems.append("the receipt's status is 0 (reverted)")
            if not v.is_burn:
                check.problems.append(f"no Transfer of {token} to {burn_address} in its logs")
            if v.amount != amount:
                check.problems.append(f"moved {v.amount} to the burn address, published {amount}")
        check.ok = not check.problems
        checks.append(check)
    balance = int(await erc20(w3, token).functions.balanceOf(burn_address).call(
        block_identifier=head))
    total_in = await transfers_in(w3, token, burn_address, from_block, head, step)
    published = sum(c.published_amount for c in checks)
    problems = []
    if total_in != balance:
        problems.append(f"Transfers into the burn address sum to {total_in}, its balance is "
                        f"{balance}: tokens left it, or the scan started after some arrived")
    if published > total_in:
        problems.append(f"the published burns ({published}) exceed every Transfer into the "
                        f"burn address ({total_in})")
    bad = [c.buyback_id for c in checks if not c.ok]
    if bad:
        problems.append(f"burns that do not verify: {bad}")
    return AuditReport(token=token, burn_address=burn_address, block_number=head, burns=checks,
                       published_total=published, transfers_in_total=total_in, balance=balance,
                       ok=not problems, problems=problems)


def parser(prog: str = "verify-burns") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--rpc", required=True, help="a JSON-RPC node of the chain (any provider)")
    p.add_argument("--api", required=True, help="the MIA API's base URL (lists the burns)")
    p.add_argument("--token", help="the $SERV token (default: what /burns/summary says)")
    p.add_argument("--burn-address", help="default: what /burns/summary says")
    p.add_argument("--from-block", type=int, default=0, help="scan Transfers from this block")
    p.add_argument("--step", type=int, default=50_000, help="blocks per eth_getLogs call")
    return p


async def _main(args: argparse.Namespace) -> int:
    w3 = make_web3(args.rpc)
    try:
        async with httpx.AsyncClient(base_url=args.api, timeout=30) as api:
            report = await audit(w3, api, token=args.token, burn_address=args.burn_address,
                                 from_block=args.from_block, step=args.step)
    finally:
        await close(w3)
    print(json.dumps(asdict(report), indent=2))
    return 0 if report.ok else 1


def main(argv: list[str] | None = None, prog: str = "verify-burns") -> int:
    return asyncio.run(_main(parser(prog).parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main(prog="python -m chain.audit"))
