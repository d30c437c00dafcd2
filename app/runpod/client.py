"""Async client for RunPod serverless endpoints (``/v2/{endpoint_id}/run|status|cancel|health``).

Retry policy, in one place:
- ``submit``/``run``, ``status``, ``cancel`` and ``health`` make exactly one HTTP request and
  raise ``RunPodTransientError`` on network errors, 408, 429 and 5xx; they never retry.
- ``wait`` retries transient errors of status polls until its deadline.
- ``run_and_wait`` additionally retries ``submit`` only when the request certainly created no
  job (``job_may_exist`` is False: connection refused, 429), so a prompt never runs twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
from typing import Any
from urllib.parse import quote

import httpx

from app.observability import timed_runpod

from app.runpod.errors import (
    RunPodAuthError,
    RunPodError,
    RunPodJobFailed,
    RunPodMalformedOutput,
    RunPodNotFound,
    RunPodProtocolError,
    RunPodTimeout,
    RunPodTransientError,
)
from app.runpod.models import FAILED_STATUSES, JobStatus, RunPodResult, RunPodStatus

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.runpod.ai"
_ENDPOINT_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
# A status poll at the deadline still gets this long (capped by request_timeout_s) to answer.
_MIN_POLL_TIMEOUT_S = 1.0
_JITTER = 0.1


def build_input(prompt: str, max_tokens: int) -> dict[str, Any]:
    """The worker-vllm style ``input`` object: ``{"prompt", "sampling_params": {"max_tokens"}}``."""
    if not isinstance(prompt, str):
        raise TypeError("prompt must be a str")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError("max_tokens must be a positive int")
    return {"prompt": prompt, "sampling_params": {"max_tokens": max_tokens}}


# ---------------------------------------------------------------- output parsing


def _count(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RunPodMalformedOutput(f"malformed output: {field} is not a non-negative integer")
    return value


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        keys = sorted(str(k) for k in value)[:6]
        return f"object with keys {keys}"
    if isinstance(value, list):
        return f"list of {len(value)}"
    return type(value).__name__


def _usage(usage: Any, where: str) -> tuple[int | None, int | None]:
    if usage is None:
        return None, None
    if not isinstance(usage, dict):
        raise RunPodMalformedOutput(f"malformed output: {where}usage is {_describe(usage)}")
    return _count(usage.get("input"), f"{where}usage.input"), _count(
        usage.get("output"), f"{where}usage.output"
    )


def _parse_vllm(items: list[Any]) -> tuple[str, int | None, int | None]:
    if not items:
        raise RunPodMalformedOutput("malformed output: empty list")
    parts: list[str] = []
    input_tokens: int | None = None
    output_tokens: int | None = None
    for i, item in enumerate(items):
        where = f"[{i}]."
        if not isinstance(item, dict):
            raise RunPodMalformedOutput(f"malformed output: item {i} is {_describe(item)}")
        choices = item.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise RunPodMalformedOutput(f"malformed output: {where}choices is missing or empty")
        tokens = choices[0].get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise RunPodMalformedOutput(
                f"malformed output: {where}choices[0].tokens is not a list of strings"
            )
        parts.extend(tokens)
        if "usage" in item:
            # worker-vllm reports cumulative usage per streamed batch: the last one wins.
            input_tokens, output_tokens = _usage(item["usage"], where)
    return "".join(parts), input_tokens, output_tokens


def _parse_text(output: dict[str, Any]) -> tuple[str, int | None, int | None]:
    text = output["text"]
    if not isinstance(text, str):
        raise RunPodMalformedOutput(f"malformed output: text is {_describe(text)}")
    input_tokens = _count(output.get("input_tokens"), "input_tokens")
    output_tokens = _count(output.get("output_tokens"), "output_tokens")
    u_in, u_out = _usage(output.get("usage"), "")
    return text, u_in if u_in is not None else input_tokens, u_out if u_out is not None else output_tokens


def parse_output(output: Any) -> tuple[str, int | None, int | None]:
    """Parse a COMPLETED job's output into ``(text, input_tokens, output_tokens)``.

    Accepted shapes:
    - worker-vllm: ``[{"choices": [{"tokens": [str, ...]}], "usage": {"input": n, "output": n}}, ...]``;
      text is the concatenation of ``choices[0].tokens`` over all items, usage from the last item.
    - plain: ``{"text": str, "usage"?: {"input", "output"}}`` or
      ``{"text": str, "input_tokens"?: n, "output_tokens"?: n}``.
    Anything else raises ``RunPodMalformedOutput``. Missing counts are None, present ones ints.
    """
    if isinstance(output, list):
        return _parse_vllm(output)
    if isinstance(output, dict) and "text" in output:
        return _parse_text(output)
    if isinstance(output, dict) and "error" in output:
        error = output["error"]
        text = error if isinstance(error, str) else json.dumps(error, default=str)
        raise RunPodMalformedOutput(f"malformed output: worker returned an error: {text}")
    raise RunPodMalformedOutput(f"malformed output: unexpected {_describe(output)}")


# ---------------------------------------------------------------- client


class _Secret:
    """Holds the API key so that repr()/vars() of the client never show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__


