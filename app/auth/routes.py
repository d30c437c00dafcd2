from __future__ import annotations

from starlette.requests import Request

from app.auth import sessions, signin
from app.auth.cache import announce_revocation
from app.auth.guards import require_session
from app.auth.principals import Wallet
from app.auth.roles import miner_id_for, refuse_suspended, roles_for
from app.auth.schemas import LoginOut, LogoutOut, NonceOut, NonceQuery, SignInBody
from app.auth.secrets import bearer, hash_secret
from app.context import ctx
from app.errors import Forbidden
from app.models import utcnow
from app.ratelimit import limit_signin
from app.web import Router

router = Router("auth")


@router.get("/auth/nonce", query=NonceQuery, responses={200: NonceOut}, errors=(400,),
            limit=limit_signin)
async def get_nonce(request: Request, query: NonceQuery) -> NonceOut:
    """A single-use nonce and the complete EIP-4361 message to sign with personal_sign."""
    return await signin.issue_nonce(ctx(request), query.address, utcnow())


@router.post("/auth/login", body=SignInBody, responses={200: LoginOut}, errors=(401, 403),
             limit=limit_signin)
async def login(request: Request, body: SignInBody) -> LoginOut:
    """Exchange a signed EIP-4361 message for a session token (miners and operators)."""
    c = ctx(request)
    now = utcnow()
    address = await signin.verify(c, body.message, body.signature, now)
    async with c.db.transaction() as session:
        await refuse_suspended(session, address)
        miner_id = await miner_id_for(session, address)
        roles = roles_for(c.settings, address, miner_id is not None)
        if not roles:
            raise Forbidden("this wallet is not registered: POST /register_miner first",
                            code="not_registered")
        token, expires = await sessions.issue(session, address=address,
                                              miner_id=miner_id, roles=roles,
                                              ttl_s=c.settings.token_ttl_s, now=now)
    return LoginOut(token=token, expires_at=expires, address=address, roles=sorted(roles))


@router.post("/auth/logout", responses={200: LogoutOut}, auth=("MinerToken",),
             guard=require_session)
async def logout(request: Request, who: Wallet) -> LogoutOut:
    """Revoke the session token of this request, in every API process at once."""
    c = ctx(request)
    token = bearer(request.headers.get("authorization")) or ""  # the guard has checked it
    async with c.db.transaction() as session:
        await sessions.revoke(session, hash_secret(token), utcnow())
    await announce_revocation(c)
    return LogoutOut(revoked=True)
