"""Verify every published deposit credit from chain data alone: `mia verify-deposits --rpc URL
--api URL` (or `python -m chain.deposit_audit ...`). Reads no database; trusts the API only for
the list of credited deposits (GET /deposits) and, unless given, which stablecoin and treasury
to look at (GET /burns/summary).

For each credited deposit: the transaction is mined on the canonical chain and succeeded, in
the published block; it holds the published Transfer (log index, stablecoin, to the treasury,
amount); the memo in its input is the published reference; it is at least CONFIRMATIONS deep;
the USD credited is the amount rounded down to the micro-dollar. A credit with no memo on chain
was an operator's assignment: listed as such, not checkable from the chain. And the published
credited total is the sum of the published credits.

With `--reference REF` (a business checking its own account): every Transfer into the treasury
that carries REF and is CONFIRMATIONS deep must be among the credited deposits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict, dataclass, field
from decimal import ROUND_FLOOR, Decimal
from typing import Any

import httpx
from eth_utils import to_checksum_address
from web3 import AsyncWeb3

from chain.client import close, make_web3
from chain.deposits import deposit_tx, normalize_memo, transfer_logs
from chain.tokens import erc20

PAGE = 200
MICRO = Decimal("0.000001")


@dataclass
class DepositCheck:
    id: int
    tx_hash: str
    block_number: int
    amount: int
    amount_usd: str
    reference: str | None
    ok: bool
    by_operator: bool = False  # credited without a memo on chain: an operator's assignment
    problems: list[str] = field(default_factory=list)


@dataclass
class DepositReport:
    token: str
    treasury: str
    block_number: int
    confirmations: int
    deposits: list[DepositCheck]
    published_usd: str
    sum_usd: str
    ok: bool
    missing: list[str] = field(default_factory=list)  # --reference: deep memo'd txs not credited
    problems: list[str] = field(default_factory=list)


async def published_deposits(api: httpx.AsyncClient) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every credited deposit the API lists, and the first page's header (totals, depth)."""
    items: list[dict[str, Any]] = []
    first: dict[str, Any] | None = None
    offset = 0
    while True:
        r = await api.get("/deposits", params={"status": "credited", "limit": PAGE,
                                               "offset": offset})
        r.raise_for_status()
        page = r.json()
        first = first or page
        items.extend(page["items"])
        offset += len(page["items"])
        if not page["items"] or offset >= int(page["total"]):
            return items, first


async def check_one(w3: AsyncWeb3, item: dict[str, Any], token: str, treasury: str, head: int,
                    confirmations: int, decimals: int) -> DepositCheck:
    amount = int(item["amount"])
    check = DepositCheck(int(item["id"]), item["tx_hash"], int(item["block_number"]), amount,
                         item["amount_usd"], item.get("reference"), ok=False)
    try:
        found = await deposit_tx(w3, item["tx_hash"], token, treasury)
    except ValueError:  # not a hash at all
        found = None
    if found is None:
        check.problems.append("the chain knows no mined transaction with this hash on its "
                              "canonical blocks")
        return check
    if not found.success:
        check.problems.append("the receipt's status is 0 (reverted)")
    if (found.block_number, found.block_hash) != (check.block_number,
                                                  str(item["block_hash"]).lower()):
        check.problems.append(f"mined in block {found.block_number} ({found.block_hash}), "
                              f"published {check.block_number} ({item['block_hash']})")
    logged = {index: (sender, value) for index, sender, value in found.transfers}
    if int(item["log_index"]) not in logged:
        check.problems.append(f"no Transfer of {token} to {treasury} at log index "
                              f"{item['log_index']}")
    elif logged[int(item["log_index"])][1] != amount:
        check.problems.append(f"the Transfer moved {logged[int(item['log_index'])][1]} base "
                              f"units, published {amount}")
    if found.memo is None:
        check.by_operator = True
        if check.reference is not None:
            check.problems.append(f"published reference {check.reference}, the transaction "
                                  "carries no memo")
    elif found.memo != (check.reference or "").lower():
        check.problems.append(f"the transaction's memo is {found.memo}, published "
                              f"{check.reference}")
    depth = head - found.block_number + 1
    if depth < confirmations:
        check.problems.append(f"{depth} confirmation(s), {confirmations} required before a "
                              "credit")
    usd = Decimal(amount).scaleb(-decimals).quantize(MICRO, rounding=ROUND_FLOOR)
    if Decimal(check.amount_usd) != usd:
        check.problems.append(f"{amount} base units are {usd} USD (rounded down), published "
                              f"{check.amount_usd}")
    check.ok = not check.problems
    return check


