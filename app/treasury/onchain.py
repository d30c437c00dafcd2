"""The treasury's handle on the chain: addresses, the signing account and the DEX router.

Built once per process from Settings over the context's web3 client (app/chainlink.py), and kept
in ``ctx.treasury``. With PRIVATE_TX_RPC_URL, signed transactions are sent only to that endpoint
(a private relay), never to CHAIN_RPC_URL's public mempool. Read-only uses (GET /burns/...) need
no key: the treasury address
comes from TREASURY_ADDRESS then. A TxSender is made per buyback run (see runner.py), so every
run starts like a restart: nonces come from the chain after the stored transactions are resolved.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from eth_utils import is_address, to_checksum_address
from web3 import AsyncWeb3

from app.config import Settings
from app.context import AppContext
from app.errors import ServiceUnavailable
from chain.client import make_web3
from chain.config import ChainConfig
from chain.dex import UniswapV2Router
from chain.errors import ConfigError
from chain.tokens import erc20
from chain.tx import Outstanding, TxSender, load_account

GWEI = 10**9


def chain_config(settings: Settings) -> ChainConfig:
    """The chain toolkit's configuration from the app's settings (secrets unwrapped here only)."""
    key = settings.treasury_private_key
    password = settings.treasury_keystore_password
    return ChainConfig(
        rpc_url=settings.chain_rpc_url or "eth-tester",
        chain_id=settings.chain_id,
        treasury_private_key=key.get_secret_value() if key else None,
        treasury_keystore=Path(settings.treasury_keystore) if settings.treasury_keystore else None,
        treasury_keystore_password=password.get_secret_value() if password else None,
        serv_token=settings.serv_token_address,
        quote_token=settings.quote_token_address,
        router=settings.dex_router_address,
        burn_address=settings.burn_address,
        max_slippage_bps=settings.max_slippage_bps,
        max_price_impact_bps=settings.max_price_impact_bps,
        confirmations=settings.confirmations,
        max_fee_gwei=settings.max_fee_gwei,
        tx_timeout_seconds=settings.tx_timeout_s,
        deadline_seconds=settings.swap_deadline_s,
    )


@dataclass
class Treasury:
    w3: AsyncWeb3
    config: ChainConfig
    address: str  # EIP-55; the account that swaps and burns
    serv: str
    quote: str
    router: UniswapV2Router
    burn_address: str
    can_sign: bool
    private_w3: AsyncWeb3 | None = None  # PRIVATE_TX_RPC_URL: where signed bytes go, if set
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one buyback run per process
    # /burns/summary's scan of the treasury's burns, kept up to a final block:
    # (from_block, scanned to, base units burned)
    burn_scan: tuple[int, int, int] | None = None
    _decimals: dict[str, int] = field(default_factory=dict)

    @property
    def path(self) -> list[str]:
        return [self.quote, self.serv]

    def new_sender(self, outstanding: Outstanding | None = None) -> TxSender:
        """A fresh sender: its nonces come from the chain and from ``outstanding`` (the stored
        signed transactions that may still be mined), never from a previous run's memory."""
        if not self.can_sign:
            raise ServiceUnavailable("the treasury has no signing key (TREASURY_PRIVATE_KEY or "
                                     "TREASURY_KEYSTORE)", code="treasury_no_signer")
        return TxSender.from_config(self.w3, self.config, poll_interval=0.05,
                                    broadcast_w3=self.private_w3, outstanding=outstanding)

    async def aclose(self) -> None:
        """Closes the private relay's client (the public one is the context's)."""
        if self.private_w3 is not None:
            from chain.client import close

            await close(self.private_w3)

    async def decimals(self, token: str) -> int:
        if token not in self._decimals:
            self._decimals[token] = int(await erc20(self.w3, token).functions.decimals().call())
        return self._decimals[token]

    async def balance(self, token: str, holder: str) -> int:
        return int(await erc20(self.w3, token).functions.balanceOf(
            to_checksum_address(holder)).call())


def _unconfigured(detail: str) -> ServiceUnavailable:
    return ServiceUnavailable(detail, code="treasury_unconfigured")


async def get_treasury(ctx: AppContext, *, signer: bool = False) -> Treasury:
    """The process's Treasury; 503 treasury_unconfigured when the chain or an address is missing."""
    t = ctx.treasury
    if t is None:
        t = await _build(ctx)
        ctx.treasury = t
    if signer and not t.can_sign:
        raise ServiceUnavailable("the treasury has no signing key (TREASURY_PRIVATE_KEY or "
                                 "TREASURY_KEYSTORE)", code="treasury_no_signer")
    return t


async def _build(ctx: AppContext) -> Treasury:
    s = ctx.settings
    if ctx.chain is None:
        raise _unconfigured("no chain is configured (CHAIN_RPC_URL)")
    w3 = ctx.chain.w3
    missing = [name for name, value in (("SERV_TOKEN_ADDRESS", s.serv_token_address),
                                        ("QUOTE_TOKEN_ADDRESS", s.quote_token_address),
                                        ("DEX_ROUTER_ADDRESS", s.dex_router_address))
               if not value]
    if missing:
        raise _unconfigured(f"the treasury is not configured: set {', '.join(missing)}")
    try:
        config = chain_config(s)
        address = None
        if config.has_signer:
            address = to_checksum_address(load_account(
                config.treasury_private_key, config.treasury_keystore,
                config.treasury_keystore_password).address)
        if s.treasury_address:
            if not is_address(s.treasury_address):
                raise ConfigError("TREASURY_ADDRESS is not an address")
            if address is not None and to_checksum_address(s.treasury_address) != address:
                raise ConfigError("TREASURY_ADDRESS is not the address of the treasury key")
            address = to_checksum_address(s.treasury_address)
        if address is None:
            raise ConfigError("set TREASURY_PRIVATE_KEY, TREASURY_KEYSTORE or TREASURY_ADDRESS")
        chain_id = await w3.eth.chain_id
    except ConfigError as exc:
        raise _unconfigured(f"the treasury is misconfigured: {exc}") from None
    except Exception as exc:  # ChainError, OSError, aiohttp, web3: their messages may quote
        # the RPC URL (often with an API key), so only the type is shown
        raise ServiceUnavailable(f"the chain is unavailable: {type(exc).__name__}",
                                 code="chain_unavailable") from None
    if chain_id != s.chain_id:
        raise _unconfigured(f"the node at CHAIN_RPC_URL has chain id {chain_id}, CHAIN_ID is "
                            f"{s.chain_id}: refusing to use the wrong chain")
    private = make_web3(s.private_tx_rpc_url) if s.private_tx_rpc_url else None
    return Treasury(w3=w3, config=config, address=address, serv=str(config.serv_token),
                    quote=str(config.quote_token), router=UniswapV2Router(w3, str(config.router)),
                    burn_address=config.burn_address, can_sign=config.has_signer,
                    private_w3=private)
