"""LOCAL STAND-IN for RunPod serverless. This is NOT RunPod.

A small Starlette app that speaks the RunPod serverless HTTP protocol
(``/v2/{endpoint_id}/run|status/{id}|cancel/{id}|health``, Bearer API key) with in-memory jobs,
so the client, tests and demos run without a RunPod account or GPU. Jobs go
IN_QUEUE -> IN_PROGRESS -> COMPLETED over ``queue_s`` + ``processing_s`` seconds and answer with a
deterministic echo-style text built from the prompt, at most ``max_tokens`` words, one word per
token, usage counts consistent with those tokens.

Switches (set at creation, or at runtime with ``POST /_standin/mode`` and a JSON object, or
``StandinState.set_mode`` in-process); each job takes its fate from the mode at submission:
- ``slow``: jobs never finish (until cancelled); ``extra_delay_s`` adds seconds of processing.
- ``fail``: jobs end FAILED with ``fail_error``.
- ``malformed``: jobs COMPLETE with an output of an unexpected shape.
- ``flaky_5xx=N``: the next N ``/v2`` requests answer ``flaky_status`` (503) without side effects.
- ``shape``: ``"vllm"`` (worker-vllm list) or ``"text"`` (``{"text", "input_tokens", "output_tokens"}``).
``policy.executionTimeout`` (ms) in ``/run`` is honoured: longer jobs end TIMED_OUT.

Control endpoints (same Bearer key): ``GET|POST /_standin/mode``, ``POST /_standin/reset``,
``GET /_standin/stats``.

Run standalone: ``python -m app.runpod.standin --host 127.0.0.1 --port 8765 --api-key devkey``.
"""

from __future__ import annotations

import argparse
import hmac
import math
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

STANDIN_LABEL = "LOCAL STAND-IN for RunPod serverless (not RunPod)"
DEFAULT_MAX_TOKENS = 16


@dataclass
class StandinMode:
    queue_s: float = 0.0
    processing_s: float = 0.2
    extra_delay_s: float = 0.0
    slow: bool = False
    fail: bool = False
    fail_error: str = "stand-in: simulated worker failure"
    malformed: bool = False
    flaky_5xx: int = 0
    flaky_status: int = 503
    shape: str = "vllm"

    def validated(self) -> StandinMode:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "float":
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or not math.isfinite(value):
                    raise ValueError(f"{f.name} must be a non-negative number")
            elif f.type == "bool":
                if not isinstance(value, bool):
                    raise ValueError(f"{f.name} must be a boolean")
            elif f.type == "int":
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError(f"{f.name} must be a non-negative integer")
            elif not isinstance(value, str):
                raise ValueError(f"{f.name} must be a string")
        if self.shape not in ("vllm", "text"):
            raise ValueError("shape must be 'vllm' or 'text'")
        if not 500 <= self.flaky_status <= 599 and self.flaky_status != 429:
            raise ValueError("flaky_status must be 429 or 5xx")
        return self


@dataclass
class _Job:
    id: str
    endpoint_id: str
    created: float
    queue_s: float
    run_s: float  # math.inf when slow
    timeout_s: float | None  # policy.executionTimeout
    fail_error: str | None
    output: Any
    cancelled_at: float | None = None

    def view(self, now: float) -> dict[str, Any]:
        started = self.created + self.queue_s
        if self.timeout_s is not None and self.run_s > self.timeout_s:
            end, final = started + self.timeout_s, "TIMED_OUT"
        else:
            end, final = started + self.run_s, "FAILED" if self.fail_error else "COMPLETED"
        body: dict[str, Any] = {"id": self.id}
        if self.cancelled_at is not None and self.cancelled_at < end:
            body["status"] = "CANCELLED"
            if self.cancelled_at >= started:
                body["delayTime"] = round((started - self.created) * 1000)
                body["executionTime"] = round((self.cancelled_at - started) * 1000)
            return body
        if now < started:
            body["status"] = "IN_QUEUE"
            return body
        body["delayTime"] = round((started - self.created) * 1000)
        if now < end:
            body["status"] = "IN_PROGRESS"
            return body
        body["status"] = final
        body["executionTime"] = round((end - started) * 1000)
        if final == "COMPLETED":
            body["output"] = self.output
        elif final == "FAILED":
            body["error"] = self.fail_error
        elif final == "TIMED_OUT":
            body["error"] = "stand-in: job exceeded policy.executionTimeout"
        return body


def _answer(prompt: str, max_tokens: int) -> tuple[list[str], int]:
    words = ["Stand-in", "answer", "to:", *prompt.split()][:max_tokens]
    tokens = [w if i == 0 else f" {w}" for i, w in enumerate(words)]
    return tokens, len(prompt.split())


def _output(shape: str, malformed: bool, tokens: list[str], input_tokens: int) -> Any:
    if malformed:
        return {"generated": "".join(tokens), "note": "stand-in malformed output"}
    if shape == "text":
        return {"text": "".join(tokens), "input_tokens": input_tokens, "output_tokens": len(tokens)}
    return [{"choices": [{"tokens": tokens}], "usage": {"input": input_tokens, "output": len(tokens)}}]


