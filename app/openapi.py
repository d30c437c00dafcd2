"""The OpenAPI 3.1 document, generated from the declared endpoints, and the offline doc pages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from app.errors import NotFound
from app.web import Endpoint, json_response

STATIC = Path(__file__).parent / "static"
ASSETS = {  # file name -> location inside the npm packages installed in app/static/node_modules
    "swagger-ui.css": "swagger-ui-dist/swagger-ui.css",
    "swagger-ui-bundle.js": "swagger-ui-dist/swagger-ui-bundle.js",
    "redoc.standalone.js": "redoc/bundles/redoc.standalone.js",
}
REASONS = {200: "OK", 201: "Created", 202: "Accepted", 204: "No content", 400: "Bad request",
           401: "Unauthorized", 403: "Forbidden", 404: "Not found", 405: "Method not allowed",
           409: "Conflict", 413: "Payload too large", 422: "Validation error",
           429: "Too many requests", 502: "Bad gateway", 503: "Service unavailable",
           504: "Gateway timeout"}
RETRY_AFTER = {
    429: {"description": "whole seconds until the limit lets a request through again (>= 1)",
          "schema": {"type": "integer", "minimum": 1}},
    503: {"description": "whole seconds after which a retry may succeed (when known)",
          "schema": {"type": "integer", "minimum": 1}},
}
SECURITY_SCHEMES = {
    "ApiKey": {"type": "http", "scheme": "bearer",
               "description": "A business API key (`mia apikey create`)."},
    "MinerToken": {"type": "http", "scheme": "bearer",
                   "description": "A session token from an EIP-4361 sign-in (`POST /auth/login`)."},
}


class ErrorBody(BaseModel):
    error: str = Field(description="machine-readable code")
    detail: str = Field(description="what went wrong, in words")


def build_openapi(endpoints: list[Endpoint], *, title: str, version: str) -> dict[str, Any]:
    models: set[type[BaseModel]] = {ErrorBody}
    for ep in endpoints:
        for m in (ep.body, *ep.responses.values(), ep.error_body):
            if m is not None:
                models.add(m)
    ordered = sorted(models, key=lambda m: m.__name__)
    _, top = models_json_schema([(m, "serialization") for m in ordered],
                                ref_template="#/components/schemas/{model}")
    schemas = top.get("$defs", {})

    def ref(m: type[BaseModel]) -> dict[str, str]:
        return {"$ref": f"#/components/schemas/{m.__name__}"}

    paths: dict[str, dict[str, Any]] = {}
    for ep in endpoints:
        op: dict[str, Any] = {"tags": [ep.tag], "summary": ep.summary,
                              "operationId": f"{ep.method.lower()}_{ep.handler.__name__}"}
        if ep.description and ep.description != ep.summary:
            op["description"] = ep.description
        params = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                  for p in ep.path_params]
        if ep.query is not None:
            qschema = ep.query.model_json_schema()
            for name, prop in qschema.get("properties", {}).items():
                params.append({"name": name, "in": "query",
                               "required": name in qschema.get("required", []), "schema": prop})
        params += list(ep.headers)
        if params:
            op["parameters"] = params
        if ep.body is not None:
            op["requestBody"] = {"required": True,
                                 "content": {"application/json": {"schema": ref(ep.body)}}}
        responses: dict[str, Any] = {}
        for status, model in ep.responses.items():
            entry: dict[str, Any] = {"description": REASONS.get(status, str(status))}
            if model is not None:
                entry["content"] = {"application/json": {"schema": ref(model)}}
            if status in ep.content:
                entry.setdefault("content", {}).update(ep.content[status])
            responses[str(status)] = entry
        errors = set(ep.errors) | {503}  # every endpoint needs the database or Redis
        if ep.body is not None or ep.query is not None:
            errors |= {400, 422} if ep.body is not None else {422}
        if ep.body is not None:
            errors.add(413)
        if ep.auth:
            errors.add(401)
        if ep.auth or ep.limit is not None:  # every credential is rate-limited (app/ratelimit.py)
            errors.add(429)
        for status in sorted(errors):
            responses[str(status)] = {"description": REASONS.get(status, str(status)),
                                      "content": {"application/json": {
                                          "schema": ref(ep.error_body or ErrorBody)}}}
            if status in RETRY_AFTER:
                responses[str(status)]["headers"] = {"Retry-After": RETRY_AFTER[status]}
        op["responses"] = responses
        if ep.auth:
            op["security"] = [{name: []} for name in ep.auth] + ([{}] if ep.optional_auth else [])
        if not ep.safe:
            op["description"] = (op.get("description", "") + "\n\nHEAD is refused (405): GET has "
                                 "side effects here.").strip()
        paths.setdefault(_openapi_path(ep.path), {})[ep.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version,
                 "description": "Coordinator of the MIA decentralized customer-support AI network."
                                "\n\nFor people: the [transparency page](/transparency) shows "
                                "revenue turning into burned $SERV, each burn verifiable on chain."},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": SECURITY_SCHEMES},
    }


def _openapi_path(path: str) -> str:
    return path.replace(":path}", "}")


SWAGGER_HTML = """<!doctype html><html><head><meta charset="utf-8"><title>MIA API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head><body><div id="ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui"});</script></body></html>"""
REDOC_HTML = """<!doctype html><html><head><meta charset="utf-8"><title>MIA API</title></head>
<body><redoc spec-url="/openapi.json"></redoc>
<script src="/docs/assets/redoc.standalone.js"></script></body></html>"""


def doc_routes(schema: dict[str, Any]) -> list[BaseRoute]:
    async def openapi(_: Request) -> Response:
        return json_response(schema)

    async def swagger(_: Request) -> Response:
        return HTMLResponse(SWAGGER_HTML)

    async def redoc(_: Request) -> Response:
        return HTMLResponse(REDOC_HTML)

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ASSETS:
            raise NotFound(f"no documentation asset named {name!r}")
        path = STATIC / "node_modules" / ASSETS[name]
        if not path.is_file():
            raise NotFound("documentation assets are not installed: run `make install`",
                           code="docs_not_installed")
        return FileResponse(path, headers={"Cache-Control": "public, max-age=86400"})

    return [Route("/openapi.json", openapi, include_in_schema=False),
            Route("/docs", swagger, include_in_schema=False),
            Route("/redoc", redoc, include_in_schema=False),
            Route("/docs/assets/{name}", asset, include_in_schema=False)]
