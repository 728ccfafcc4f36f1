"""The ASGI application: /graphql (HTTP, GraphiQL, graphql-transport-ws), /healthz, /readyz
and /metrics.

The lifespan builds the engine, session factory, event bus and Temporal client once. The edge
rules for hostile callers live here and in Context.admit / schema.OperationBudget: body and
socket message size, the socket Origin rule, re-checking an open socket's key, and how many
sockets a tenant holds open (WS_MAX_SOCKETS_PER_TENANT, across replicas: over it, the
connection_init is answered by closing the socket with 4429) and how many operations run at
once on one socket (WS_MAX_OPERATIONS_PER_SOCKET: one more is answered with an `error`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime, timedelta
from functools import partial
from json import JSONDecodeError
from typing import Any, cast

import structlog
from cross_web import AsyncHTTPRequestAdapter, HTTPException
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from strawberry import UNSET
from strawberry.asgi import ASGIWebSocketAdapter, GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.http.async_base_view import AsyncBaseHTTPView
from strawberry.http.exceptions import NonJsonMessageReceived, NonTextMessageReceived
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ConnectionInitMessage,
    SubscribeMessage,
)
from strawberry.types import ExecutionResult, SubscriptionExecutionResult

from app import tracing
from app.ai.model_check import detail as model_check_detail
from app.ai.model_check import read_check
from app.api.context import Context
from app.api.cors import cors_middleware, socket_origins
from app.api.deps import Deps
from app.api.errors import to_graphql_error
from app.api.files import BoundedFormAdapter, download_endpoint
from app.api.graphiql.page import GraphiQLSite
from app.api.negotiation import (
    APPLICATION_JSON,
    GRAPHQL_RESPONSE_JSON,
    negotiate,
    request_error_status,
)
from app.api.observe import RequestIds
from app.api.schema import build_schema
from app.db import make_engine, make_sessionmaker
from app.errors import (
    DomainError,
    Forbidden,
    QuotaExceeded,
    RateLimited,
    Unauthenticated,
    Unavailable,
    ValidationFailed,
)
from app.events.bus import EventBus
from app.files.service import require_writer
from app.log_context import security_event
from app.metrics import GRAPHQL_REQUESTS, WS_CLOSED, WS_OPERATIONS
from app.plugins.registry import activate as activate_plugins
from app.ratelimit import RateLimiter
from app.redis_conn import blocking_redis_client
from app.settings import Settings
from app.temporal import connect
from app.tenants.service import KEY_EXPIRED, NO_TENANT, TENANT_SUSPENDED
from app.tenants.tokens import TokenExpired, TokenVerifier

log = structlog.get_logger(__name__)

CONNECTION_INIT_WAIT = timedelta(seconds=10)
CLOSE_REASONS = (KEY_EXPIRED, TENANT_SUSPENDED)  # a 4403 close says these as they are
TOO_MANY_SOCKETS = 4429  # graphql-transport-ws's "too many" code, closing a refused connect
# graphql-transport-ws's Unauthorized: graphql-ws clients do not retry it by themselves (they
# do retry 4403); the app fetches a fresh token and subscribes again (docs/security.md).
TOKEN_EXPIRED = 4401
# Headers a browser sends only after a CORS preflight, so never from another site's plain form.
CONTEXT_SCOPE_KEY = "wfs.context"
UPLOAD_SCOPE_KEY = "wfs.upload"  # set while the request holds one of MAX_UPLOADS_IN_FLIGHT
UPLOAD_RETRY_AFTER = 1
MULTIPART_NEEDS = "a multipart request needs an Authorization header (or Apollo-Require-Preflight)"
PREFLIGHTED_HEADERS = ("authorization", "apollo-require-preflight", "x-apollo-operation-name")


class SocketsExhausted(Exception):
    """The tenant already holds its most open sockets (raised by on_ws_connect)."""


class LimitedWebSocketAdapter(ASGIWebSocketAdapter):
    """Strawberry's socket adapter with a size limit: a text message over `max_bytes` (the
    same MAX_REQUEST_BYTES as an HTTP body) closes the socket with 4413 before it is decoded."""

    def __init__(
        self, view: AsyncBaseHTTPView, request: WebSocket, response: WebSocket, max_bytes: int
    ) -> None:
        super().__init__(view, request, response)
        self.max_bytes = max_bytes

    async def iter_json(
        self, *, ignore_parsing_errors: bool = False
    ) -> AsyncGenerator[object, None]:
        try:
            while self.ws.application_state != WebSocketState.DISCONNECTED:
                text = await self.ws.receive_text()
                if len(text) > self.max_bytes or len(text.encode()) > self.max_bytes:
                    WS_CLOSED.labels("oversize").inc()
                    client = self.ws.client
                    security_event(
                        "socket_message_too_large",
                        f"over {self.max_bytes} bytes",
                        address=client.host if client else None,
                    )
                    await self.close(4413, f"message over {self.max_bytes} bytes")
                    return
                try:
                    message = self.view.decode_json(text)
                except JSONDecodeError as exc:
                    if not ignore_parsing_errors:
                        raise NonJsonMessageReceived from exc
                    continue
                yield message
        except KeyError as exc:  # a binary frame
            raise NonTextMessageReceived from exc
        except WebSocketDisconnect:
            pass


class GuardedTransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws with the edge rules that outlive the connect: a tenant over its
    open sockets is refused with 4429; each `subscribe` is refused past the socket's
    operations at once, then admitted against the caller's rate limit before it runs (the
    schema's depth, alias and token limits then apply as on HTTP); once acknowledged the socket
    re-checks its key every KEY_RECHECK_SECONDS (renewing its place among the tenant's
    sockets) and closes with 4403 when the key is revoked or gone."""

    key_watch: asyncio.Task[None] | None = None

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        try:
            await super().handle_connection_init(message)
        except SocketsExhausted as refused:
            WS_CLOSED.labels("sockets").inc()  # logged by Context.claim_socket
            await self.websocket.close(TOO_MANY_SOCKETS, str(refused))
            return
        if self.connection_acknowledged and self.key_watch is None:
            self.key_watch = asyncio.create_task(self._watch_key())
            self.key_watch.add_done_callback(self._task_done)

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        """Admit each operation here, in the socket's message loop, before it becomes a task:
        a flood waits on its own admissions (one at a time per socket) and a refused operation
        costs one Redis round trip and one `error` message, nothing more."""
        WS_OPERATIONS.inc()
        if self.connection_acknowledged and message["id"] not in self.operations:
            cap = self.max_subscriptions_per_connection
            if cap is not None and len(self.operations) >= cap:  # before it spends the budget
                await self._refuse(
                    message["id"],
                    f"at most {cap} operations run at once on one socket; "
                    "complete one or open another socket",
                )
                return
            refusal = await self.context.admit()
            if refusal is not None:
                error = to_graphql_error(refusal).formatted
                await self.send_message({"id": message["id"], "type": "error", "payload": [error]})
                return
        await super().handle_subscribe(message)

    async def _refuse(self, operation_id: str, reason: str) -> None:
        error = to_graphql_error(QuotaExceeded(reason)).formatted
        await self.send_message({"id": operation_id, "type": "error", "payload": [error]})

    async def shutdown(self) -> None:
        if self.key_watch is not None:
            self.key_watch.cancel()
            with suppress(asyncio.CancelledError):
                await self.key_watch
        try:
            await super().shutdown()
        finally:  # however the socket ended; a replica that dies lets the lease run out
            await self.context.release_socket()

    async def _watch_key(self) -> None:
        """Re-check the key every KEY_RECHECK_SECONDS; a token's socket also closes when the
        token runs out (its `exp` plus AUTH_LEEWAY_SECONDS), between re-checks if need be."""
        interval = self.context.deps.settings.key_recheck_seconds
        principal = self.context.principal()
        expired = False
        while not expired:
            left = self._token_left()
            if left is not None and left <= 0:
                expired = True
                break
            await asyncio.sleep(interval if left is None else min(interval, left))
            if left is not None and left <= interval:
                continue  # woke for the token's expiry, checked above
            if self.context.socket_lease is not None:  # before the key check, which may hang
                await self.context.socket_lease.renew()
            try:
                if not await self.context.recheck_key():
                    expired = isinstance(self.context.auth_error, TokenExpired)
                    break
            except Exception as exc:  # the database is down: keep the socket, ask again later
                log.warning("api.key_recheck_failed", error=str(exc))
        WS_CLOSED.labels("expired" if expired else "revoked").inc()
        # Stop what runs for the key now, not when the client answers the close.
        self.connection_acknowledged = False
        for operation_id in list(self.operations):
            await self.cleanup_operation(operation_id)
        error = self.context.auth_error
        if expired:
            code, reason = TOKEN_EXPIRED, "token expired"
        elif principal.key_id is None:  # e.g. its tenant is gone or suspended
            code, reason = 4403, f"token refused: {error.message if error else 'unknown'}"[:120]
        else:  # expired and suspended say so; a revoked or deleted key is "API key revoked"
            told = error is not None and error.message in CLOSE_REASONS
            code, reason = 4403, error.message if told and error else "API key revoked"
        log.info(
            "api.socket_closed",
            reason=reason,
            key_id=str(principal.key_id) if principal.key_id else None,
            subject=principal.subject,
        )
        with suppress(RuntimeError, WebSocketDisconnect):  # the client closed first
            await self.websocket.close(code, reason)

    def _token_left(self) -> float | None:
        """Seconds until the socket's access token runs out; None for an API key."""
        principal = self.context.principal_
        if principal is None or principal.expires_at is None:
            return None
        leeway = self.context.deps.settings.auth_leeway_seconds
        return (principal.expires_at - datetime.now(UTC)).total_seconds() + leeway


