from __future__ import annotations

from starlette.requests import Request

from app.auth import sessions, signin
from app.auth.schemas import LoginOut, NonceOut, NonceQuery, SignInBody
from app.auth.roles import miner_id_for, refuse_suspended, roles_for
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
