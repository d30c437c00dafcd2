from __future__ import annotations

from starlette.requests import Request

from app.auth import sessions, signin
from app.auth.schemas import LoginOut, NonceOut, NonceQuery, SignInBody
from app.context import AppContext, ctx
from app.errors import Forbidden
from app.miners.service import find_miner
from app.models import utcnow
from app.ratelimit import limit_signin
from app.web import Router

router = Router("auth")


@router.get("/auth/nonce", query=NonceQuery, responses={200: NonceOut}, errors=(400,),
            limit=limit_signin)
async def get_nonce(request: Request, query: NonceQuery) -> NonceOut:
    """A single-use nonce and the complete EIP-4361 message to sign with personal_sign."""
    return await signin.issue_nonce(ctx(request), query.address, utcnow())


def roles_for(c: AppContext, address: str, is_miner: bool) -> frozenset[str]:
    roles = {"miner"} if is_miner else set()
    if address.lower() in c.settings.operators:
        roles.add("operator")
    return frozenset(roles)


@router.post("/auth/login", body=SignInBody, responses={200: LoginOut}, errors=(401, 403),
             limit=limit_signin)
async def login(request: Request, body: SignInBody) -> LoginOut:
    """Exchange a signed EIP-4361 message for a session token (miners and operators)."""
    c = ctx(request)
    now = utcnow()
    address = await signin.verify(c, body.message, body.signature, now)
    async with c.db.transaction() as session:
        miner = await find_miner(session, address)
        roles = roles_for(c, address, miner is not None)
        if not roles:
            raise Forbidden("this wallet is not registered: POST /register_miner first",
                            code="not_registered")
        token, expires = await sessions.issue(session, address=address,
                                              miner_id=miner.id if miner else None, roles=roles,
                                              ttl_s=c.settings.token_ttl_s, now=now)
    return LoginOut(token=token, expires_at=expires, address=address, roles=sorted(roles))
