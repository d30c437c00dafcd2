from __future__ import annotations

from typing import Any

from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.providers.eth_tester import AsyncEthereumTesterProvider

from chain.config import ETH_TESTER, ChainConfig
from chain.errors import ConfigError


def make_web3(rpc_url: str = ETH_TESTER, *, request_timeout: float = 30.0) -> AsyncWeb3:
    """AsyncWeb3 for an http(s) JSON-RPC URL, or an in-process py-evm chain for "eth-tester".

    The in-process chain lives as long as the returned object; its EthereumTester is at
    ``w3.provider.ethereum_tester`` (snapshots, time travel, mining control).
    """
    if rpc_url == ETH_TESTER:
        return AsyncWeb3(AsyncEthereumTesterProvider())
    if rpc_url.startswith(("http://", "https://")):
        return AsyncWeb3(AsyncHTTPProvider(rpc_url, request_kwargs={"timeout": request_timeout}))
    raise ConfigError(f"unsupported rpc url {rpc_url!r}: use http(s)://... or {ETH_TESTER!r}")


def is_eth_tester(w3: AsyncWeb3) -> bool:
    return isinstance(w3.provider, AsyncEthereumTesterProvider)


def eth_tester_of(w3: AsyncWeb3) -> Any:
    if not is_eth_tester(w3):
        raise ConfigError("not an in-process eth-tester chain")
    return w3.provider.ethereum_tester  # type: ignore[attr-defined]


async def connect(config: ChainConfig, *, request_timeout: float = 30.0) -> AsyncWeb3:
    """make_web3 and check that the node answers with the configured chain id."""
    w3 = make_web3(config.rpc_url, request_timeout=request_timeout)
    chain_id = await w3.eth.chain_id
    if config.chain_id is not None and chain_id != config.chain_id:
        raise ConfigError(f"node at {config.rpc_url} has chain id {chain_id}, expected {config.chain_id}")
    return w3


async def close(w3: AsyncWeb3) -> None:
    if is_eth_tester(w3):
        return  # in-process: nothing to disconnect (its provider raises NotImplementedError)
    disconnect = getattr(w3.provider, "disconnect", None)
    if disconnect is not None:
        await disconnect()
