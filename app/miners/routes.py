from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from app.auth import sessions, signin
from app.auth.guards import wallet_guard
from app.auth.principals import Wallet
from app.auth.routes import roles_for
from app.context import ctx
from app.miners import service
from app.miners.schemas import (ChatAssignment, LeaseIn, LeaseOut, NextQuery, RegisterIn,
                                RegisterOut, ReleaseIn, ReleaseOut, ResultIn, ResultOut)
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
    miner = await service.register(c, address, body.name)
    async with c.db.transaction() as session:
        token, expires = await sessions.issue(session, address=address, miner_id=miner.id,
                                              roles=roles_for(c, address, True),
                                              ttl_s=c.settings.token_ttl_s, now=now)
    return RegisterOut(miner_id=miner.id, address=address, token=token, expires_at=expires)


MINER = dict(auth=("MinerToken",), guard=wallet_guard("miner"))


@router.get("/job/next", query=NextQuery, responses={200: ChatAssignment, 204: None},
            errors=(403,), safe=False, **MINER)
async def next_job(request: Request, who: Wallet, query: NextQuery) -> Response | ChatAssignment:
    """Lease the next chat job, long-polling up to `wait` seconds; 204 if none came."""
    c = ctx(request)
    job = await service.next_chat_job(c, who, min(query.wait, c.settings.miner_max_wait_s),
                                      request.is_disconnected)
    return Response(status_code=204) if job is None else job


@router.post("/job/result", body=ResultIn, responses={200: ResultOut}, errors=(403, 404, 409),
             **MINER)
async def post_result(request: Request, who: Wallet, body: ResultIn) -> ResultOut:
    """Complete a leased job with the output and the wallet's signature over
    keccak256(utf8(job_id) || utf8(output)) (EIP-191 personal_sign of those 32 bytes)."""
    return await service.submit_result(ctx(request), who, body.job_id, body.lease_id, body.output,
                                       body.output_tokens, body.signature)


@router.post("/job/{job_id}/extend", body=LeaseIn, responses={200: LeaseOut},
             errors=(403, 404, 409), **MINER)
async def extend_lease(request: Request, who: Wallet, body: LeaseIn) -> LeaseOut:
    """Extend the current lease (for long generations)."""
    return await service.extend_lease(ctx(request), who, request.path_params["job_id"],
                                      body.lease_id, body.seconds)


@router.post("/job/{job_id}/release", body=ReleaseIn, responses={200: ReleaseOut},
             errors=(403, 404, 409), **MINER)
async def release_lease(request: Request, who: Wallet, body: ReleaseIn) -> ReleaseOut:
    """Give a leased job back (it is redelivered, or failed after the last attempt)."""
    return await service.release_lease(ctx(request), who, request.path_params["job_id"],
                                       body.lease_id, body.reason)
