"""Which wallets are smart-contract wallets (ERC-1271): learned when one signs in (the sign-in
signature was valid only through its contract), remembered in Redis for TOKEN_TTL_S, and asked
of its contract only then.

Before, any signature that did not recover to the wallet was put to the chain (an uncached
eth_getCode, then eth_call) before the job was even looked up: 50 junk batches of 64 results made
3,200 RPC calls. Now an EOA's bad signature costs no chain call at all, and a contract wallet's
checks are limited to ERC1271_CHECKS_PER_MIN (429 past it) and gas-capped (ERC1271_GAS_LIMIT,
chain/erc1271.py).
"""

from __future__ import annotations

import time

from app.context import AppContext
from app.errors import RateLimited
from app.ratelimit import Rate

KNOWN_FOR_S = 5.0  # a process remembers what Redis said about a wallet this long
_known: dict[tuple[str, str], tuple[bool, float]] = {}  # (prefix, address) -> (contract?, until)
_MAX_KNOWN = 10_000


def _key(ctx: AppContext, address: str) -> str:
    return f"{ctx.settings.redis_prefix}:contract-wallet:{address.lower()}"


async def remember(ctx: AppContext, address: str) -> None:
    """`address` signed in through ERC-1271: its results may be checked the same way."""
    await ctx.redis.set(_key(ctx, address), 1, ex=ctx.settings.token_ttl_s)
    _known[(ctx.settings.redis_prefix, address.lower())] = (True, time.monotonic() + KNOWN_FOR_S)


async def is_contract(ctx: AppContext, address: str) -> bool:
    name = (ctx.settings.redis_prefix, address.lower())
    hit = _known.get(name)
    now = time.monotonic()
    if hit is not None and hit[1] > now:
        return hit[0]
    known = bool(await ctx.redis.exists(_key(ctx, address)))
    if len(_known) >= _MAX_KNOWN:
        _known.clear()
    _known[name] = (known, now + KNOWN_FOR_S)
    return known


class Asker:
    """A ContractVerifier (app/auth/wallet.py) for one wallet: asks the chain only if the wallet
    is a known contract wallet and within its rate. Called only when the signature does not
    recover to the wallet, so an EOA's valid signature costs nothing here."""

    def __init__(self, ctx: AppContext, address: str) -> None:
        self.ctx, self.address = ctx, address
        self.limited: RateLimited | None = None

    async def __call__(self, address: str, hash32: bytes, signature: bytes) -> bool:
        c = self.ctx
        if c.chain is None or not await is_contract(c, self.address):
            return False
        rate = Rate.per_minute(c.settings.erc1271_checks_per_min)
        decision = await c.limiter.hit("erc1271", self.address.lower(), rate)
        if not decision.allowed:
            self.limited = RateLimited(
                "this contract wallet's signature checks ran past ERC1271_CHECKS_PER_MIN",
                retry_after_s=decision.retry_after_s, code="too_many_signature_checks")
            return False
        return await c.chain.erc1271(address, hash32, signature)

    def raise_if_limited(self) -> None:
        if self.limited is not None:
            raise self.limited
