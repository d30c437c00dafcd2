from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from app.auth.guards import require_client
from app.chat import service
from app.chat.schemas import ChatIn, ChatJobOut, ChatMessageOut, SessionMessagesOut, WaitQuery
from app.context import ctx
from app.models import ChatJob, JobStatus
from app.web import Router, json_response

router = Router("chat")


def _out(job: ChatJob) -> ChatJobOut:
    return ChatJobOut(job_id=job.id, session_id=job.session_id, status=job.status,
                      response=job.response, completed_at=job.completed_at,
                      failure_reason=job.failure_reason)


@router.post("/chat", body=ChatIn, query=WaitQuery, responses={202: ChatJobOut, 200: ChatJobOut},
             errors=(401, 403, 429, 503), auth=("ApiKey",))
async def create_chat(request: Request, body: ChatIn, query: WaitQuery) -> Response:
    """Queue a chat message for a miner. 202 while queued; 200 with `response` if answered
    within `wait` seconds. The business comes from the API key, never from the body."""
    c = ctx(request)
    client = await require_client(request, "chat")
    job = await service.submit(c, client, body.message, body.session_id, body.context)
    job = await service.wait_for(c, client, job, query.wait)
    status = 200 if job.status == JobStatus.completed else 202
    return json_response(_out(job), status)


@router.get("/chat/{job_id}", query=WaitQuery, responses={200: ChatJobOut}, errors=(401, 403, 404),
            auth=("ApiKey",))
async def get_chat(request: Request, query: WaitQuery) -> ChatJobOut:
    """A chat job's status and answer, visible only to the business that sent it."""
    c = ctx(request)
    client = await require_client(request, "chat")
    job = await service.get_owned(c, client, request.path_params["job_id"])
    return _out(await service.wait_for(c, client, job, query.wait))


@router.get("/chat/sessions/{session_id}/messages", responses={200: SessionMessagesOut},
            errors=(401, 403, 404), auth=("ApiKey",))
async def session_messages(request: Request) -> SessionMessagesOut:
    """The session's history, oldest first (user and assistant turns)."""
    client = await require_client(request, "chat")
    session_id = request.path_params["session_id"]
    rows = await service.session_messages(ctx(request), client, session_id)
    return SessionMessagesOut(session_id=session_id, messages=[
        ChatMessageOut(role=r.role, message=r.message, timestamp=r.timestamp, job_id=r.job_id)
        for r in rows])