@dataclass
class StandinStats:
    requests: int = 0
    flaky_served: int = 0
    submitted: int = 0
    cancel_requests: int = 0
    unauthorized: int = 0


class StandinState:
    """In-memory jobs and switches. Thread-safe: tests flip modes from another thread."""

    def __init__(self, mode: StandinMode) -> None:
        self._lock = threading.Lock()
        self._initial = replace(mode).validated()
        self.mode = replace(mode)
        self.jobs: dict[str, _Job] = {}
        self.stats = StandinStats()

    def set_mode(self, **changes: Any) -> StandinMode:
        names = {f.name for f in fields(StandinMode)}
        unknown = set(changes) - names
        if unknown:
            raise ValueError(f"unknown mode fields: {sorted(unknown)}")
        with self._lock:
            new = replace(self.mode, **changes).validated()
            self.mode = new
            return replace(new)

    def reset(self) -> None:
        with self._lock:
            self.mode = replace(self._initial)
            self.jobs.clear()
            self.stats = StandinStats()

    def take_flaky(self) -> int | None:
        with self._lock:
            self.stats.requests += 1
            if self.mode.flaky_5xx > 0:
                self.mode.flaky_5xx -= 1
                self.stats.flaky_served += 1
                return self.mode.flaky_status
            return None

    def submit(self, endpoint_id: str, job_input: dict[str, Any], timeout_ms: int | None) -> str:
        with self._lock:
            m = self.mode
            fail_error = m.fail_error if m.fail else None
            prompt = job_input.get("prompt")
            params = job_input.get("sampling_params") or {}
            max_tokens = params.get("max_tokens", DEFAULT_MAX_TOKENS) if isinstance(params, dict) else None
            output: Any = None
            if not isinstance(prompt, str):
                fail_error = "stand-in worker: input.prompt must be a string"
            elif isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
                fail_error = "stand-in worker: sampling_params.max_tokens must be a positive integer"
            else:
                tokens, n_in = _answer(prompt, max_tokens)
                output = _output(m.shape, m.malformed, tokens, n_in)
            job = _Job(
                id=f"{uuid.uuid4()}-standin",
                endpoint_id=endpoint_id,
                created=time.monotonic(),
                queue_s=m.queue_s,
                run_s=math.inf if m.slow else m.processing_s + m.extra_delay_s,
                timeout_s=timeout_ms / 1000 if timeout_ms is not None else None,
                fail_error=fail_error,
                output=output,
            )
            self.jobs[job.id] = job
            self.stats.submitted += 1
            return job.id

    def view(self, endpoint_id: str, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            job = self.jobs.get(job_id)
            if job is None or job.endpoint_id != endpoint_id:
                return None
            return job.view(time.monotonic())

    def cancel(self, endpoint_id: str, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            self.stats.cancel_requests += 1
            job = self.jobs.get(job_id)
            if job is None or job.endpoint_id != endpoint_id:
                return None
            now = time.monotonic()
            if job.view(now)["status"] in ("IN_QUEUE", "IN_PROGRESS"):
                job.cancelled_at = now
            return {"id": job.id, "status": job.view(now)["status"]}

    def health(self, endpoint_id: str) -> dict[str, Any]:
        with self._lock:
            now = time.monotonic()
            counts = {"IN_QUEUE": 0, "IN_PROGRESS": 0, "COMPLETED": 0, "FAILED": 0, "TIMED_OUT": 0, "CANCELLED": 0}
            for job in self.jobs.values():
                if job.endpoint_id == endpoint_id:
                    counts[job.view(now)["status"]] += 1
        return {
            "jobs": {
                "completed": counts["COMPLETED"],
                "failed": counts["FAILED"] + counts["TIMED_OUT"],
                "inProgress": counts["IN_PROGRESS"],
                "inQueue": counts["IN_QUEUE"],
                "retried": 0,
            },
            "workers": {"idle": 0 if counts["IN_PROGRESS"] else 1, "running": counts["IN_PROGRESS"]},
            "standin": STANDIN_LABEL,
        }


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_standin_app(api_key: str, **mode: Any) -> Starlette:
    """The stand-in app. ``mode`` takes any ``StandinMode`` field; state is ``app.state.standin``."""
    if not api_key:
        raise ValueError("api_key is empty")
    state = StandinState(StandinMode(**mode))
    expected = f"Bearer {api_key}".encode()

    def authorized(request: Request) -> bool:
        ok = hmac.compare_digest(request.headers.get("authorization", "").encode(), expected)
        if not ok:
            state.stats.unauthorized += 1
        return ok

    def gate(request: Request) -> JSONResponse | None:
        flaky = state.take_flaky()
        if flaky is not None:
            return _error(flaky, f"stand-in: simulated HTTP {flaky}")
        if not authorized(request):
            return _error(401, "Unauthorized")
        return None

    async def run(request: Request) -> JSONResponse:
        if (denied := gate(request)) is not None:
            return denied
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "body must be JSON")
        if not isinstance(body, dict) or not isinstance(body.get("input"), dict):
            return _error(400, "body must be an object with an 'input' object")
        policy = body.get("policy") or {}
        timeout_ms = policy.get("executionTimeout") if isinstance(policy, dict) else None
        if timeout_ms is not None and (isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int) or timeout_ms < 1):
            return _error(400, "policy.executionTimeout must be a positive integer (ms)")
        job_id = state.submit(request.path_params["endpoint_id"], body["input"], timeout_ms)
        return JSONResponse({"id": job_id, "status": "IN_QUEUE"})

    async def status(request: Request) -> JSONResponse:
        if (denied := gate(request)) is not None:
            return denied
        view = state.view(request.path_params["endpoint_id"], request.path_params["job_id"])
        return JSONResponse(view) if view is not None else _error(404, "request does not exist")

    async def cancel(request: Request) -> JSONResponse:
        if (denied := gate(request)) is not None:
            return denied
        view = state.cancel(request.path_params["endpoint_id"], request.path_params["job_id"])
        return JSONResponse(view) if view is not None else _error(404, "request does not exist")

    async def health(request: Request) -> JSONResponse:
        if (denied := gate(request)) is not None:
            return denied
        return JSONResponse(state.health(request.path_params["endpoint_id"]))

    async def control_mode(request: Request) -> JSONResponse:
        if not authorized(request):
            return _error(401, "Unauthorized")
        if request.method == "POST":
            try:
                changes = await request.json()
                if not isinstance(changes, dict):
                    raise ValueError("body must be a JSON object")
                state.set_mode(**changes)
            except (ValueError, TypeError) as exc:
                return _error(400, str(exc))
        return JSONResponse({"standin": STANDIN_LABEL, "mode": asdict(state.mode)})

    async def control_reset(request: Request) -> JSONResponse:
        if not authorized(request):
            return _error(401, "Unauthorized")
        state.reset()
        return JSONResponse({"standin": STANDIN_LABEL, "mode": asdict(state.mode)})

    async def control_stats(request: Request) -> JSONResponse:
        if not authorized(request):
            return _error(401, "Unauthorized")
        return JSONResponse({"standin": STANDIN_LABEL, "stats": asdict(state.stats), "jobs": len(state.jobs)})

    app = Starlette(
        routes=[
            Route("/v2/{endpoint_id}/run", run, methods=["POST"]),
            Route("/v2/{endpoint_id}/status/{job_id}", status, methods=["GET"]),
            Route("/v2/{endpoint_id}/cancel/{job_id}", cancel, methods=["POST"]),
            Route("/v2/{endpoint_id}/health", health, methods=["GET"]),
            Route("/_standin/mode", control_mode, methods=["GET", "POST"]),
            Route("/_standin/reset", control_reset, methods=["POST"]),
            Route("/_standin/stats", control_stats, methods=["GET"]),
        ]
    )
    app.state.standin = state
    return app