def _ms(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        return None
    return int(round(value))


class RunPodClient:
    """One RunPod serverless endpoint.

    ``http``: pass a shared ``httpx.AsyncClient`` to reuse connections; the client then does
    not close it. ``request_timeout_s`` bounds every single HTTP request (seconds).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        endpoint_id: str,
        *,
        http: httpx.AsyncClient | None = None,
        request_timeout_s: float = 10.0,
    ) -> None:
        base_url = base_url.rstrip("/")
        if not base_url.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        if not isinstance(api_key, str) or not api_key.strip():
            raise ValueError("api_key is empty")
        if not _ENDPOINT_ID_RE.match(endpoint_id):
            raise ValueError("endpoint_id must be 1-128 characters of [A-Za-z0-9_-]")
        if request_timeout_s <= 0:
            raise ValueError("request_timeout_s must be positive")
        self.base_url = base_url
        self.endpoint_id = endpoint_id
        self.request_timeout_s = float(request_timeout_s)
        self._api_key = _Secret(api_key)
        self._owns_http = http is None
        self._http = http if http is not None else httpx.AsyncClient(timeout=request_timeout_s)
        self._rng = random.Random()

    def __repr__(self) -> str:
        return f"RunPodClient(base_url={self.base_url!r}, endpoint_id={self.endpoint_id!r})"

    async def __aenter__(self) -> RunPodClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    # ------------------------------------------------------------ plumbing

    def _scrub(self, text: str) -> str:
        return text.replace(self._api_key.get(), "<redacted>")

    def _url(self, *parts: str) -> str:
        path = "/".join(quote(p, safe="") for p in parts)
        return f"{self.base_url}/v2/{self.endpoint_id}/{path}"

    async def _request(
        self,
        method: str,
        op: str,
        parts: tuple[str, ...],
        *,
        body: dict[str, Any] | None = None,
        timeout_s: float | None = None,
        job_id: str | None = None,
    ) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self._api_key.get()}"}
        try:
            resp = await timed_runpod(op, self._http.request(
                method,
                self._url(*parts),
                json=body,
                headers=headers,
                timeout=timeout_s if timeout_s is not None else self.request_timeout_s,
            ))
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise RunPodTransientError(
                f"RunPod {op}: cannot connect ({type(exc).__name__})",
                job_may_exist=False,
                runpod_job_id=job_id,
            ) from exc
        except httpx.TransportError as exc:
            raise RunPodTransientError(
                f"RunPod {op}: network error ({type(exc).__name__})", runpod_job_id=job_id
            ) from exc

        code = resp.status_code
        if code in (401, 403):
            raise RunPodAuthError(
                f"RunPod {op}: API key rejected (HTTP {code})", status_code=code, runpod_job_id=job_id
            )
        if code == 404:
            what = f"job {job_id}" if job_id else f"endpoint {self.endpoint_id}"
            raise RunPodNotFound(f"RunPod {op}: {what} not found (HTTP 404)", runpod_job_id=job_id)
        if code in (408, 429) or code >= 500:
            raise RunPodTransientError(
                f"RunPod {op}: HTTP {code}",
                status_code=code,
                job_may_exist=code != 429,
                runpod_job_id=job_id,
            )
        if not 200 <= code < 300:
            snippet = self._scrub(resp.text[:200])
            raise RunPodProtocolError(f"RunPod {op}: HTTP {code}: {snippet}", runpod_job_id=job_id)
        try:
            data = resp.json()
        except ValueError:
            raise RunPodProtocolError(f"RunPod {op}: response is not JSON", runpod_job_id=job_id) from None
        if not isinstance(data, dict):
            raise RunPodProtocolError(f"RunPod {op}: response is not a JSON object", runpod_job_id=job_id)
        return data

    # ------------------------------------------------------------ single requests

    async def submit(self, input: dict[str, Any], *, execution_timeout_ms: int | None = None) -> str:
        """POST /run. Returns the RunPod job id. ``execution_timeout_ms`` is sent as
        ``policy.executionTimeout`` so RunPod itself stops a runaway job (status TIMED_OUT)."""
        if not isinstance(input, dict):
            raise TypeError("input must be a dict")
        body: dict[str, Any] = {"input": input}
        if execution_timeout_ms is not None:
            if isinstance(execution_timeout_ms, bool) or not isinstance(execution_timeout_ms, int) or execution_timeout_ms < 1:
                raise ValueError("execution_timeout_ms must be a positive int")
            body["policy"] = {"executionTimeout": execution_timeout_ms}
        data = await self._request("POST", "run", ("run",), body=body)
        job_id = data.get("id")
        if not isinstance(job_id, str) or not job_id:
            raise RunPodProtocolError("RunPod run: response has no job id")
        log.debug("runpod job submitted id=%s endpoint=%s", job_id, self.endpoint_id)
        return job_id

    async def run(self, input: dict[str, Any], *, execution_timeout_ms: int | None = None) -> str:
        """Alias of ``submit``."""
        return await self.submit(input, execution_timeout_ms=execution_timeout_ms)

    async def status(self, job_id: str, *, timeout_s: float | None = None) -> RunPodStatus:
        """GET /status/{job_id}."""
        data = await self._request("GET", "status", ("status", job_id), timeout_s=timeout_s, job_id=job_id)
        raw = data.get("status")
        try:
            status = JobStatus(raw)
        except ValueError:
            raise RunPodProtocolError(
                f"RunPod status: unexpected status {str(raw)[:40]!r}", runpod_job_id=job_id
            ) from None
        error = data.get("error")
        if error is not None and not isinstance(error, str):
            error = json.dumps(error, default=str)
        rid = data.get("id")
        return RunPodStatus(
            id=rid if isinstance(rid, str) and rid else job_id,
            status=status,
            delay_ms=_ms(data.get("delayTime")),
            execution_ms=_ms(data.get("executionTime")),
            output=data.get("output"),
            error=self._scrub(error) if error is not None else None,
        )

    async def cancel(self, job_id: str) -> None:
        """POST /cancel/{job_id}. Cancelling a job that already ended is not an error."""
        await self._request("POST", "cancel", ("cancel", job_id), job_id=job_id)
        log.info("runpod job cancel requested id=%s", job_id)

    async def health(self) -> dict[str, Any]:
        """GET /health: ``{"jobs": {...}, "workers": {...}}`` as RunPod returns it."""
        return await self._request("GET", "health", ("health",))

    # ------------------------------------------------------------ waiting

    def _result(self, job_id: str, st: RunPodStatus) -> RunPodResult:
        try:
            text, input_tokens, output_tokens = parse_output(st.output)
        except RunPodMalformedOutput as exc:
            error = RunPodMalformedOutput(f"RunPod job {job_id}: {exc.reason}", runpod_job_id=job_id)
            error.execution_ms = st.execution_ms  # it ran, and is billed, all the same
            raise error from None
        return RunPodResult(
            runpod_job_id=job_id,
            text=text,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            execution_ms=st.execution_ms,
            delay_ms=st.delay_ms,
        )

    async def _cancel_quietly(self, job_id: str) -> bool:
        try:
            await self.cancel(job_id)
            return True
        except RunPodError as exc:
            log.warning("runpod cancel failed id=%s: %s", job_id, exc.reason)
            return False

    def _jittered(self, delay: float) -> float:
        return delay * (1.0 + self._rng.uniform(-_JITTER, _JITTER))

    async def wait(
        self,
        job_id: str,
        *,
        timeout_s: float,
        poll_initial_s: float = 0.25,
        poll_max_s: float = 2.0,
    ) -> RunPodResult:
        """Poll an existing job until it ends or ``timeout_s`` seconds pass.

        Polls at once, then after ``poll_initial_s`` doubling up to ``poll_max_s`` (±10% jitter).
        Transient errors are retried until the deadline. At the deadline the job is cancelled
        (best effort) and ``RunPodTimeout`` raised. Returns within about
        ``timeout_s + 1 s + request_timeout_s``. If this coroutine itself is cancelled, the
        RunPod job is left running so another process can resume with ``wait(job_id)``.
        """
        if timeout_s <= 0 or poll_initial_s <= 0 or poll_max_s < poll_initial_s:
            raise ValueError("need timeout_s > 0 and 0 < poll_initial_s <= poll_max_s")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        delay = poll_initial_s
        last_transient: RunPodTransientError | None = None
        while True:
            remaining = deadline - loop.time()
            poll_timeout = min(self.request_timeout_s, max(remaining, _MIN_POLL_TIMEOUT_S))
            try:
                st = await self.status(job_id, timeout_s=poll_timeout)
            except RunPodTransientError as exc:
                last_transient = exc
                log.warning("runpod status poll failed, will retry id=%s: %s", job_id, exc.reason)
            except RunPodProtocolError:
                await self._cancel_quietly(job_id)
                raise
            else:
                if st.status is JobStatus.COMPLETED:
                    return self._result(job_id, st)
                if st.status in FAILED_STATUSES:
                    detail = f": {st.error}" if st.error else ""
                    failed = RunPodJobFailed(
                        f"RunPod job {job_id} {st.status.value}{detail}",
                        runpod_job_id=job_id,
                        status=st.status.value,
                        error=st.error,
                    )
                    failed.execution_ms = st.execution_ms
                    raise failed
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await asyncio.sleep(min(self._jittered(delay), remaining))
            delay = min(delay * 2, poll_max_s)

        cancelled = await self._cancel_quietly(job_id)
        why = f" (last poll error: {last_transient.reason})" if last_transient else ""
        log.info("runpod job timed out id=%s after %.3gs cancelled=%s", job_id, timeout_s, cancelled)
        raise RunPodTimeout(
            f"RunPod job {job_id} did not finish within {timeout_s:g}s; "
            f"{'cancelled' if cancelled else 'cancel failed'}{why}",
            runpod_job_id=job_id,
            timeout_s=timeout_s,
            cancelled=cancelled,
        )

    async def run_and_wait(
        self,
        input: dict[str, Any],
        *,
        timeout_s: float,
        poll_initial_s: float = 0.25,
        poll_max_s: float = 2.0,
        execution_timeout_ms: int | None = None,
    ) -> RunPodResult:
        """Submit, then ``wait`` with whatever is left of ``timeout_s`` (seconds, whole call).

        Submission is retried within the deadline only when no job can have been created
        (connection refused, 429); other submit errors propagate without a job id.
        """
        if timeout_s <= 0 or poll_initial_s <= 0 or poll_max_s < poll_initial_s:
            raise ValueError("need timeout_s > 0 and 0 < poll_initial_s <= poll_max_s")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        delay = poll_initial_s
        while True:
            try:
                job_id = await self.submit(input, execution_timeout_ms=execution_timeout_ms)
                break
            except RunPodTransientError as exc:
                remaining = deadline - loop.time()
                if exc.job_may_exist or remaining <= 0:
                    raise
                log.warning("runpod submit failed before creating a job, will retry: %s", exc.reason)
                await asyncio.sleep(min(self._jittered(delay), remaining))
                delay = min(delay * 2, poll_max_s)
                if deadline - loop.time() <= 0:
                    raise
        remaining = max(deadline - loop.time(), 0.001)
        return await self.wait(job_id, timeout_s=remaining, poll_initial_s=poll_initial_s, poll_max_s=poll_max_s)
