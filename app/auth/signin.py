"""EIP-4361 sign-in: single-use nonces in Redis, message checks, wallet signature, roles."""

from __future__ import annotations

from datetime import datetime, timedelta
from urllib.parse import urlsplit

from eth_utils import is_address, to_checksum_address

from app.auth import contract_wallets, siwe, wallet
from app.auth.schemas import NonceOut
from app.context import AppContext
from app.errors import BadRequest, Unauthorized

STATEMENT = "Sign in to the MIA network."


def checksum(address: str) -> str:
    if not isinstance(address, str) or not is_address(address):
        raise BadRequest("address must be a 20-byte hex Ethereum address", code="invalid_address")
    return to_checksum_address(address)


def _scheme(url: str) -> str:
    return urlsplit(url).scheme or "https"


def _nonce_key(ctx: AppContext, nonce: str) -> str:
    return f"{ctx.settings.redis_prefix}:siwe:nonce:{nonce}"


async def issue_nonce(ctx: AppContext, address: str, now: datetime) -> NonceOut:
    s = ctx.settings
    address = checksum(address)
    nonce = siwe.new_nonce()
    issued = now.replace(microsecond=(now.microsecond // 1000) * 1000)
    # The message must not outlive its nonce, or a valid-looking message fails on the nonce.
    expires = issued + timedelta(seconds=min(s.siwe_message_ttl_s, s.siwe_nonce_ttl_s,
                                             s.siwe_max_age_s))
    scheme = _scheme(s.base_url)
    msg = siwe.SiweMessage(domain=s.siwe_expected_domain, address=address, statement=STATEMENT,
                           uri=s.base_url, version="1", chain_id=s.chain_id, nonce=nonce,
                           issued_at=issued, expiration_time=expires,
                           scheme=None if scheme == "https" else scheme)
    await ctx.redis.set(_nonce_key(ctx, nonce), address, ex=s.siwe_nonce_ttl_s)
    return NonceOut(nonce=nonce, domain=msg.domain, uri=msg.uri, chain_id=msg.chain_id,
                    issued_at=issued, expiration_time=expires, message=msg.to_text())


async def verify(ctx: AppContext, text: str, signature: str, now: datetime) -> str:
    """Checks an EIP-4361 message and its signature; consumes the nonce. Returns the address."""
    s = ctx.settings
    try:
        msg = siwe.parse_message(text)
        siwe.check_message(msg, domain=s.siwe_expected_domain, uri=s.base_url,
                           chain_id=s.chain_id, now=now, clock_skew_s=s.siwe_clock_skew_s,
                           scheme=_scheme(s.base_url), max_age_s=s.siwe_max_age_s)
    except siwe.SiweError as exc:
        raise Unauthorized(exc.reason, code=f"siwe_{exc.code}") from None
    through_contract: list[bool] = []

    async def verifier(address: str, hash32: bytes, sig: bytes) -> bool:
        valid = ctx.chain is not None and await ctx.chain.erc1271(address, hash32, sig)
        through_contract.append(valid)
        return valid

    if not await wallet.verify(msg.address, text.encode(), signature,
                               verifier if ctx.chain else None):
        raise Unauthorized("the signature was not made by the message's address",
                           code="siwe_invalid_signature")
    # Last, so only a correctly signed message can spend a nonce; GETDEL makes it single-use.
    owner = await ctx.redis.getdel(_nonce_key(ctx, msg.nonce))
    if owner is None:
        raise Unauthorized("unknown, expired or already used nonce; ask /auth/nonce for a new one",
                           code="siwe_invalid_nonce")
    owner = owner.decode() if isinstance(owner, bytes) else owner
    if owner != msg.address:
        raise Unauthorized("this nonce was issued for another address", code="siwe_invalid_nonce")
    if any(through_contract):  # its results are checked through its contract too
        await contract_wallets.remember(ctx, msg.address)
    return msg.address