class NegotiatedResponse(Response):
    """The sub-response Strawberry hands to the context (which sets 429 and Retry-After on it),
    carrying the response media type negotiated from the request's Accept header (None: 406)."""

    graphql_media_type: str | None = None


class GraphQLApp(GraphQL[Context, None]):
    """Strawberry's ASGI view with our context, API-key authentication and socket rules.

    HTTP answers speak GraphQL-over-HTTP (app/api/negotiation.py): Strawberry 0.341 only knows
    `application/json`, so the view negotiates `application/graphql-response+json` from the
    Accept header, drops `data` and sets the status of a request error in that type, and names
    the charset in the Content-Type.

    WebSocket Origin rule (Strawberry's check, kept explicit here): a handshake without an
    Origin header (a non-browser client) is allowed; a browser's is allowed when its Origin is
    this host (same origin) or one of CORS_ALLOWED_ORIGINS (or the deprecated
    WS_ALLOWED_ORIGINS); any other Origin is refused with 403 before the socket is accepted.
    Empty lists mean same-origin only.

    GraphiQL (GRAPHIQL=true) is our own page (app/api/graphiql), not Strawberry's CDN one.
    """

    graphql_transport_ws_handler_class = GuardedTransportWSHandler

    def __init__(self, deps_ref: dict[str, Deps], settings: Settings) -> None:
        super().__init__(
            build_schema(settings),
            graphql_ide="graphiql" if settings.graphiql else None,
            subscription_protocols=[GRAPHQL_TRANSPORT_WS_PROTOCOL],
            allowed_origins=socket_origins(settings),
            # A socket that never says who it is holds a connection: give it seconds, not a minute.
            connection_init_wait_timeout=CONNECTION_INIT_WAIT,
            max_subscriptions_per_connection=settings.ws_max_operations_per_socket,
            multipart_uploads_enabled=True,  # uploadFile; see parse_multipart for CSRF
        )
        self.websocket_adapter_class = partial(  # type: ignore[assignment]
            LimitedWebSocketAdapter, max_bytes=settings.max_request_bytes
        )
        self.request_adapter_class = partial(  # type: ignore[assignment]
            BoundedFormAdapter, field_bytes=settings.max_request_bytes
        )
        self._deps = deps_ref
        self.graphiql = GraphiQLSite()
        self.max_uploads_in_flight = settings.max_uploads_in_flight
        self.uploads_in_flight = 0

    async def parse_multipart(self, request: AsyncHTTPRequestAdapter) -> dict[str, str]:
        """A multipart POST is a "simple" request a page on any site can make without a
        preflight (an HTML form): refuse one that carries no header a form cannot set, before
        its body is read. Our callers send Authorization anyway; Apollo's clients send
        Apollo-Require-Preflight or X-Apollo-Operation-Name."""
        if not any(name in request.headers for name in PREFLIGHTED_HEADERS):
            raise UploadRefused(ValidationFailed(MULTIPART_NEEDS), 400)
        self._admit_upload(request, await self._upload_refusal(request))
        return await super().parse_multipart(request)

    async def _upload_refusal(self, request: AsyncHTTPRequestAdapter) -> UploadRefused | None:
        """Starlette spools an upload's body (to a temporary file past 1 MiB) while parsing
        it, before any resolver runs: so the caller is counted against its rate limit and must
        hold an operator or admin key before a byte of it is read. Multipart is for uploadFile
        only. Counted here, the operation is not counted again (OperationBudget)."""
        scope = cast(BoundedFormAdapter, request).request.scope
        context: Context = scope[CONTEXT_SCOPE_KEY]
        refusal = await context.admit()
        context.admitted_per_message = True
        if isinstance(refusal, RateLimited):
            return UploadRefused(refusal, 429, refusal.retry_after)
        if refusal is not None:
            return UploadRefused(refusal, 503, UPLOAD_RETRY_AFTER)
        try:
            require_writer(context.principal().role, "upload files")
        except Unauthenticated as exc:
            return UploadRefused(exc, 401)
        except Forbidden as exc:
            return UploadRefused(exc, 403)
        return None

    def _admit_upload(
        self, request: AsyncHTTPRequestAdapter, refusal: UploadRefused | None
    ) -> None:
        """Raise `refusal`, or take one of the MAX_UPLOADS_IN_FLIGHT places (each upload may
        hold a temporary file and a thread); `run` gives it back when the request ends."""
        if refusal is not None:
            raise refusal
        if self.uploads_in_flight >= self.max_uploads_in_flight:
            busy = Unavailable("too many uploads in progress on this server; try again shortly")
            raise UploadRefused(busy, 503, UPLOAD_RETRY_AFTER)
        self.uploads_in_flight += 1
        cast(BoundedFormAdapter, request).request.scope[UPLOAD_SCOPE_KEY] = True

    async def run(  # type: ignore[override]
        self, request: Request | WebSocket, context: Any = UNSET, root_value: Any = UNSET
    ) -> Response | WebSocket:
        """Strawberry's, answering an UploadRefused and giving back an upload's place."""
        try:
            return await super().run(request, context, root_value)  # type: ignore[arg-type]
        except UploadRefused as refused:
            return refused.response()
        finally:
            if request.scope.pop(UPLOAD_SCOPE_KEY, False):
                self.uploads_in_flight -= 1

    async def render_graphql_ide(self, request: Request) -> Response:
        return self.graphiql.page(request)

    def decode_json(self, data: str | bytes) -> object:
        """HTTP bodies, GET variables and socket messages: nesting deeper than Python's
        recursion limit, or bytes that are not UTF-8, are unparsable JSON (400, or 4400 on a
        socket), not a server error."""
        try:
            return json.loads(data)
        except RecursionError as exc:
            raise JSONDecodeError("JSON nested too deeply", "", 0) from exc
        except UnicodeDecodeError as exc:
            raise JSONDecodeError("the body is not UTF-8", "", 0) from exc

    async def get_sub_response(self, request: Request | WebSocket) -> Response:
        sub_response = NegotiatedResponse()  # blank, as Strawberry's own: no status chosen yet
        sub_response.status_code = None  # type: ignore[assignment]
        del sub_response.headers["content-length"]
        sub_response.graphql_media_type = negotiate(request.headers.get("accept"))
        return sub_response

    async def execute_operation(  # noqa: PLR0917
        self,
        request: Request,
        request_adapter: AsyncHTTPRequestAdapter,
        request_data: GraphQLRequestData | list[GraphQLRequestData],
        context: Context,
        root_value: None,
        sub_response: Response,
    ) -> ExecutionResult | list[ExecutionResult] | SubscriptionExecutionResult:
        """Refuse (406) before running anything when no acceptable media type is left; the
        GraphiQL page (a browser's GET without a query) is served before this."""
        if getattr(sub_response, "graphql_media_type", None) is None:
            raise HTTPException(
                406, "Not Acceptable: accept application/graphql-response+json or application/json"
            )
        return await super().execute_operation(
            request, request_adapter, request_data, context, root_value, sub_response
        )

    def create_response(
        self,
        response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse],
        sub_response: Response,
    ) -> Response:
        media_type = getattr(sub_response, "graphql_media_type", None) or APPLICATION_JSON
        if media_type == GRAPHQL_RESPONSE_JSON and isinstance(response_data, dict):
            status = request_error_status(response_data)
            if status is not None:  # never executed: the spec's response has no data entry
                response_data.pop("data", None)
                sub_response.status_code = sub_response.status_code or status
        response = super().create_response(response_data, sub_response)
        response.headers["content-type"] = f"{media_type}; charset=utf-8"
        return response

    async def get_context(self, request: Request | WebSocket, response: Any = None) -> Context:
        ctx = Context(deps=self._deps["deps"], request=request, response=response)
        if isinstance(request, Request):
            request.scope[CONTEXT_SCOPE_KEY] = ctx  # for the upload gate (parse_multipart)
            GRAPHQL_REQUESTS.labels(request.method).inc()
            ctx.authorization = request.headers.get("authorization")
        return ctx

    async def on_ws_connect(self, context: Context) -> Any:
        params = context.connection_params or {}
        header = params.get("authorization") or params.get("Authorization")
        context.authorization = header if isinstance(header, str) else None
        # The connect is a request too: without a valid key it spends the address's budget.
        refusal = await context.admit()
        if context.principal_ is None or refusal is not None:
            error = refusal or context.auth_error
            if error is None and context.platform_ is not None:
                message = NO_TENANT  # its operations are HTTP ones; sockets serve a tenant's
            else:
                message = error.message if error else "missing API key in connection_init payload"
            # Strawberry closes a refused connect with 4403 "Forbidden" whatever the message;
            # the message is for the log below.
            security_event("socket_refused", message, address=context.client_address)
            raise ConnectionRejectionError({"message": message})
        # Last, so a refused connect holds no place; released by the handler's shutdown.
        too_many = await context.claim_socket()
        if too_many is not None:
            raise SocketsExhausted(too_many)
        context.admitted_per_message = True
        return None


