"""The app's handle on the chain (optional): set up when CHAIN_RPC_URL is configured."""

from __future__ import annotations

from web3 import AsyncWeb3

from app.context import AppContext


def attach_chain(ctx: AppContext) -> AsyncWeb3 | None:
    """Adds a web3 client, ERC-1271 sign-in for contract wallets and a chain health check."""
    url = ctx.settings.chain_rpc_url
    if not url:
        return None
    from chain.client import make_web3
    from chain.erc1271 import is_valid_erc1271_signature

    w3 = make_web3(url)

    async def erc1271(address: str, hash32: bytes, signature: bytes) -> bool:
        return await is_valid_erc1271_signature(w3, address, hash32, signature)

    async def chain_check(_: AppContext) -> None:
        await w3.eth.block_number

    ctx.extras["web3"] = w3
    ctx.extras["erc1271"] = erc1271
    ctx.extras.setdefault("optional_checks", {})["chain"] = chain_check
    return w3


async def detach_chain(ctx: AppContext) -> None:
    from chain.client import close

    treasury = ctx.extras.pop("treasury", None)
    private = getattr(treasury, "private_w3", None)
    if private is not None:
        await close(private)
    w3 = ctx.extras.pop("web3", None)
    if w3 is not None:
        await close(w3)
