"""The HTTP provider path: the same buyback against JSON-RPC nodes over HTTP —
chain.node (eth-tester behind http.server) and a real `hardhat node` from npm."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from eth_account import Account

from chain.artifacts import CONTRACTS_DIR
from chain.burn import BURN_ADDRESS, burn, verify_burn
from chain.client import close, make_web3
from chain.devnet import deploy_devnet
from chain.dex import UniswapV2Router, swap
from chain.errors import DeadlineExpired, InsufficientBalance, SlippageExceeded
from chain.tokens import erc20
from chain.tx import TxSender, TxStatus
from tests.chain.conftest import require_contracts

USD = 10**6
GWEI = 10**9


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"node exited with {proc.returncode}: {out}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


async def buyback_over_http(url: str) -> None:
    w3 = make_web3(url)
    try:
        d = await deploy_devnet(w3)
        treasury = TxSender(w3, Account.from_key(d.treasury_key), max_fee_wei=500 * GWEI, poll_interval=0.02)
        trader = TxSender(w3, Account.from_key(d.trader_key), max_fee_wei=500 * GWEI, poll_interval=0.02)
        router = UniswapV2Router(w3, d.router)
        path = [d.quote_token, d.serv_token]
        serv = erc20(w3, d.serv_token)

        quote = await router.quote(1_000 * USD, path)
        result = await swap(treasury, router, 1_000 * USD, path, max_slippage_bps=50, max_price_impact_bps=200)
        assert result.received == quote.amount_out
        burned = await burn(treasury, d.serv_token, result.received)
        assert await serv.functions.balanceOf(BURN_ADDRESS).call() == result.received
        v = await verify_burn(w3, burned.tx_hash, token=d.serv_token, expected_amount=result.received)
        assert v.verified and v.from_address == d.treasury

        # reverts raised by the node (not eth-tester) map to the same errors
        seen = []

        async def front_run(prepared) -> None:
            if prepared.tx["to"] == router.address:
                seen.append(prepared)
                await swap(trader, router, 20_000 * USD, path, max_slippage_bps=9_999, max_price_impact_bps=9_999)

        before = await serv.functions.balanceOf(d.treasury).call()
        with pytest.raises(SlippageExceeded) as info:
            await swap(treasury, router, 1_000 * USD, path, max_slippage_bps=50,
                       max_price_impact_bps=200, on_prepared=front_run)
        assert info.value.tx_hash == seen[0].tx_hash
        assert (await treasury.lookup(seen[0].tx_hash)).status is TxStatus.REVERTED
        assert await serv.functions.balanceOf(d.treasury).call() == before

        head = await w3.eth.get_block("latest")
        with pytest.raises(DeadlineExpired):
            await treasury.send(router.swap_tx(10 * USD, 1, path, d.treasury, head["timestamp"] - 10))
        usd = erc20(w3, d.quote_token)
        with pytest.raises(InsufficientBalance):
            await treasury.send({"to": usd.address, "data": usd.encode_abi("transfer", [d.trader, 10**15])})
    finally:
        await close(w3)


async def test_buyback_over_http_against_chain_node(chain_node_url: str) -> None:
    require_contracts()
    await buyback_over_http(chain_node_url)


def test_chain_node_cli_serves_json_rpc() -> None:
    import httpx

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "chain.node", "--host", "127.0.0.1", "--port", str(port), "--block-time", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        cwd=CONTRACTS_DIR.parent,
    )
    try:
        wait_for_port(port, proc, timeout=60)
        url = f"http://127.0.0.1:{port}"
        r = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []})
        assert r.json()["result"] == hex(131277322940537)
        batch = httpx.post(url, json=[{"jsonrpc": "2.0", "id": i, "method": "eth_blockNumber", "params": []}
                                      for i in (1, 2)]).json()
        assert [b["id"] for b in batch] == [1, 2]
        time.sleep(0.6)  # --block-time mines empty blocks
        r = httpx.post(url, json={"jsonrpc": "2.0", "id": 3, "method": "eth_blockNumber", "params": []})
        assert int(r.json()["result"], 16) >= 1
        r = httpx.post(url, json={"jsonrpc": "2.0", "id": 4, "method": "eth_nope", "params": []})
        assert "error" in r.json()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def hardhat_node() -> Iterator[str]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the hardhat JSON-RPC test needs Node.js (>= 18)")
    require_contracts()
    cli = CONTRACTS_DIR / "node_modules" / "hardhat" / "internal" / "cli" / "cli.js"
    if not cli.exists():
        pytest.fail("contracts/node_modules/hardhat is missing: run `make install`", pytrace=False)
    port = free_port()
    env = {**os.environ, "HARDHAT_DISABLE_TELEMETRY_PROMPT": "true", "DO_NOT_TRACK": "1"}
    proc = subprocess.Popen(
        [node, str(cli), "node", "--hostname", "127.0.0.1", "--port", str(port)],
        cwd=CONTRACTS_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


async def test_buyback_over_http_against_hardhat(hardhat_node: str) -> None:
    await buyback_over_http(hardhat_node)


def test_chain_node_answers_reverts_like_geth() -> None:
    """code 3; Error(string) reasons in the message and the data; custom errors only in the
    data (no Python bytes repr in the message)."""
    from eth_abi import encode as abi_encode

    from chain import artifacts
    from chain.node import EthTesterNode

    require_contracts()
    node = EthTesterNode()
    accounts = node.w3.eth.accounts
    art = artifacts.load("SERVToken")
    tx_hash = node.w3.eth.send_transaction(
        {"from": accounts[0], "data": art.bytecode + abi_encode(["uint256"], [10]).hex()})
    token = node.w3.eth.contract(address=node.w3.eth.get_transaction_receipt(tx_hash)["contractAddress"],
                                 abi=art.abi)
    call = {"from": accounts[1], "to": token.address, "data": token.encode_abi("transfer", [accounts[2], 100])}
    error = node.handle({"jsonrpc": "2.0", "id": 1, "method": "eth_estimateGas", "params": [call]})["error"]
    assert error["code"] == 3 and error["message"] == "execution reverted"
    assert error["data"].startswith("0xe450d38c")  # ERC20InsufficientBalance(address,uint256,uint256)
