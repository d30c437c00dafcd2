"""The backend HTTP API as the miner sees it: sign-in, job leases, streamed chunks, results.
HTTP only."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import httpx

from miner.signin import ForeignMessage, check_sign_in_message
from miner.wallet import Wallet

log = logging.getLogger("miner.client")

# Re-sign-in once this fraction of the token's lifetime has passed.
TOKEN_REFRESH_FRACTION = 0.8
# A lease whose response lacks lease_expires_at is assumed to last this long (seconds).
DEFAULT_LEASE_SECONDS = 30.0
# The most jobs one batch request leases, and the most results one batch request posts.
MAX_BATCH = 64
# The longest `delta` one chunk post may carry (characters).
MAX_CHUNK_CHARS = 16_000


class BackendError(Exception):
    """Base for everything the backend client raises."""


class BackendUnavailable(BackendError):
    """Connection failure, timeout, 429 or 5xx: transient, retry with backoff."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after  # seconds, from a Retry-After header


class LeaseLost(BackendError):
    """409 (or 404 for the job): the lease is not ours any more. Drop the job, never retry it."""


class ChunkGap(BackendError):
    """409 chunk_gap: the backend is missing chunks before this one; resend from next_seq."""

    def __init__(self, message: str, next_seq: int) -> None:
        super().__init__(message)
        self.next_seq = next_seq


class EndpointMissing(BackendError):
    """404/405 on a route: this backend does not implement it (e.g. idle jobs)."""


