"""A small backend that speaks the miner protocol exactly as docs and the batch contract say
(sign-in, /job/next, /job/result, /job/batch, /job/results with or without ?next= leasing the
next jobs in the same request, extend, release, and the same under
/idle-job, which hands out nothing while a chat job waits; chat polls with `model=` and the
chunks of streamed jobs, POST /job/{id}/chunk), served on 127.0.0.1 by
tests/miner/support.UvicornThread. It verifies every signature and counts every request, so a
test can see which protocol a miner used. `batch=False` is a backend from before the batch
protocol: its batch routes answer 404.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from eth_account import Account
from eth_account.messages import encode_defunct
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from miner.wallet import recover_result_signer

MAX_BATCH = 64


@dataclass
class FakeJob:
    job_id: str
    prompt: str
    kind: str = "chat"  # or "idle"
    status: str = "queued"  # queued | leased | completed | failed
    lease_id: str | None = None
    expires: datetime | None = None
    miner: str | None = None
    output: str | None = None
    signature: str | None = None
    finish_reason: str | None = None
    attempts: int = 0
    # The test's hand: on its first delivery the job is at once given to another miner (as a
    # reaper would after a lease expiry), so the first lease's result is not current any more.
    steal_first_lease: bool = False
    # Fields of the assignment beyond the base ones: model, stream, max_tokens, temperature...
    # A job with a `model` is leased only by a chat poll that declares that model.
    extra: dict[str, Any] = field(default_factory=dict)
    chunks: list[str] = field(default_factory=list)  # the stream's deltas by seq
    chunk_times: list[float] = field(default_factory=list)  # time.monotonic() of each chunk
    completed_at: float | None = None  # time.monotonic() of the result
    watching: bool = True  # what chunk posts answer in `watching`
    # The test's hand: when a chunk past this seq first arrives, the server forgets every
    # chunk from this seq on (as if its buffer had failed over) and answers chunk_gap.
    forget_chunks_from: int | None = None

    @property
    def streamed(self) -> str:
        return "".join(self.chunks)


def _error(status: int, code: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status)


@dataclass
class ProtocolServer:
    batch: bool = True
    takes_next: bool = True  # False: POST .../results ignores ?next= (an older backend)
    lease_seconds: float = 30.0
    jobs: dict[str, FakeJob] = field(default_factory=dict)
    requests: Counter[str] = field(default_factory=Counter)  # "GET /job/batch" -> count
    batch_sizes: list[int] = field(default_factory=list)  # results per POST /job/results
    lease_sizes: list[int] = field(default_factory=list)  # jobs per 200 of GET /job/batch
    # jobs leased by each POST /job/results?next= (empty answers too): also in lease_sizes
    next_sizes: list[int] = field(default_factory=list)
    posted: Counter[str] = field(default_factory=Counter)  # job id -> results posted for it
    leased: list[str] = field(default_factory=list)  # job ids in the order they were leased
    fail_results: int = 0  # the next this many POST /job/results answer 503 (Retry-After: 0)
    polls: list[tuple[str, str | None]] = field(default_factory=list)  # (path, model=) of each poll
    fail_chunks: int = 0  # the next this many chunk posts answer 503 (Retry-After: 0)
    unacked_chunks: int = 0  # the next this many chunk posts are stored, then answered 503
    chunk_delay: float = 0.0  # seconds every chunk post takes
    _queues: dict[str, list[str]] = field(default_factory=lambda: {"chat": [], "idle": []})
    _tokens: dict[str, str] = field(default_factory=dict)  # token -> address
    _nonces: set[str] = field(default_factory=set)

    # ---- the test's side -------------------------------------------------------------------

    def add_job(self, prompt: str, **kw: Any) -> str:
        job = FakeJob(job_id=str(uuid.uuid4()), prompt=prompt, **kw)
        self.jobs[job.job_id] = job
        self._queues[job.kind].append(job.job_id)
        return job.job_id

    def app(self) -> Starlette:
        routes = [
            Route("/health", self.health),
            Route("/auth/nonce", self.nonce),
            Route("/auth/login", self.login, methods=["POST"]),
            Route("/register_miner", self.login, methods=["POST"]),
        ]
        for prefix, kind in (("/job", "chat"), ("/idle-job", "idle")):
            routes += self._job_routes(prefix, kind)
        return Starlette(routes=routes)

    def _job_routes(self, prefix: str, kind: str) -> list[Route]:
        def bind(handler):  # type: ignore[no-untyped-def]
            async def endpoint(request: Request) -> Response:
                return await handler(request, kind)
            return endpoint

        routes = [
            Route(prefix + "/next", bind(self.next), methods=["GET"]),
            Route(prefix + "/result", bind(self.result), methods=["POST"]),
            Route(prefix + "/{job_id}/extend", bind(self.extend), methods=["POST"]),
            Route(prefix + "/{job_id}/release", bind(self.release), methods=["POST"]),
        ]
        if kind == "chat":
            routes.append(Route(prefix + "/{job_id}/chunk", bind(self.chunk), methods=["POST"]))
        if self.batch:
            routes += [Route(prefix + "/batch", bind(self.next_batch), methods=["GET"]),
                       Route(prefix + "/results", bind(self.results), methods=["POST"])]
        return routes

    # ---- sign-in ---------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def nonce(self, request: Request) -> Response:
        address = request.query_params.get("address", "")
        nonce = secrets.token_hex(8)
        self._nonces.add(nonce)
        # the miner signs only its own backend's message: scheme, domain and URI are this
        # server's (EIP-4361: a domain without a scheme means https)
        host = request.url.netloc
        message = (f"{request.url.scheme}://{host} wants you to sign in with your Ethereum "
                   f"account:\n{address}\n\n"
                   f"URI: {request.url.scheme}://{host}\nVersion: 1\nChain ID: 1\n"
                   f"Nonce: {nonce}")
        return JSONResponse({"message": message, "nonce": nonce})

    async def login(self, request: Request) -> Response:
        body = await request.json()
        message = body["message"]
        nonce = message.rsplit("Nonce: ", 1)[-1]
        if nonce not in self._nonces:
            return _error(401, "invalid_nonce", "unknown or used nonce")
        self._nonces.discard(nonce)
        address = Account.recover_message(encode_defunct(text=message), signature=body["signature"])
        if address.lower() not in message.lower():
            return _error(401, "invalid_signature", "the message is not signed by its address")
        token = secrets.token_hex(16)
        self._tokens[token] = address
        expires = datetime.now(UTC) + timedelta(hours=1)
        return JSONResponse({"token": token, "expires_at": expires.isoformat(), "address": address,
                             "roles": ["miner"], "miner_id": 1})

    def _miner(self, request: Request) -> str | None:
        self.requests[f"{request.method} {request.scope['route'].path}"] += 1
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        return self._tokens.get(token)

    # ---- leases ----------------------------------------------------------------------------

    async def _take(self, kind: str, n: int, wait: float, miner: str,
                    model: str | None = None) -> list[dict[str, Any]]:
        # Jobs are added from the test's thread, so this polls instead of waiting on a condition.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        queue = self._queues[kind]

        def ours() -> list[str]:
            return [j for j in queue if self.jobs[j].extra.get("model") in (None, model)][:n]

        while not ours() and loop.time() < deadline:
            await asyncio.sleep(0.01)
        if kind == "idle" and any(self.jobs[j].extra.get("model") is None
                                  for j in self._queues["chat"]):
            return []  # chat first
        taken = ours()
        for job_id in taken:
            queue.remove(job_id)
        return [self._lease(self.jobs[job_id], miner) for job_id in taken]

    def _lease(self, job: FakeJob, miner: str) -> dict[str, Any]:
        job.status, job.miner, job.attempts = "leased", miner, job.attempts + 1
        self.leased.append(job.job_id)
        job.lease_id = str(uuid.uuid4())
        job.expires = datetime.now(UTC) + timedelta(seconds=self.lease_seconds)
        answer = {"job_id": job.job_id, "lease_id": job.lease_id,
                  "lease_expires_at": job.expires.isoformat(), "prompt": job.prompt,
                  "context": None, "session_id": "s-" + job.job_id, "history": [],
                  "attempt": job.attempts, **job.extra}
        if job.steal_first_lease and job.attempts == 1:
            job.lease_id = str(uuid.uuid4())  # now another miner's lease
        return answer

    async def next(self, request: Request, kind: str) -> Response:
        miner = self._miner(request)
        if miner is None:
            return _error(401, "unauthorized", "sign in")
        model = self._poll_model(request, kind)
        jobs = await self._take(kind, 1, float(request.query_params.get("wait", "0")), miner, model)
        return JSONResponse(jobs[0]) if jobs else Response(status_code=204)

    def _poll_model(self, request: Request, kind: str) -> str | None:
        model = request.query_params.get("model")
        self.polls.append((request.url.path, model))
        return model if kind == "chat" else None

    async def next_batch(self, request: Request, kind: str) -> Response:
        miner = self._miner(request)
        if miner is None:
            return _error(401, "unauthorized", "sign in")
        n = int(request.query_params.get("max", "1"))
        if not 1 <= n <= MAX_BATCH:
            return _error(400, "bad_request", "max must be 1..64")
        model = self._poll_model(request, kind)
        jobs = await self._take(kind, n, float(request.query_params.get("wait", "0")), miner, model)
        if not jobs:
            return Response(status_code=204)
        self.lease_sizes.append(len(jobs))
        return JSONResponse({"jobs": jobs})

    async def _current(self, request: Request,
                       kind: str) -> tuple[FakeJob | None, JSONResponse | None]:
        """The job whose current lease the request names, or the error the backend answers."""
        if self._miner(request) is None:
            return None, _error(401, "unauthorized", "sign in")
        job = self.jobs.get(request.path_params["job_id"])
        if job is None or job.kind != kind:
            return None, _error(404, "job_not_found", "no such job")
        if job.status != "leased" or job.lease_id != (await request.json())["lease_id"]:
            return job, _error(409, "lease_not_current", "the lease is not yours")
        return job, None

    async def extend(self, request: Request, kind: str) -> Response:
        job, err = await self._current(request, kind)
        if err is not None:
            return err
        job.expires = datetime.now(UTC) + timedelta(seconds=self.lease_seconds)
        return JSONResponse({"job_id": job.job_id, "lease_id": job.lease_id,
                             "lease_expires_at": job.expires.isoformat()})

    async def release(self, request: Request, kind: str) -> Response:
        job, err = await self._current(request, kind)
        if err is not None:
            return err
        job.status, job.lease_id = "queued", None
        self._queues[kind].insert(0, job.job_id)
        return JSONResponse({"job_id": job.job_id, "status": "queued"})

    # ---- chunks of a streamed job ----------------------------------------------------------

    async def chunk(self, request: Request, kind: str) -> Response:
        job, err = await self._current(request, kind)
        if err is not None:
            return err
        body = await request.json()
        seq, delta = body.get("seq"), body.get("delta")
        if not isinstance(seq, int) or seq < 0 or not isinstance(delta, str) \
                or not 1 <= len(delta) <= 16_000:
            return _error(422, "validation_error", "seq >= 0 and 1..16000 characters of delta")
        if self.chunk_delay:
            await asyncio.sleep(self.chunk_delay)
        if self.fail_chunks > 0:
            self.fail_chunks -= 1
            return JSONResponse({"error": "unavailable", "detail": "redis is down"},
                                status_code=503, headers={"Retry-After": "0"})
        forget = job.forget_chunks_from
        if forget is not None and seq > forget and len(job.chunks) > forget:
            job.forget_chunks_from = None
            del job.chunks[forget:], job.chunk_times[forget:]
        next_seq = len(job.chunks)
        if seq > next_seq:
            return JSONResponse({"error": "chunk_gap", "detail": f"expected chunk {next_seq}",
                                 "next_seq": next_seq}, status_code=409)
        if seq == next_seq:
            job.chunks.append(delta)
            job.chunk_times.append(time.monotonic())
            if self.unacked_chunks > 0:
                self.unacked_chunks -= 1
                return JSONResponse({"error": "unavailable", "detail": "answer lost"},
                                    status_code=503, headers={"Retry-After": "0"})
        return JSONResponse({"job_id": job.job_id, "next_seq": len(job.chunks),
                             "watching": job.watching})

    # ---- results ---------------------------------------------------------------------------

    def _complete(self, kind: str, miner: str, item: dict[str, Any]) -> JSONResponse | None:
        """None when the item completes its job (or repeats the accepted result), else the
        error the single endpoint answers."""
        self.posted[str(item.get("job_id"))] += 1
        job = self.jobs.get(str(item.get("job_id")))
        if job is None or job.kind != kind:
            return _error(404, "job_not_found", "no such job")
        if job.status == "completed":
            if (job.lease_id, job.output) == (item["lease_id"], item["output"]):
                return None
            return _error(409, "already_completed", "completed with another output")
        if job.status == "failed":
            return _error(409, "job_failed", "this job has failed")
        if job.lease_id != item["lease_id"] or job.miner != miner:
            return _error(409, "lease_not_current", "the lease is not yours")
        if recover_result_signer(job.job_id, item["output"], item["signature"],
                                 item.get("finish_reason")) != miner:
            return _error(401, "invalid_result_signature", "the signature is not your wallet's")
        job.status, job.output, job.signature = "completed", item["output"], item["signature"]
        job.finish_reason = item.get("finish_reason")
        job.completed_at = time.monotonic()
        return None

    async def result(self, request: Request, kind: str) -> Response:
        miner = self._miner(request)
        if miner is None:
            return _error(401, "unauthorized", "sign in")
        item = await request.json()
        err = self._complete(kind, miner, item)
        return err or JSONResponse({"job_id": item["job_id"], "status": "completed"})

    async def results(self, request: Request, kind: str) -> Response:
        miner = self._miner(request)
        if miner is None:
            return _error(401, "unauthorized", "sign in")
        if self.fail_results > 0:
            self.fail_results -= 1
            return JSONResponse({"error": "unavailable", "detail": "the database is down"},
                                status_code=503, headers={"Retry-After": "0"})
        items = (await request.json()).get("results")
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
            return _error(422, "validation_error", "results must hold 1..64 items")
        self.batch_sizes.append(len(items))
        answers = []
        for item in items:
            err = self._complete(kind, miner, item)
            entry: dict[str, Any] = {"job_id": item["job_id"], "status": "completed"}
            if err is not None:
                entry = {"job_id": item["job_id"], "status": "rejected", **json.loads(err.body)}
            answers.append(entry)
        n = int(request.query_params.get("next", "0"))
        if not 0 <= n <= MAX_BATCH:
            return _error(422, "validation_error", "next must be 0..64")
        if not n or not self.takes_next:
            return JSONResponse({"results": answers})
        # ?next=: the results are in; the same request then leases as GET .../batch would
        model = self._poll_model(request, kind)
        jobs = await self._take(kind, n, float(request.query_params.get("wait", "0")), miner, model)
        self.next_sizes.append(len(jobs))
        if jobs:
            self.lease_sizes.append(len(jobs))
        return JSONResponse({"results": answers, "jobs": jobs, "lease_error": None})
