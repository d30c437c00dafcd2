"""HTTP plumbing shared by every domain: declared endpoints, JSON in and out, errors.

An endpoint declares its body, query and responses once; the same declaration validates requests
and produces the OpenAPI document, so the docs cannot drift from what the server does.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from app import observability
from app.errors import AppError, BadRequest, PayloadTooLarge, ValidationFailed

Handler = Callable[..., Awaitable[Any]]
Guard = Callable[[Request], Awaitable[Any]]  # authenticates; returns the principal or raises
_PATH_PARAM = re.compile(r"{([a-zA-Z_][a-zA-Z0-9_]*)(?::[a-z]+)?}")


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def json_response(content: BaseModel | dict[str, Any] | list[Any], status: int = 200,
                  headers: dict[str, str] | None = None) -> JSONResponse:
    if isinstance(content, BaseModel):
        content = content.model_dump(mode="json")
    return JSONResponse(content, status_code=status, headers=headers)


def error_response(err: AppError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


def describe_validation_error(exc: ValidationError) -> tuple[str, list[dict[str, str]]]:
    fields = []
    for e in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(p) for p in e["loc"]) or "body"
        fields.append({"field": loc, "message": e["msg"]})
    detail = "; ".join(f"{f['field']}: {f['message']}" for f in fields[:5])
    return detail, fields


def validate(model: type[BaseModel], data: Any) -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        detail, fields = describe_validation_error(exc)
        raise ValidationFailed(detail, extra={"fields": fields}) from None


async def read_json(request: Request, limit: int) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest("Content-Length is not a number", code="bad_content_length")
        if int(declared) > limit:
            raise PayloadTooLarge(f"request body exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body exceeds {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise BadRequest("the client went away before sending the whole body",
                         code="client_disconnected") from None
    raw = b"".join(chunks)
    if not raw.strip():
        raise BadRequest("a JSON object body is required", code="body_required")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("request body is not valid JSON", code="invalid_json") from None
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object", code="invalid_json")
    return data


@dataclass
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    responses: dict[int, type[BaseModel] | None] = field(default_factory=dict)
    # Other media types a status may come in, as OpenAPI content entries (JSON is the default):
    # {200: {"text/plain": {"schema": {"type": "string"}}}}
    content: dict[int, dict[str, Any]] = field(default_factory=dict)
    errors: tuple[int, ...] = ()
    auth: tuple[str, ...] = ()  # security scheme names; empty means public
    optional_auth: bool = False  # documented as also callable without credentials
    guard: Guard | None = None  # runs before the body is read; its result is passed as `who`
    limit: Guard | None = None  # a rate limit for callers without credentials; runs first
    safe: bool = True  # no side effects, so HEAD may run it (a long-poll that leases is not)
    error_body: type[BaseModel] | None = None  # errors' shape, if not {"error", "detail"}
    headers: tuple[dict[str, Any], ...] = ()  # request headers it reads, as OpenAPI parameters
    description: str = ""

    @property
    def path_params(self) -> list[str]:
        return _PATH_PARAM.findall(self.path)

    async def __call__(self, request: Request) -> Response:
        for name, value in request.path_params.items():
            if isinstance(value, str) and "\x00" in value:
                raise ValidationFailed(f"{name}: NUL characters are not allowed")
        observability.set_fields(job_id=request.path_params.get("job_id"))  # for the log lines
        kwargs: dict[str, Any] = {}
        if self.limit is not None:
            await self.limit(request)
        if self.guard is not None:  # before the body: strangers get 401, not a parsed 256 KiB
            kwargs["who"] = await self.guard(request)
        if self.query is not None:
            kwargs["query"] = validate(self.query, dict(request.query_params))
        if self.body is not None:
            limit = request.app.state.ctx.settings.max_body_bytes
            kwargs["body"] = validate(self.body, await read_json(request, limit))
        result = await self.handler(request, **kwargs)
        if isinstance(result, Response):
            return result
        status = next(iter(self.responses), 200)
        return json_response(result, status)


class Router:
    """Collects the endpoints of one domain (one OpenAPI tag)."""

    def __init__(self, tag: str):
        self.tag = tag
        self.endpoints: list[Endpoint] = []

    def _add(self, method: str, path: str, **spec: Any) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            summary = spec.pop("summary", None) or (inspect.getdoc(fn) or fn.__name__).split("\n")[0]
            description = inspect.getdoc(fn) or ""
            self.endpoints.append(Endpoint(method, path, fn, summary=summary, tag=self.tag,
                                           description=description, **spec))
            return fn
        return register

    def get(self, path: str, **spec: Any) -> Callable[[Handler], Handler]:
        return self._add("GET", path, **spec)

    def post(self, path: str, **spec: Any) -> Callable[[Handler], Handler]:
        return self._add("POST", path, **spec)

    def delete(self, path: str, **spec: Any) -> Callable[[Handler], Handler]:
        return self._add("DELETE", path, **spec)

    def patch(self, path: str, **spec: Any) -> Callable[[Handler], Handler]:
        return self._add("PATCH", path, **spec)


def build_routes(routers: list[Router]) -> list[Route]:
    """One Starlette Route per path, dispatching on method (so 405 is answered for the others)."""
    by_path: dict[str, dict[str, Endpoint]] = {}
    for router in routers:
        for ep in router.endpoints:
            if ep.method in by_path.setdefault(ep.path, {}):
                raise ValueError(f"duplicate endpoint {ep.method} {ep.path}")
            by_path[ep.path][ep.method] = ep
    routes = []
    for path, methods in by_path.items():
        routes.append(Route(path, _dispatcher(methods), methods=list(methods)))
    return routes


def _dispatcher(methods: dict[str, Endpoint]) -> Callable[[Request], Awaitable[Response]]:
    async def dispatch(request: Request) -> Response:
        if request.method == "HEAD":
            endpoint = methods["GET"]
            if not endpoint.safe:
                raise AppError("HEAD is not allowed here: GET has side effects",
                               code="method_not_allowed", status=405,
                               headers={"Allow": ", ".join(sorted(methods))})
            return await endpoint(request)
        return await methods[request.method](request)
    return dispatch


def all_endpoints(routers: list[Router]) -> list[Endpoint]:
    return [ep for r in routers for ep in r.endpoints]