class UploadRefused(Exception):
    """An upload refused before its body is read, answered as a GraphQL error response with
    the status of its code (401, 403, 429 or 503) and Retry-After where waiting helps."""

    def __init__(self, error: DomainError, status: int, retry_after: int | None = None) -> None:
        super().__init__(error.message)
        self.error, self.status, self.retry_after = error, status, retry_after

    def response(self) -> Response:
        security_event("upload_refused", self.error.message, code=self.error.code)
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else None
        body = {"errors": [to_graphql_error(self.error).formatted]}
        return JSONResponse(body, status_code=self.status, headers=headers)


class _Oversize(Exception):
    """An upload's body passed its limit while the app was reading it."""


class BodySizeLimit:
    """Refuse request bodies over the limit (413) before they reach the app.

    A body with a Content-Length is judged by it; one without (chunked) is read here up to the
    limit and handed on whole, so an oversize one is refused the same way, never half-read.
    A multipart POST to /graphql (uploadFile) may be up to `upload_bytes`; without a
    Content-Length it is counted as the app reads it, never held here, and refused (413) as
    soon as it passes the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, upload_bytes: int | None = None) -> None:
        self.app, self.max_bytes = app, max_bytes
        self.upload_bytes = max(max_bytes, upload_bytes or 0)

    def _limit(self, scope: Scope, headers: dict[bytes, bytes]) -> int:
        media_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if scope["path"] == "/graphql" and media_type == b"multipart/form-data":
            return self.upload_bytes
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        limit = self._limit(scope, headers)
        length = headers.get(b"content-length")
        if length is not None:
            if length.isdigit() and int(length) > limit:
                await self._refuse(scope, receive, send, limit)
            else:  # the server holds the body to its declared length
                await self.app(scope, receive, send)
            return
        if limit > self.max_bytes:
            await self._counted(scope, receive, send, limit)
            return
        chunks: list[bytes] = []
        seen, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > limit:
                await self._refuse(scope, receive, send, limit)
                return
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # only a disconnect can follow
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    async def _counted(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        seen, started = 0, False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _Oversize
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _Oversize:
            if not started:  # the app answers only once it has read the body
                await self._refuse(scope, receive, send, limit)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        client = scope.get("client")
        security_event(
            "body_too_large",
            f"request body over {limit} bytes",
            path=scope["path"],
            address=client[0] if client else None,
        )
        await JSONResponse(
            {"errors": [{"message": f"request body over {limit} bytes"}]},
            status_code=413,
        )(scope, receive, send)


def create_app(settings: Settings | None = None) -> Starlette:
    settings = (settings or Settings()).require()
    # What plugins declare (their steps, AI tasks, templates) is known before any request:
    # template checks and plans read it. Once per process; their code never runs here.
    activate_plugins(settings)
    holder: dict[str, Deps] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        assert settings.database_url and settings.redis_url and settings.temporal_address
        engine = make_engine(settings.database_url)
        bus = EventBus(settings.redis_url)
        await bus.start()
        temporal = await connect(settings)
        # A blocking pool: a burst (1,000 sockets connecting, each taking its lease) waits a
        # moment for a connection; redis-py's default pool raised "Too many connections" past
        # 100, and the socket cap and the rate limiter then let the caller through uncounted.
        redis = blocking_redis_client(
            settings.redis_url,
            max_connections=200,
            timeout=2,
            socket_connect_timeout=2,
            socket_timeout=2,
        )
        limiter = RateLimiter(redis, settings.rate_limit_per_minute)
        tokens = TokenVerifier.from_settings(settings)
        holder["deps"] = Deps(
            settings, engine, make_sessionmaker(engine), bus, temporal, limiter, redis, tokens
        )
        log.info("api.started")
        try:
            yield
        finally:
            await bus.close()
            await redis.aclose()
            if tokens is not None:
                await tokens.aclose()
            await engine.dispose()
            log.info("api.stopped")
            # The request spans still batched go out now, within a bound, off the loop: an
            # API run by a bare uvicorn exits through the interpreter, `wfs api` through
            # hard_exit (which shuts tracing down). Only a flush here: an app object may be
            # started again in the same process (tests), with tracing still on.
            await asyncio.to_thread(tracing.flush)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        deps = holder["deps"]
        checks = await asyncio.gather(_check_db(deps), deps.bus.ping(), _check_temporal(deps))
        status = dict(zip(("postgres", "redis", "temporal"), checks, strict=True))
        ok = all(checks)
        # Reported, never failing readiness: a model the provider does not list is the AI
        # workers' concern (they fail over), not a reason to take this replica out.
        ai_models = model_check_detail(await read_check(deps.redis)) if checks[1] else None
        return JSONResponse(
            {
                "status": "ok" if ok else "unavailable",
                "checks": status,
                "detail": {"ai_models": ai_models},
            },
            status_code=200 if ok else 503,
        )

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    gql = GraphQLApp(holder, settings)
    ide = [Route("/graphiql/{path:path}", gql.graphiql.asset)] if settings.graphiql else []
    return Starlette(
        routes=[
            Route("/graphql", gql),
            WebSocketRoute("/graphql", gql),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            Route("/files/{token}", download_endpoint(settings), name="download_file"),
            *ide,
        ],
        middleware=[
            # Outermost: every line logged for a request, refusals included, has its id.
            Middleware(RequestIds),
            cors_middleware(settings),  # refusals below (413) carry CORS headers too
            Middleware(
                BodySizeLimit,
                max_bytes=settings.max_request_bytes,
                # uploadFile: the file plus the operations, map and part headers around it
                upload_bytes=settings.max_upload_bytes + settings.max_request_bytes,
            ),
        ],
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
