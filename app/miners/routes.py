from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from starlette.requests import Request

from app.auth import sessions, signin
from app.auth.roles import roles_for
from app.context import ctx
from app.errors import Conflict
from app.miners import service
from app.miners.schemas import RegisterIn, RegisterOut
from app.models import utcnow
from app.ratelimit import limit_signin
from app.web import Router

router = Router("miners")


@router.post("/register_miner", body=RegisterIn, responses={200: RegisterOut},
             errors=(401, 409), limit=limit_signin)
async def register_miner(request: Request, body: RegisterIn) -> RegisterOut:
    """Register (or sign in again) the wallet that signed the EIP-4361 message."""
    c = ctx(request)
    now = utcnow()
    address = await signin.verify(c, body.message, body.signature, now)
    for _ in range(2):  # a concurrent first registration of the same address loses the insert
        try:
            async with c.db.transaction() as session:
                miner = await service.register(session, address, body.name)
                token, expires = await sessions.issue(
                    session, address=address, miner_id=miner.id,
                    roles=roles_for(c.settings, address, True), ttl_s=c.settings.token_ttl_s,
                    now=now)
            return RegisterOut(miner_id=miner.id, address=address, token=token,
                               expires_at=expires)
        except IntegrityError:
            continue
    raise Conflict("concurrent registration of this address; retry", code="register_conflict")
