"""The app's handle on the chain (optional): set up when CHAIN_RPC_URL is configured."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from web3 import AsyncWeb3

from app.observability import instrument_web3

# (address, eip191_hash, signature) -> valid?  ERC-1271 for contract wallets
Erc1271 = Callable[[str, bytes, bytes], Awaitable[bool]]


@dataclass(frozen=True)
class ChainLink:
    w3: AsyncWeb3
    erc1271: Erc1271

    async def check(self) -> None:
        """For /health: the node answers."""
        await self.w3.eth.block_number


def open_chain(url: str | None, erc1271_gas: int | None = None) -> ChainLink | None:
    if not url:
        return None
    from chain.client import make_web3
    from chain.erc1271 import CodeCache, is_valid_erc1271_signature

    w3 = instrument_web3(make_web3(url))  # mia_chain_rpc_seconds
    codes = CodeCache()

    async def erc1271(address: str, hash32: bytes, signature: bytes) -> bool:
        return await is_valid_erc1271_signature(w3, address, hash32, signature,
                                                gas=erc1271_gas, codes=codes)

    return ChainLink(w3=w3, erc1271=erc1271)


async def close_chain(link: ChainLink | None) -> None:
    if link is not None:
        from chain.client import close

        await close(link.w3)