@dataclass
class StandinServer:
    """Runs the stand-in with uvicorn in a daemon thread on ``host`` (port 0 = a free port).

    ``with StandinServer("key") as srv: srv.base_url, srv.set_mode(fail=True)``
    The stand-in accepts any endpoint id; ``endpoint_id`` is a suggested one for clients.
    """

    api_key: str
    host: str = "127.0.0.1"
    port: int = 0
    mode: dict[str, Any] = field(default_factory=dict)
    endpoint_id: str = "standin-endpoint"

    def __post_init__(self) -> None:
        import uvicorn

        self.app = create_standin_app(self.api_key, **self.mode)
        self.state: StandinState = self.app.state.standin
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((self.host, self.port))
        self.port = self._sock.getsockname()[1]
        config = uvicorn.Config(self.app, lifespan="off", log_level="warning", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, name="runpod-standin", daemon=True
        )

    def set_mode(self, **changes: Any) -> StandinMode:
        return self.state.set_mode(**changes)

    def reset(self) -> None:
        self.state.reset()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 10.0) -> StandinServer:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("stand-in server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> StandinServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=f"{STANDIN_LABEL}.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--queue-s", type=float, default=0.0)
    parser.add_argument("--processing-s", type=float, default=0.5)
    parser.add_argument("--shape", choices=["vllm", "text"], default="vllm")
    parser.add_argument("--slow", action="store_true")
    parser.add_argument("--fail", action="store_true")
    parser.add_argument("--malformed", action="store_true")
    parser.add_argument("--flaky-5xx", type=int, default=0)
    args = parser.parse_args(argv)
    app = create_standin_app(
        args.api_key,
        queue_s=args.queue_s,
        processing_s=args.processing_s,
        shape=args.shape,
        slow=args.slow,
        fail=args.fail,
        malformed=args.malformed,
        flaky_5xx=args.flaky_5xx,
    )
    print(f"{STANDIN_LABEL} on http://{args.host}:{args.port}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
