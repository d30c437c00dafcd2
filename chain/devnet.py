"""A local chain with $SERV, a USD stablecoin, WETH9 and the real Uniswap V2 (npm bytecode).

DEV ONLY: the keys below are derived from public strings. Anything sent to them on a real
network can be taken by anyone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from eth_abi import encode
from eth_account import Account
from eth_utils import keccak, to_checksum_address
from web3 import AsyncWeb3

from chain import artifacts
from chain.client import make_web3
from chain.config import DEFAULT_BURN_ADDRESS, ETH_TESTER
from chain.errors import ChainError, ConfigError
from chain.tokens import erc20
from chain.tx import TxSender

ETHER = 10**18
USD = 10**6  # DevUSD has 6 decimals
SERV = 10**18


def dev_key(role: str) -> str:
    """Deterministic DEV-ONLY private key for a role (deployer, treasury, trader, miner...)."""
    return "0x" + keccak(text=f"mia devnet {role} key - DEV ONLY, PUBLICLY KNOWN").hex()


@dataclass(frozen=True)
class DevnetParams:
    """Token amounts in whole units (converted to base units with the token's decimals)."""

    serv_supply: int = 1_000_000_000
    usd_supply: int = 100_000_000
    pool_usd: int = 1_000_000
    pool_serv: int = 100_000_000  # 1 SERV = 0.01 USD
    treasury_usd: int = 100_000
    trader_usd: int = 1_000_000
    trader_serv: int = 10_000_000
    ether_each: int = 1_000


@dataclass(frozen=True)
class Devnet:
    chain_id: int
    serv_token: str
    quote_token: str
    weth: str
    factory: str
    router: str
    pair: str
    burn_address: str
    deployer: str
    treasury: str
    trader: str
    deployer_key: str = field(repr=False)
    treasury_key: str = field(repr=False)
    trader_key: str = field(repr=False)
    deploy_seconds: float = 0.0
    gas_used: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        data = asdict(self)
        data["note"] = "DEV ONLY: these keys are publicly known"
        return json.dumps(data, indent=2) + "\n"

    def env_lines(self, rpc_url: str) -> list[str]:
        return [
            f"CHAIN_RPC_URL={rpc_url}",
            f"CHAIN_ID={self.chain_id}",
            f"SERV_TOKEN_ADDRESS={self.serv_token}",
            f"QUOTE_TOKEN_ADDRESS={self.quote_token}",
            f"DEX_ROUTER_ADDRESS={self.router}",
            f"BURN_ADDRESS={self.burn_address}",
            f"TREASURY_ADDRESS={self.treasury}",
            f"TREASURY_PRIVATE_KEY={self.treasury_key}  # DEV ONLY",
        ]


def deploy_data(name: str, types: list[str] | None = None, args: list[Any] | None = None) -> str:
    art = artifacts.load(name)
    ctor = encode(types or [], args or []).hex() if types else ""
    return art.bytecode + ctor


async def deploy(sender: TxSender, name: str, types: list[str] | None = None,
                 args: list[Any] | None = None, gas_used: dict[str, int] | None = None) -> str:
    receipt = await sender.send({"to": None, "data": deploy_data(name, types, args)}, timeout=60)
    if gas_used is not None:
        gas_used[f"deploy {name}"] = int(receipt["gasUsed"])
    return to_checksum_address(receipt["contractAddress"])


async def fund_ether(w3: AsyncWeb3, addresses: list[str], amount_wei: int) -> None:
    """Top up dev accounts from the node's first unlocked account (eth-tester, hardhat, anvil,
    chain.node). Nodes without unlocked funded accounts need the deployer funded by hand."""
    try:
        accounts = await w3.eth.accounts
    except Exception:
        accounts = []
    for address in addresses:
        if await w3.eth.get_balance(address) >= amount_wei // 2:
            continue
        if not accounts:
            raise ConfigError(f"{address} has no ether and the node has no unlocked account to fund it")
        tx_hash = await w3.eth.send_transaction(
            {"from": accounts[0], "to": address, "value": amount_wei}
        )
        receipt = await w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60, poll_latency=0.05)
        if receipt["status"] != 1:
            raise ChainError(f"funding {address} failed")