class BackendRejected(BackendError):
    """A 4xx that retrying will not fix."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"HTTP {status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class ChunkAck:
    next_seq: int  # the seq the backend expects next
    watching: bool  # False: no client reads the stream now; chunks may stop (the result may not)


@dataclass
class Lease:
    kind: str  # "chat" or "idle"
    job_id: str
    lease_id: str
    job: dict[str, Any]
    # time.monotonic() at which the backend will consider the lease expired (best estimate).
    deadline: float
    received_at: float = field(default_factory=time.monotonic)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


def _error_of(r: httpx.Response) -> tuple[str, str]:
    try:
        body = r.json()
        if isinstance(body, dict):
            return str(body.get("error") or "error"), str(body.get("detail") or "")
    except Exception:
        pass
    return "http_" + str(r.status_code), " ".join((r.text or "").split())[:200]


def _retry_after(r: httpx.Response) -> float | None:
    try:
        v = float(r.headers.get("retry-after", ""))
    except ValueError:
        return None
    return v if 0 <= v <= 3600 else None


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt


_NOT_A_MINER = httpx.Response(403, json={"error": "not_a_miner", "detail": "no miner role"})


class BackendClient:
    def __init__(
        self,
        base_url: str,
        wallet: Wallet,
        *,
        name: str | None = None,
        timeout: float = 15.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.wallet = wallet
        self.name = name
        self.timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout, connect=5.0),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
            transport=transport,
            headers={"User-Agent": "mia-miner"},
        )
        self._token: str | None = None
        self._refresh_at = 0.0  # time.monotonic()
        self._auth_lock = asyncio.Lock()
        self.miner_id: Any = None
        self.roles: list[str] = []
        self.sign_ins = 0
        # what the model server can do beyond plain chat (ModelClient.probe), declared on polls
        self.capabilities: tuple[str, ...] = ()
        self._needs_register = False

    async def aclose(self) -> None:
        await self._http.aclose()

    # ---- plumbing -------------------------------------------------------------------------

    async def _send(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            r = await self._http.request(method, path, **kw)
        except httpx.TimeoutException:
            raise BackendUnavailable(f"{method} {path}: timed out") from None
        except httpx.HTTPError as exc:
            raise BackendUnavailable(f"{method} {path}: {type(exc).__name__}") from None
        if r.status_code >= 500 or r.status_code == 429:  # 429: rate-limited, wait Retry-After
            code, detail = _error_of(r)
            raise BackendUnavailable(
                f"{method} {path}: HTTP {r.status_code} {code} {detail}".rstrip(),
                retry_after=_retry_after(r),
            )
        return r

    @staticmethod
    def _server_offset(r: httpx.Response) -> float:
        """Seconds to add to time.time() to get the backend's clock (0 when unknown).

        The Date header has 1 s resolution and is truncated, so the estimate errs on the side
        of the backend's clock being later, which makes lease estimates conservative."""
        date = r.headers.get("date")
        if not date:
            return 0.0
        try:
            server = email.utils.parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError):
            return 0.0
        return server + 0.5 - time.time()

    def _seconds_until(self, r: httpx.Response, value: Any, default: float) -> float:
        when = _parse_time(value)
        if when is None:
            return default
        server_now = time.time() + self._server_offset(r)
        return when.timestamp() - server_now

    async def _authed(self, method: str, path: str, **kw: Any) -> httpx.Response:
        await self.ensure_token()
        token = self._token
        r = await self._send(method, path, headers={"Authorization": f"Bearer {token}"}, **kw)
        if r.status_code in (401, 403):
            # 401: expired or revoked. 403: this session lacks the miner role (e.g. a wallet that
            # signed in as an operator before registering). Sign in again once (only one task
            # does it; a 403 forces registration) and retry.
            if r.status_code == 403:
                self._needs_register = True
            self._invalidate(token)
            await self.ensure_token()
            r = await self._send(
                method, path, headers={"Authorization": f"Bearer {self._token}"}, **kw
            )
        return r

    def _invalidate(self, token: str | None) -> None:
        if token is not None and token == self._token:
            self._token = None

    # ---- sign-in ---------------------------------------------------------------------------

    async def ensure_token(self) -> None:
        if self._token and time.monotonic() < self._refresh_at:
            return
        async with self._auth_lock:
            if self._token and time.monotonic() < self._refresh_at:
                return
            await self._sign_in()

    async def _signed_message(self) -> dict[str, str]:
        r = await self._send("GET", "/auth/nonce", params={"address": self.wallet.address})
        if r.status_code != 200:
            code, detail = _error_of(r)
            raise BackendRejected(r.status_code, code, f"nonce request failed: {detail}")
        message = r.json().get("message")
        if not isinstance(message, str) or not message:
            raise BackendRejected(r.status_code, "bad_nonce", "the nonce response has no message")
        # Never sign a sign-in message for another site or another address.
        try:
            check_sign_in_message(message, self.base_url, self.wallet.address)
        except ForeignMessage as exc:
            raise BackendRejected(r.status_code, "foreign_sign_in", str(exc)) from None
        return {"message": message, "signature": self.wallet.sign_text(message)}

    async def _sign_in(self) -> None:
        body = await self._signed_message()
        r = await self._send("POST", "/auth/login", json=body)
        if r.status_code == 200 and "miner" not in (r.json().get("roles") or ["miner"]):
            r = _NOT_A_MINER  # signed in, but not as a miner (e.g. an operator wallet)
        if self._needs_register or r.status_code in (401, 403, 404):
            # Not registered yet (or the login was refused): register, which is idempotent per
            # address and returns a fresh token. A nonce is single-use, so fetch a new one.
            self._needs_register = False
            first = _error_of(r) if r.status_code != 200 else ("relogin", "miner role missing")
            body = await self._signed_message()
            if self.name:
                body["name"] = self.name
            r = await self._send("POST", "/register_miner", json=body)
            if r.status_code != 200:
                code, detail = _error_of(r)
                raise BackendRejected(
                    r.status_code,
                    code,
                    f"sign-in refused ({first[0]}: {first[1]}); registration refused: {detail}",
                )
            log.info("registered miner %s", self.wallet.address)
        elif r.status_code != 200:
            code, detail = _error_of(r)
            raise BackendRejected(r.status_code, code, f"sign-in failed: {detail}")
        data = r.json()
        token = data.get("token")
        if not isinstance(token, str) or not token:
            raise BackendRejected(r.status_code, "bad_token", "sign-in response has no token")
        lifetime = self._seconds_until(r, data.get("expires_at"), 600.0)
        self._token = token
        self._refresh_at = time.monotonic() + max(1.0, lifetime * TOKEN_REFRESH_FRACTION)
        self.miner_id = data.get("miner_id", self.miner_id)
        self.roles = list(data.get("roles") or self.roles)
        self.sign_ins += 1
        log.info("signed in as %s (token valid %.0fs)", self.wallet.address, lifetime)

    async def try_login(self) -> tuple[bool, str]:
        """For --check: sign in without registering. Returns (registered, detail)."""
        body = await self._signed_message()
        r = await self._send("POST", "/auth/login", json=body)
        if r.status_code == 200:
            return True, ""
        code, detail = _error_of(r)
        if r.status_code in (401, 403, 404):
            return False, f"{code}: {detail}"
        raise BackendRejected(r.status_code, code, detail)

    # ---- health ----------------------------------------------------------------------------

    async def health(self) -> tuple[int, str]:
        r = await self._send_health()
        code, detail = ("", "") if r.status_code == 200 else _error_of(r)
        return r.status_code, (detail or code)

    async def _send_health(self) -> httpx.Response:
        try:
            return await self._http.get("/health", timeout=10.0)
        except httpx.TimeoutException:
            raise BackendUnavailable("timed out") from None
        except httpx.ConnectError:
            raise BackendUnavailable("connection refused or host unreachable") from None
        except httpx.HTTPError as exc:
            raise BackendUnavailable(type(exc).__name__) from None

    # ---- jobs ------------------------------------------------------------------------------

    @staticmethod
    def _prefix(kind: str) -> str:
        return "/idle-job" if kind == "idle" else "/job"

    def _poll_params(self, kind: str, wait: int, model: str | None, **more: int) -> dict[str, Any]:
        params: dict[str, Any] = {**more, "wait": wait}
        if model is not None and kind == "chat":
            # Also lease the jobs that API clients asked this model for, not only untargeted ones.
            params["model"] = model
            if self.capabilities:
                # and those that need what the model server can do (tools, JSON output)
                params["capabilities"] = ",".join(self.capabilities)
        return params

    async def next_job(self, kind: str, wait: int, model: str | None = None) -> Lease | None:
        """`model`: the model this miner serves, declared on chat polls."""
        wait = max(0, min(30, int(wait)))
        path = self._prefix(kind) + "/next"
        r = await self._authed("GET", path, params=self._poll_params(kind, wait, model),
                               timeout=self.timeout + wait)
        if r.status_code == 204:
            return None
        self._expect_200(r, "GET", path)
        return self._lease_from(kind, r, r.json())

    async def next_jobs(
        self, kind: str, max_jobs: int, wait: int, model: str | None = None
    ) -> list[Lease]:
        """GET /job/batch (or /idle-job/batch): 1..max_jobs leases, or [] when none came within
        `wait` seconds. EndpointMissing when the backend has no batch protocol."""
        wait = max(0, min(30, int(wait)))
        max_jobs = max(1, min(MAX_BATCH, int(max_jobs)))
        path = self._prefix(kind) + "/batch"
        r = await self._authed(
            "GET", path, params=self._poll_params(kind, wait, model, max=max_jobs),
            timeout=self.timeout + wait,
        )
        if r.status_code == 204:
            return []
        self._expect_200(r, "GET", path)
        jobs = r.json().get("jobs")
        if not isinstance(jobs, list) or not jobs or len(jobs) > max_jobs:
            raise BackendRejected(200, "bad_batch", f"expected 1..{max_jobs} jobs in the answer")
        return [self._lease_from(kind, r, job) for job in jobs]

    @staticmethod
    def _expect_200(r: httpx.Response, method: str, path: str) -> None:
        if r.status_code in (404, 405):
            raise EndpointMissing(f"{method} {path}: HTTP {r.status_code}")
        if r.status_code != 200:
            code, detail = _error_of(r)
            raise BackendRejected(r.status_code, code, detail)

    def _lease_from(self, kind: str, r: httpx.Response, job: Any) -> Lease:
        if not isinstance(job, dict) or job.get("job_id") is None or job.get("lease_id") is None:
            raise BackendRejected(200, "bad_job", "the job has no job_id or lease_id")
        remaining = self._seconds_until(r, job.get("lease_expires_at"), DEFAULT_LEASE_SECONDS)
        return Lease(
            kind=kind,
            job_id=str(job["job_id"]),
            lease_id=str(job["lease_id"]),
            job=job,
            deadline=time.monotonic() + remaining,
        )

    async def extend(self, lease: Lease) -> None:
        path = f"{self._prefix(lease.kind)}/{lease.job_id}/extend"
        r = await self._authed("POST", path, json={"lease_id": lease.lease_id})
        if r.status_code in (404, 409):
            raise LeaseLost(f"extend {lease.job_id}: HTTP {r.status_code} {_error_of(r)[0]}")
        if r.status_code != 200:
            code, detail = _error_of(r)
            raise BackendRejected(r.status_code, code, detail)
        data = r.json()
        if data.get("lease_id") not in (None, lease.lease_id):
            lease.lease_id = str(data["lease_id"])
        remaining = self._seconds_until(r, data.get("lease_expires_at"), DEFAULT_LEASE_SECONDS)
        lease.deadline = time.monotonic() + remaining

    async def release(self, lease: Lease, reason: str) -> None:
        path = f"{self._prefix(lease.kind)}/{lease.job_id}/release"
        r = await self._authed(
            "POST", path, json={"lease_id": lease.lease_id, "reason": reason[:500]}
        )
        if r.status_code in (404, 409):
            raise LeaseLost(f"release {lease.job_id}: HTTP {r.status_code}")
        if r.status_code != 200:
            code, detail = _error_of(r)
            raise BackendRejected(r.status_code, code, detail)

    async def post_chunk(self, lease: Lease, seq: int, delta: str) -> ChunkAck:
        """POST /job/{id}/chunk: the next piece of a streamed chat job's output. Posting the same
        seq again is harmless (the backend ignores a duplicate). Raises ChunkGap (resend from
        its next_seq), LeaseLost (409 lease_not_current / lease_expired), BackendUnavailable
        (also for 404 job_not_found: chunks are best effort), EndpointMissing (no such route)."""
        if not 1 <= len(delta) <= MAX_CHUNK_CHARS:
            raise ValueError(f"a chunk holds 1..{MAX_CHUNK_CHARS} characters")
        path = f"/job/{lease.job_id}/chunk"
        r = await self._authed(
            "POST", path, json={"lease_id": lease.lease_id, "seq": seq, "delta": delta}
        )
        if r.status_code == 200:
            data = r.json()
            return ChunkAck(next_seq=int(data.get("next_seq", seq + 1)),
                            watching=bool(data.get("watching", True)))
        code, detail = _error_of(r)
        what = f"chunk {seq} of {lease.job_id}: HTTP {r.status_code} {code} {detail}".rstrip()
        if r.status_code == 409 and code == "chunk_gap":
            next_seq = r.json().get("next_seq")
            if isinstance(next_seq, bool) or not isinstance(next_seq, int):
                raise BackendRejected(409, code, "the chunk_gap answer has no next_seq")
            raise ChunkGap(what, next_seq)
        if r.status_code == 409:
            raise LeaseLost(what)
        if r.status_code == 404 and code == "job_not_found":
            raise BackendUnavailable(what)
        if r.status_code in (404, 405):
            raise EndpointMissing(what)
        raise BackendRejected(r.status_code, code, detail)

    def _result_body(
        self, lease: Lease, output: str, output_tokens: int | None, finish_reason: str | None = None
    ) -> dict[str, Any]:
        # Only chat results carry the model server's finish reason, and only OpenAI's values.
        finish = finish_reason if lease.kind == "chat" and finish_reason in FINISH_REASONS else None
        body: dict[str, Any] = {
            "job_id": lease.job_id,
            "lease_id": lease.lease_id,
            "output": output,
            # Every result is signed on its own, in a batch too: the signature is stored with
            # the answer and proves which wallet wrote it (and why the model stopped).
            "signature": self.wallet.sign_result(lease.job_id, output, finish),
        }
        if output_tokens is not None:
            body["output_tokens"] = output_tokens
        if finish is not None:
            body["finish_reason"] = finish
        return body

    async def post_result(
        self, lease: Lease, output: str, output_tokens: int | None, finish_reason: str | None = None
    ) -> dict[str, Any]:
        body = self._result_body(lease, output, output_tokens, finish_reason)
        path = self._prefix(lease.kind) + "/result"
        r = await self._authed("POST", path, json=body)
        if r.status_code in (404, 409):
            code, detail = _error_of(r)
            raise LeaseLost(f"result {lease.job_id}: HTTP {r.status_code} {code} {detail}".rstrip())
        if r.status_code != 200:
            code, detail = _error_of(r)
            raise BackendRejected(r.status_code, code, detail)
        return r.json()

    async def post_results(
        self, kind: str, results: list[tuple[Lease, str, int | None]]
        | list[tuple[Lease, str, int | None, str | None]]
    ) -> list[BackendError | None]:
        """POST /job/results (or /idle-job/results) with 1..64 results; one entry per result, in
        order: None when completed, else the error the single endpoint would have raised for it
        (LeaseLost or BackendRejected). A failure of the whole request raises, as post_result."""
        return (await self.post_results_then(kind, results, 0))[0]

    async def post_results_then(
        self, kind: str, results: list[tuple[Lease, str, int | None]]
        | list[tuple[Lease, str, int | None, str | None]], next_jobs: int,
        model: str | None = None,
    ) -> tuple[list[BackendError | None], list[Lease]]:
        """post_results, and with next_jobs > 0 the same request then leases up to that many
        jobs that are waiting now (POST .../results?next=N&wait=0): one request where the miner
        spent two. The leases are [] when none was waiting, when the lease part was refused
        (the next poll meets the same refusal and backs off), or when the backend predates
        `next` (it ignores the parameter). `model`: as on a chat poll."""
        if not 1 <= len(results) <= MAX_BATCH:
            raise ValueError(f"a batch holds 1..{MAX_BATCH} results")
        path = self._prefix(kind) + "/results"
        body = {"results": [self._result_body(*item) for item in results]}
        next_jobs = max(0, min(MAX_BATCH, int(next_jobs)))
        params = self._poll_params(kind, 0, model, next=next_jobs) if next_jobs else None
        r = await self._authed("POST", path, json=body, params=params)
        self._expect_200(r, "POST", path)
        data = r.json()
        answers = data.get("results")
        if not isinstance(answers, list) or len(answers) != len(results):
            raise BackendRejected(200, "bad_batch", "the answer does not have one entry per result")
        outcomes = [_item_outcome(item[0], answer) for item, answer in zip(results, answers)]
        jobs = data.get("jobs") if next_jobs else None
        if not isinstance(jobs, list) or len(jobs) > next_jobs:
            jobs = []
        refused = data.get("lease_error")
        if isinstance(refused, dict):
            log.info("the lease part of a result request was refused: %s %s",
                     refused.get("error"), refused.get("detail"))
        return outcomes, [self._lease_from(kind, r, job) for job in jobs]


# The finish reasons a chat result may carry (the backend's ResultIn): others are not sent.
FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter"})


# Per-item errors of POST /job/results that the single endpoint answers with 404 or 409: the
# lease is not ours (any more), somebody else answers the job.
LEASE_GONE_CODES = frozenset(
    {"lease_not_current", "lease_expired", "job_not_found", "already_completed", "job_failed"}
)


def _item_outcome(lease: Lease, answer: Any) -> BackendError | None:
    if not isinstance(answer, dict) or str(answer.get("job_id")) != lease.job_id:
        return BackendRejected(200, "bad_batch", f"no answer for job {lease.job_id} in its place")
    if answer.get("status") == "completed":
        return None
    code, detail = str(answer.get("error") or "rejected"), str(answer.get("detail") or "")
    if code in LEASE_GONE_CODES:
        return LeaseLost(f"result {lease.job_id}: {code} {detail}".rstrip())
    return BackendRejected(200, code, detail)
