"""The ASGI application: /graphql (HTTP, GraphiQL, graphql-transport-ws), /healthz, /readyz
and /metrics.

The lifespan builds the engine, session factory, event bus and Temporal client once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL

from app.api.context import Context
from app.api.deps import Deps
from app.api.schema import build_schema
from app.db import make_engine, make_sessionmaker
from app.errors import DomainError, RateLimited
from app.events.bus import EventBus
from app.metrics import GRAPHQL_REQUESTS, RATE_LIMITED
from app.ratelimit import RateLimiter
from app.settings import Settings
from app.temporal import connect
from app.tenants.service import TenantService

log = structlog.get_logger(__name__)


class GraphQLApp(GraphQL[Context, None]):
    """Strawberry's ASGI view with our context and API-key authentication."""

    def __init__(self, deps_ref: dict[str, Deps], settings: Settings) -> None:
        super().__init__(
            build_schema(settings),
            graphql_ide="graphiql" if settings.graphiql else None,
            subscription_protocols=[GRAPHQL_TRANSPORT_WS_PROTOCOL],
            allowed_origins=settings.ws_allowed_origins,
        )
        self._deps = deps_ref

    async def get_context(self, request: Request | WebSocket, response: Any = None) -> Context:
        deps = self._deps["deps"]
        ctx = Context(deps=deps, request=request, response=response)
        if isinstance(request, Request):
            GRAPHQL_REQUESTS.labels(request.method).inc()
            header = request.headers.get("authorization")
            if header is not None:
                await self._authenticate(ctx, header)
                await self._limit(ctx)
        return ctx

    @staticmethod
    async def _limit(ctx: Context) -> None:
        if ctx.principal_ is None:
            return
        try:
            await ctx.deps.limiter.check(f"tenant:{ctx.principal_.tenant_id}")
        except RateLimited as exc:
            RATE_LIMITED.inc()
            ctx.principal_, ctx.auth_error = None, exc
            if ctx.response is not None:
                ctx.response.status_code = 429
                ctx.response.headers["Retry-After"] = str(exc.retry_after)

    async def on_ws_connect(self, context: Context) -> Any:
        params = context.connection_params or {}
        header = params.get("authorization") or params.get("Authorization")
        if not isinstance(header, str):
            raise ConnectionRejectionError(
                {"message": "missing API key in connection_init payload"}
            )
        await self._authenticate(context, header)
        await self._limit(context)
        if context.principal_ is None:
            message = context.auth_error.message if context.auth_error else "invalid API key"
            raise ConnectionRejectionError({"message": message})
        return None

    @staticmethod
    async def _authenticate(ctx: Context, header: str) -> None:
        try:
            async with ctx.deps.sessions() as session:
                ctx.principal_ = await TenantService(session).authenticate(header)
                await session.commit()
        except DomainError as exc:
            ctx.auth_error = exc


class BodySizeLimit:
    """Refuse request bodies over the limit before they are read into memory (413)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await JSONResponse(
                {"errors": [{"message": f"request body over {self.max_bytes} bytes"}]},
                status_code=413,
            )(scope, receive, send)
            return
        seen = 0

        async def limited() -> Any:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise ValueError("request body too large")
            return message

        await self.app(scope, limited, send)


def create_app(settings: Settings | None = None) -> Starlette:
    settings = (settings or Settings()).require()
    holder: dict[str, Deps] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        assert settings.database_url and settings.redis_url and settings.temporal_address
        engine = make_engine(settings.database_url)
        bus = EventBus(settings.redis_url)
        await bus.start()
        temporal = await connect(settings.temporal_address, settings.temporal_namespace)
        redis = aioredis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=2)
        limiter = RateLimiter(redis, settings.rate_limit_per_minute)
        holder["deps"] = Deps(
            settings, engine, make_sessionmaker(engine), bus, temporal, limiter, redis
        )
        log.info("api.started")
        try:
            yield
        finally:
            await bus.close()
            await redis.aclose()
            await engine.dispose()
            log.info("api.stopped")

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        deps = holder["deps"]
        checks = await asyncio.gather(_check_db(deps), deps.bus.ping(), _check_temporal(deps))
        status = dict(zip(("postgres", "redis", "temporal"), checks, strict=True))
        ok = all(checks)
        return JSONResponse(
            {"status": "ok" if ok else "unavailable", "checks": status},
            status_code=200 if ok else 503,
        )

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    gql = GraphQLApp(holder, settings)
    return Starlette(
        routes=[
            Route("/graphql", gql),
            WebSocketRoute("/graphql", gql),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
        ],
        middleware=[Middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)],
        lifespan=lifespan,
    )


async def _check_db(deps: Deps) -> bool:
    try:
        async with asyncio.timeout(3), deps.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


async def _check_temporal(deps: Deps) -> bool:
    try:
        async with asyncio.timeout(3):
            return await deps.temporal.service_client.check_health()
    except Exception:
        return False
