from __future__ import annotations

import logging

from sqlalchemy.exc import IntegrityError
from starlette.requests import Request

from app.auth import cache as auth_cache
from app.auth import sessions, signin
from app.auth.guards import wallet_guard
from app.auth.principals import Wallet
from app.auth.roles import refuse_suspended, roles_for
from app.context import AppContext, ctx
from app.errors import Conflict, NotFound
from app.leases import protocol
from app.miners import service
from app.miners.schemas import RegisterIn, RegisterOut, SuspensionOut
from app.models import utcnow
from app.ratelimit import limit_signin
from app.web import Router

router = Router("miners")
log = logging.getLogger(__name__)
OPERATOR = dict(auth=("MinerToken",), guard=wallet_guard("operator"))


@router.post("/register_miner", body=RegisterIn, responses={200: RegisterOut},
             errors=(401, 403, 409), limit=limit_signin)
async def register_miner(request: Request, body: RegisterIn) -> RegisterOut:
    """Register (or sign in again) the wallet that signed the EIP-4361 message."""
    c = ctx(request)
    now = utcnow()
    address = await signin.verify(c, body.message, body.signature, now)
    for _ in range(2):  # a concurrent first registration of the same address loses the insert
        try:
            async with c.db.transaction() as session:
                await refuse_suspended(session, address)
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


@router.post("/miners/{address}/suspend", responses={200: SuspensionOut}, errors=(400, 403, 404),
             **OPERATOR)
async def suspend_miner(request: Request, who: Wallet) -> SuspensionOut:
    """Operator: suspend a wallet. Its sessions get 403 `miner_suspended` on every miner
    endpoint and at sign-in, in every API process at once; its leases go back to the queue
    now (the deliveries do not count against the jobs' attempts). Idempotent."""
    c = ctx(request)
    address = signin.checksum(request.path_params["address"])
    async with c.db.transaction() as session:
        miner_id = await service.set_suspended(session, address, utcnow())
        if miner_id is None:
            raise NotFound("no miner has this address", code="miner_not_found")
        returned = await protocol.take_back_all(session, c, miner_id)
    await _forget_sessions(c)
    log.info("miner %d (%s) suspended by %s; %d lease(s) returned", miner_id, address,
             who.address, returned)
    return SuspensionOut(miner_id=miner_id, address=address, suspended=True,
                         leases_returned=returned)


@router.post("/miners/{address}/unsuspend", responses={200: SuspensionOut},
             errors=(400, 403, 404), **OPERATOR)
async def unsuspend_miner(request: Request, who: Wallet) -> SuspensionOut:
    """Operator: lift a suspension; the wallet's unexpired sessions work again. Idempotent."""
    c = ctx(request)
    address = signin.checksum(request.path_params["address"])
    async with c.db.transaction() as session:
        miner_id = await service.set_suspended(session, address, None)
        if miner_id is None:
            raise NotFound("no miner has this address", code="miner_not_found")
    await _forget_sessions(c)
    log.info("miner %d (%s) unsuspended by %s", miner_id, address, who.address)
    return SuspensionOut(miner_id=miner_id, address=address, suspended=False, leases_returned=0)


async def _forget_sessions(c: AppContext) -> None:
    """Every process reads the wallet's sessions afresh (they carry the suspension flag)."""
    c.auth_cache.clear()
    if not await auth_cache.forget_everywhere(c.redis, c.settings.redis_prefix):
        log.warning("could not announce a suspension over Redis; other processes honour it "
                    "within AUTH_CACHE_TTL_S")