async def deploy_devnet(w3: AsyncWeb3, params: DevnetParams = DevnetParams()) -> Devnet:
    started = time.perf_counter()
    deployer = Account.from_key(dev_key("deployer"))
    treasury = Account.from_key(dev_key("treasury"))
    trader = Account.from_key(dev_key("trader"))
    await fund_ether(w3, [deployer.address, treasury.address, trader.address], params.ether_each * ETHER)
    sender = TxSender(w3, deployer, max_fee_wei=1_000 * 10**9, poll_interval=0.02)
    gas: dict[str, int] = {}

    serv = await deploy(sender, "SERVToken", ["uint256"], [params.serv_supply * SERV], gas)
    usd = await deploy(sender, "DevUSD", ["uint256"], [params.usd_supply * USD], gas)
    weth = await deploy(sender, "WETH9", gas_used=gas)
    factory = await deploy(sender, "UniswapV2Factory", ["address"], [deployer.address], gas)
    router = await deploy(sender, "UniswapV2Router02", ["address", "address"], [factory, weth], gas)

    serv_c, usd_c = erc20(w3, serv), erc20(w3, usd)
    for token, amount in ((usd_c, params.pool_usd * USD), (serv_c, params.pool_serv * SERV)):
        await sender.send({"to": token.address, "data": token.encode_abi("approve", [router, amount])})
    router_c = w3.eth.contract(address=router, abi=artifacts.abi("UniswapV2Router02"))
    deadline = max(int(time.time()), (await w3.eth.get_block("latest"))["timestamp"]) + 600
    receipt = await sender.send({"to": router, "data": router_c.encode_abi(
        "addLiquidity",
        [usd, serv, params.pool_usd * USD, params.pool_serv * SERV,
         params.pool_usd * USD, params.pool_serv * SERV, deployer.address, deadline],
    )})
    gas["addLiquidity"] = int(receipt["gasUsed"])
    for token, to, amount in (
        (usd_c, treasury.address, params.treasury_usd * USD),
        (usd_c, trader.address, params.trader_usd * USD),
        (serv_c, trader.address, params.trader_serv * SERV),
    ):
        await sender.send({"to": token.address, "data": token.encode_abi("transfer", [to, amount])})
    factory_c = w3.eth.contract(address=factory, abi=artifacts.abi("UniswapV2Factory"))
    pair = await factory_c.functions.getPair(usd, serv).call()
    return Devnet(
        chain_id=await w3.eth.chain_id, serv_token=serv, quote_token=usd, weth=weth,
        factory=factory, router=router, pair=pair, burn_address=DEFAULT_BURN_ADDRESS,
        deployer=deployer.address, treasury=treasury.address, trader=trader.address,
        deployer_key=dev_key("deployer"), treasury_key=dev_key("treasury"),
        trader_key=dev_key("trader"), deploy_seconds=time.perf_counter() - started, gas_used=gas,
    )


async def _run(rpc_url: str, out: Path | None) -> Devnet:
    w3 = make_web3(rpc_url)
    devnet = await deploy_devnet(w3)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(devnet.to_json())
    return devnet


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mia devnet",
        description="Deploy $SERV, a USD stablecoin, WETH9 and Uniswap V2 with a USD/$SERV pool "
        "to a local chain, fund a DEV-ONLY treasury, and write the addresses as JSON.",
    )
    parser.add_argument("--rpc-url", default=ETH_TESTER,
                        help="JSON-RPC URL, or 'eth-tester' for a throwaway in-process chain")
    parser.add_argument("--out", type=Path, default=Path(".dev/devnet.json"))
    args = parser.parse_args(argv)
    try:
        devnet = asyncio.run(_run(args.rpc_url, args.out))
    except ChainError as exc:
        print(f"devnet: {exc}", file=sys.stderr)
        return 1
    print(f"deployed to {args.rpc_url} (chain id {devnet.chain_id}) in {devnet.deploy_seconds:.2f}s")
    for name in ("serv_token", "quote_token", "weth", "factory", "router", "pair", "treasury", "trader"):
        print(f"  {name:12} {getattr(devnet, name)}")
    print(f"wrote {args.out}")
    if args.rpc_url == ETH_TESTER:
        print("note: the eth-tester chain ended with this process; use `python -m chain.node` "
              "and --rpc-url http://127.0.0.1:8545 for a chain that stays up")
    print("# env (DEV ONLY keys):")
    for line in devnet.env_lines(args.rpc_url):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