async def missing_for(w3: AsyncWeb3, token: str, treasury: str, reference: str, credited:
                      set[str], from_block: int, final: int, step: int) -> list[str]:
    """Transactions at least CONFIRMATIONS deep that carry ``reference`` and are not credited."""
    missing = []
    seen: set[str] = set()
    for x in await transfer_logs(w3, token, treasury, from_block, final, step):
        if x.tx_hash in seen:
            continue
        seen.add(x.tx_hash)
        found = await deposit_tx(w3, x.tx_hash, token, treasury)
        if found is not None and found.memo == reference and x.tx_hash not in credited:
            missing.append(x.tx_hash)
    return missing


async def audit(w3: AsyncWeb3, api: httpx.AsyncClient, *, token: str | None = None,
                treasury: str | None = None, confirmations: int | None = None,
                reference: str | None = None, from_block: int = 0,
                step: int = 2_000) -> DepositReport:
    if token is None or treasury is None:
        r = await api.get("/burns/summary")
        r.raise_for_status()
        summary = r.json()
        token = token or summary["quote_token"]
        treasury = treasury or summary["treasury_address"]
    token, treasury = to_checksum_address(token), to_checksum_address(treasury)
    items, header = await published_deposits(api)
    depth = max(int(confirmations if confirmations is not None else header["confirmations"]), 1)
    head = int(await w3.eth.block_number)
    decimals = int(await erc20(w3, token).functions.decimals().call())
    checks = [await check_one(w3, item, token, treasury, head, depth, decimals)
              for item in items]
    total = sum((Decimal(c.amount_usd) for c in checks), Decimal(0)).quantize(MICRO)
    published = Decimal(header["credited_usd"]).quantize(MICRO)
    problems = []
    if total != published:
        problems.append(f"the credited deposits sum to {total} USD, the published total is "
                        f"{published} USD")
    bad = [c.id for c in checks if not c.ok]
    if bad:
        problems.append(f"deposits that do not verify: {bad}")
    missing: list[str] = []
    if reference is not None:
        missing = await missing_for(w3, token, treasury, normalize_memo(reference),
                                    {c.tx_hash.lower() for c in checks}, from_block,
                                    head - depth + 1, step)
        if missing:
            problems.append(f"{len(missing)} deposit(s) carrying {reference} are deep on chain "
                            "and not credited")
    return DepositReport(token=token, treasury=treasury, block_number=head, confirmations=depth,
                         deposits=checks, published_usd=str(published), sum_usd=str(total),
                         ok=not problems, missing=missing, problems=problems)


def table(report: DepositReport) -> str:
    lines = [f"{'id':>6}  {'tx':<14} {'block':>9} {'USD':>16}  {'memo':<16}  result"]
    for c in report.deposits:
        result = "ok" if c.ok else "FAIL: " + "; ".join(c.problems)
        if c.ok and c.by_operator:
            result = "ok (no memo: assigned by an operator)"
        lines.append(f"{c.id:>6}  {c.tx_hash[:12] + '..':<14} {c.block_number:>9} "
                     f"{c.amount_usd:>16}  {c.reference or '-':<16}  {result}")
    lines.append(f"{len(report.deposits)} credited deposit(s), {report.sum_usd} USD (published "
                 f"{report.published_usd} USD); chain at block {report.block_number}, "
                 f"{report.confirmations} confirmation(s) required")
    for tx in report.missing:
        lines.append(f"NOT CREDITED: {tx}")
    lines.extend(f"PROBLEM: {p}" for p in report.problems)
    lines.append("OK" if report.ok else "FAILED")
    return "\n".join(lines)


def parser(prog: str = "verify-deposits") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--rpc", required=True, help="a JSON-RPC node of the chain (any provider)")
    p.add_argument("--api", required=True, help="the MIA API's base URL (lists the deposits)")
    p.add_argument("--token", help="the stablecoin (default: what /burns/summary says)")
    p.add_argument("--treasury", help="default: what /burns/summary says")
    p.add_argument("--confirmations", type=int, help="default: what /deposits says")
    p.add_argument("--reference", help="also check that every deep deposit carrying this "
                                       "reference was credited")
    p.add_argument("--from-block", type=int, default=0, help="with --reference: scan from here")
    p.add_argument("--step", type=int, default=2_000, help="blocks per eth_getLogs call")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


async def _main(args: argparse.Namespace) -> int:
    w3 = make_web3(args.rpc)
    try:
        async with httpx.AsyncClient(base_url=args.api, timeout=30) as api:
            report = await audit(w3, api, token=args.token, treasury=args.treasury,
                                 confirmations=args.confirmations, reference=args.reference,
                                 from_block=args.from_block, step=args.step)
    finally:
        await close(w3)
    print(json.dumps(asdict(report), indent=2) if args.json else table(report))
    return 0 if report.ok else 1


def main(argv: list[str] | None = None, prog: str = "verify-deposits") -> int:
    return asyncio.run(_main(parser(prog).parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main(prog="python -m chain.deposit_audit"))
