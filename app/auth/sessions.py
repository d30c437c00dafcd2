"""Bearer sessions issued after an EIP-4361 sign-in: random, stored hashed, expiring."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principals import Wallet
from app.auth.secrets import TOKEN_PREFIX, hash_secret, new_secret
from app.errors import Unauthorized
from app.models import AuthToken, Miner, utcnow


async def issue(session: AsyncSession, *, address: str, miner_id: int | None,
                roles: frozenset[str], ttl_s: int, now: datetime) -> tuple[str, datetime]:
    token = new_secret(TOKEN_PREFIX)
    expires_at = now + timedelta(seconds=ttl_s)
    session.add(AuthToken(token_hash=hash_secret(token), address=address, miner_id=miner_id,
                          roles=",".join(sorted(roles)), expires_at=expires_at, created_at=now))
    await session.flush()
    return token, expires_at


async def authenticate(session: AsyncSession, token_hash: str) -> tuple[Wallet, datetime]:
    """The wallet a session token (by its stored hash) stands for, and when the token expires."""
    found = (await authenticate_many(session, [token_hash]))[token_hash]
    if isinstance(found, Unauthorized):
        raise found
    return found


async def authenticate_many(session: AsyncSession, token_hashes: list[str]
                            ) -> dict[str, tuple[Wallet, datetime] | Unauthorized]:
    """authenticate() for several tokens in one statement: each hash's answer or refusal."""
    rows = {row.token_hash: row for row in await session.execute(
        select(AuthToken.token_hash, AuthToken.address, AuthToken.miner_id, AuthToken.roles,
               AuthToken.expires_at, AuthToken.revoked_at, Miner.suspended_at)
        .outerjoin(Miner, Miner.id == AuthToken.miner_id)
        .where(AuthToken.token_hash.in_(token_hashes)))}
    out: dict[str, tuple[Wallet, datetime] | Unauthorized] = {}
    for token_hash in token_hashes:
        row = rows.get(token_hash)
        if row is None:
            out[token_hash] = Unauthorized("unknown session token; sign in again",
                                           code="invalid_token")
        elif row.revoked_at is not None:
            out[token_hash] = Unauthorized("this session token was revoked; sign in again",
                                           code="token_revoked")
        else:
            out[token_hash] = (Wallet(address=row.address, miner_id=row.miner_id,
                                      roles=frozenset(r for r in row.roles.split(",") if r),
                                      suspended=row.suspended_at is not None), row.expires_at)
    return out


def check_expiry(expires_at: datetime, now: datetime) -> None:
    if expires_at <= now:
        raise Unauthorized("this session token has expired; sign in again", code="token_expired")


async def revoke(session: AsyncSession, token_hash: str, now: datetime) -> None:
    """Idempotent: an already revoked token keeps its first revocation time."""
    await session.execute(update(AuthToken).where(AuthToken.token_hash == token_hash,
                                                  AuthToken.revoked_at.is_(None))
                          .values(revoked_at=now))


async def prune_expired_tokens(session: AsyncSession, now: datetime | None = None) -> int:
    """Delete the session tokens that expired before `now` (revoked or not); returns how many.
    An expired token is refused anyway (check_expiry), so nothing is lost but the rows."""
    result = await session.execute(delete(AuthToken).where(AuthToken.expires_at < (now or utcnow())))
    return result.rowcount or 0  # type: ignore[attr-defined]
