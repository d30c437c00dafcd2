from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from app import idempotency
from app.auth.guards import client_guard, wallet_guard
from app.auth.principals import Client, Wallet
from app.context import ctx
from app.errors import AppError, NotFound
from app.hangup import unless_hung_up
from app.idle import runpod_flow, service
from app.idle.kind import IDLE, parse_job_id
from app.idle.schemas import (IdleAssignment, IdleAssignments, IdleJobCreated, IdleJobIn,
                              IdleJobOut, IdleResultIn, IdleResultOut, IdleResultsIn,
                              IdleResultsThenJobs, ProcessOut)
from app.leases.endpoints import Shapes, add_miner_endpoints
from app.models import IdleJob
from app.schemas import WaitQuery
from app.web import Router, json_response

router = Router("idle")
CLIENT = dict(auth=("ApiKey",), guard=client_guard("idle"))
OPERATOR = dict(auth=("MinerToken",), guard=wallet_guard("operator"))


def _out(job: IdleJob) -> IdleJobOut:
    return IdleJobOut(job_id=str(job.id), status=job.status, max_tokens=job.max_tokens,
                      result=job.result, output_tokens=job.output_tokens,
                      usd_earned=job.usd_earned, processed_by=job.processed_by,
                      created_at=job.created_at, completed_at=job.completed_at,
                      failure_reason=job.failure_reason)


@router.post("/idle-job", body=IdleJobIn, responses={202: IdleJobCreated},
             errors=(402, 403, 409), headers=(idempotency.PARAMETER,), **CLIENT)
async def create_idle_job(request: Request, who: Client, body: IdleJobIn) -> Response:
    """Queue inference for a miner (or RunPod, when no miner takes it in time). Needs an API
    key with the `idle` scope in the Authorization header; the business pays output tokens x
    PRICE_PER_1K_TOKENS_USD / 1000, counted by the server, from its prepaid balance:
    max_tokens x that price is held at submission (402 when the balance or the key's monthly
    limit does not cover it; nothing is queued), the count is charged on completion and the
    rest released; a failed job costs nothing. With an Idempotency-Key, a retry gets the job
    the first request created."""
    c = ctx(request)
    made = await idempotency.once(
        c.db, idempotency.key_of(request, who, body), c.settings.idempotency_key_ttl_s,
        lambda session: service.submit(session, c, who, body.prompt, body.max_tokens))
    replayed = isinstance(made, idempotency.Replay)
    job = await service.get_owned(c, who, made.job_id) if replayed else made
    out = IdleJobCreated(job_id=str(job.id), status=job.status,
                         estimated_cost_usd=service.estimated_cost(c, body.max_tokens))
    return json_response(out, 202, headers=idempotency.REPLAYED if replayed else None)


# Before /idle-job/{job_id}, so that "next" and "batch" are not taken for a job id:
# /idle-job/next, /idle-job/batch, /idle-job/result, /idle-job/results, /idle-job/{id}/extend|release
add_miner_endpoints(router, IDLE, "/idle-job",
                    Shapes(assignment=IdleAssignment, jobs=IdleAssignments,
                           result_in=IdleResultIn, result_out=IdleResultOut,
                           results_in=IdleResultsIn, results_then=IdleResultsThenJobs),
                    noun="idle job")


@router.post("/idle-job/process/{job_id}", responses={202: ProcessOut},
             errors=(403, 404, 409, 503), **OPERATOR)
async def process_idle_job(request: Request, who: Wallet) -> Response:
    """Operator: send a queued idle job to RunPod now (the worker runs it)."""
    job_id = parse_job_id(request.path_params["job_id"])
    if job_id is None:
        raise NotFound("no such idle job", code="job_not_found")
    c = ctx(request)
    async with c.db.transaction() as session:
        await runpod_flow.claim_now(session, c, job_id)
    return json_response(ProcessOut(job_id=str(job_id), status="processing",
                                    detail="sent to the worker for RunPod"), 202)


@router.get("/idle-job/process/{job_id}", responses={}, errors=(405,))
async def process_idle_job_get(request: Request) -> Response:
    """The seed's GET alias: answers 405 and points to POST (operator only)."""
    raise AppError(f"use POST /idle-job/process/{request.path_params['job_id']} with an "
                   "operator session token", code="method_not_allowed", status=405,
                   headers={"Allow": "POST"})


@router.get("/idle-job/{job_id}", query=WaitQuery, responses={200: IdleJobOut},
            errors=(403, 404), **CLIENT)
async def get_idle_job(request: Request, who: Client, query: WaitQuery) -> IdleJobOut:
    """An idle job's status and result, visible only to the business that sent it."""
    c = ctx(request)
    job = await service.get_owned(c, who, request.path_params["job_id"])
    return _out(await unless_hung_up(request, service.wait_for(  # a hang-up ends the wait
        c, who, job, min(query.wait, c.settings.chat_max_wait_s))))
