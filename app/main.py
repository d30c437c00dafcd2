"""create_app(settings) -> Starlette. The lifespan opens and closes every resource."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator
from typing import Any, cast

import asyncpg
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from app import __version__, gcsettle, tokens, trust
from app.accounts.operator_routes import router as businesses_router
from app.accounts.routes import router as account_router
from app.accounts.deposit_routes import router as deposit_router
from app.accounts.data_routes import router as data_router
from app.auth import cache as auth_cache
from app.accounts.apikey_routes import router as apikey_router
from app.auth.routes import router as auth_router
from app.chat.routes import router as chat_router
from app.config import Settings
from app.context import open_context
from app.db import DatabaseRefused, PoolBusy, outage
from app.errors import AppError, queue_unavailable
from app.idle.routes import router as idle_router
from app.miners.routes import router as miners_router
from app.openapi import build_openapi, doc_routes
from app import observability
from app.ops import maintenance
from app.ops.routes import router as ops_router
from app.transparency.routes import asset_routes
from app.transparency.routes import router as transparency_router
from app.treasury.routes import router as treasury_router
from app.trust.routes import router as trust_router
from app.openai_api import errors as openai_errors
from app.openai_api.routes import router as openai_router
from app.web import all_endpoints, build_routes, error_response

log = logging.getLogger("app")
ROUTERS = [ops_router, chat_router, auth_router, miners_router, idle_router, treasury_router,
           apikey_router, transparency_router, openai_router, trust_router, businesses_router,
           account_router, deposit_router, data_router]


@functools.cache
def openapi_schema() -> dict[str, Any]:
    """The OpenAPI document, built once per process: it depends only on ROUTERS (fixed at import)
    and the version, and building it (pydantic's JSON schemas of every model) cost more than the
    rest of create_app together, paid again by each app a test suite starts. Read-only."""
    return build_openapi(all_endpoints(ROUTERS), title="MIA backend", version=__version__)


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        observability.configure(settings)
        async with open_context(settings) as ctx:  # closes everything, even after a failed start
            ctx.notifier.on(auth_cache.channel(settings.redis_prefix), ctx.auth_cache.clear)
            # a wallet sent back to probation stops leasing business jobs in every process now
            ctx.notifier.on(trust.standing_channel(settings.redis_prefix), trust.forget_standings)
            app.state.ctx = ctx
            await ctx.notifier.start()
            tokens.warm(settings.tokenizer)  # the first result need not wait for the tokenizer
            if settings.gc_freeze:
                gcsettle.settle()  # after everything start-up makes: app/gcsettle.py
            task = None
            if settings.run_maintenance_in_api:
                task = asyncio.create_task(maintenance.run_forever(ctx), name="mia-maintenance")
            try:
                yield
            finally:
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    # The client IP is the right-most X-Forwarded-For entry that is not a trusted proxy (never
    # the left-most, which the caller writes); an untrusted peer's header is ignored.
    middleware = [Middleware(ProxyHeadersMiddleware, trusted_hosts=settings.forwarded_allow_ips)]
    middleware.insert(0, observability.middleware(settings))  # outermost: times all the rest
    if settings.cors_origins:  # "*" never comes with credentials (refused in Settings)
        middleware.append(Middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                                     allow_methods=["GET", "POST", "DELETE"],
                                     allow_headers=["Authorization", "Content-Type"],
                                     allow_credentials=settings.cors_allow_credentials,
                                     expose_headers=["Retry-After"], max_age=600))
    routes = [*build_routes(ROUTERS), *doc_routes(openapi_schema()), *asset_routes()]
    return Starlette(routes=routes, lifespan=lifespan, middleware=middleware,
                     exception_handlers=EXCEPTION_HANDLERS)


def _render(request: Request, err: AppError) -> Response:
    """Our {"error", "detail"} everywhere, OpenAI's shape under /v1/."""
    observability.tag_error(request, err)  # its request id, in the body and the header
    if openai_errors.applies(request.url.path):
        return openai_errors.response(err)
    return error_response(err)


async def _app_error(request: Request, exc: Exception) -> Response:
    return _render(request, cast(AppError, exc))  # registered for AppError only


async def _http_error(request: Request, exc: Exception) -> Response:
    exc = cast(HTTPException, exc)  # registered for HTTPException only
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    err = AppError(str(exc.detail), code=code, status=exc.status_code)
    if exc.headers:
        err.headers = dict(exc.headers)
    return _render(request, err)


async def _redis_down(request: Request, exc: Exception) -> Response:
    log.warning("Redis unavailable: %s", type(exc).__name__)
    return _render(request, queue_unavailable())


async def _dependency_down(request: Request, exc: Exception) -> Response:
    # A database (or other dependency) that hangs or refuses, as a 503 with Retry-After rather
    # than a 500 or a hung request (app.db.outage says which errors those are). Other database
    # errors are bugs: they stay logged 500s. A 503 keeps the client's keep-alive connection (a
    # 500 re-raised to the server closes it).
    err = outage(exc)
    if err is None:
        raise exc
    log.warning("%s: %s", err.code, type(exc).__name__)
    return _render(request, err)


async def _unexpected(request: Request, exc: Exception) -> Response:
    # No logging here: Starlette re-raises after this response and the server logs it once.
    return _render(request, AppError("internal error; it has been logged", code="internal_error",
                                   status=500))


EXCEPTION_HANDLERS = {AppError: _app_error, HTTPException: _http_error, RedisError: _redis_down,
                      PoolTimeout: _dependency_down, DBAPIError: _dependency_down,
                      PoolBusy: _dependency_down, DatabaseRefused: _dependency_down,
                      # the hot path's own driver (app/db.py Database.fast)
                      asyncpg.PostgresError: _dependency_down,
                      asyncpg.InterfaceError: _dependency_down,
                      asyncpg.InternalClientError: _dependency_down,
                      asyncpg.QueryCanceledError: _dependency_down,
                      TimeoutError: _dependency_down, ConnectionError: _dependency_down,
                      Exception: _unexpected}
