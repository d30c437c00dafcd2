from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from app import idempotency
from app.accounts import billing
from app.auth.guards import client_guard
from app.auth.principals import Client
from app import trust
from app.chat import service
from app.chat.kind import CHAT as CHAT_JOBS
from app.chat.schemas import (ChatAssignment, ChatAssignments, ChatIn, ChatJobOut, ChatMessageOut,
                              ChatResultsThenJobs, ResultIn, ResultOut, ResultsIn,
                              SessionMessagesOut)
from app.context import ctx
from app.hangup import unless_hung_up
from app.leases.endpoints import Shapes, add_miner_endpoints
from app.models import ChatJob
from app.schemas import WaitQuery
from app.trust.schemas import FeedbackIn, FeedbackOut
from app.web import Router, json_response

router = Router("chat")
CHAT = dict(auth=("ApiKey",), optional_auth=True)  # keyless only with CHAT_ALLOW_ANONYMOUS


def _out(job: ChatJob) -> ChatJobOut:
    return ChatJobOut(job_id=job.id, session_id=job.session_id, status=job.status,
                      response=job.response, completed_at=job.completed_at,
                      failure_reason=job.failure_reason)


@router.post("/chat", body=ChatIn, query=WaitQuery, responses={202: ChatJobOut, 200: ChatJobOut},
             errors=(401, 402, 403, 409, 429), guard=client_guard("chat", submits=True),
             headers=(idempotency.PARAMETER,), **CHAT)
async def create_chat(request: Request, who: Client, body: ChatIn, query: WaitQuery) -> Response:
    """Queue a chat message for a miner. 202 while queued; 200 once finished (answered or
    failed) within `wait` seconds. The business comes from the API key, never from the body.
    With an Idempotency-Key, a retry gets the job the first request created."""
    c = ctx(request)
    made = await idempotency.once(  # without a key: the hot path (pg.py, lite.py)
        c.db, idempotency.key_of(request, who, body), c.settings.idempotency_key_ttl_s,
        lambda u: service.submit(u, c, who, body.message, body.session_id, body.context),
        unit=service.fast_unit(c))  # None for priced chat: it holds money (app/accounts)
    replayed = isinstance(made, idempotency.Replay)
    job = await service.get_owned(c, who, made.job_id) if replayed else made
    job = await unless_hung_up(request, service.wait_for(  # the job stays: only the wait ends
        c, who, job, min(query.wait, c.settings.chat_max_wait_s), fresh=True))
    return json_response(_out(job), 200 if job.status in service.TERMINAL else 202,
                         headers=idempotency.REPLAYED if replayed else None)


@router.get("/chat/{job_id}", query=WaitQuery, responses={200: ChatJobOut}, errors=(403, 404, 429),
            guard=client_guard("chat"), **CHAT)
async def get_chat(request: Request, who: Client, query: WaitQuery) -> ChatJobOut:
    """A chat job's status and answer, visible only to the business that sent it; `wait`
    seconds for it to finish."""
    c = ctx(request)
    job = await service.get_owned(c, who, request.path_params["job_id"])
    return _out(await unless_hung_up(request, service.wait_for(
        c, who, job, min(query.wait, c.settings.chat_max_wait_s))))


@router.get("/chat/sessions/{session_id}/messages", responses={200: SessionMessagesOut},
            errors=(403, 404, 429), guard=client_guard("chat"), **CHAT)
async def session_messages(request: Request, who: Client) -> SessionMessagesOut:
    """The session's history, oldest first (user and assistant turns)."""
    session_id = request.path_params["session_id"]
    rows = await service.session_messages(ctx(request), who, session_id)
    return SessionMessagesOut(session_id=session_id, messages=[
        ChatMessageOut(role=r.role, message=r.message, timestamp=r.timestamp, job_id=r.job_id)
        for r in rows])


@router.post("/chat/{job_id}/feedback", body=FeedbackIn, responses={200: FeedbackOut},
             errors=(401, 403, 404, 409, 429), guard=client_guard("chat"), **CHAT)
async def chat_feedback(request: Request, who: Client, body: FeedbackIn) -> FeedbackOut:
    """Rate an answer to one of your own jobs, up or down, once (a /v1 answer by its id,
    `chatcmpl-<job id>`, or the job id). It counts, with a small weight, toward the reputation
    of the miner who answered (GET /miners/{address})."""
    c = ctx(request)
    job_id = request.path_params["job_id"].removeprefix("chatcmpl-")
    job = await service.get_owned(c, who, job_id)  # another business's job is 404, as unknown
    await trust.give_feedback(c, job, who.business_id, body.rating, body.comment)
    return FeedbackOut(job_id=job.id, rating=body.rating)


# The miner's side: /job/next, /job/batch, /job/result, /job/results, /job/{id}/extend|release,
# /job/{id}/chunk
add_miner_endpoints(router, CHAT_JOBS, "/job",
                    Shapes(assignment=ChatAssignment, jobs=ChatAssignments, result_in=ResultIn,
                           result_out=ResultOut, results_in=ResultsIn,
                           results_then=ChatResultsThenJobs), noun="chat job",
                    chunks=True)
