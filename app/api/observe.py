"""What the API tells operators about each request and operation (docs/observability.md):

- `RequestIds` (ASGI middleware): every HTTP request and WebSocket gets a `request_id` (the
  caller's `X-Request-ID` when it is a short plain token, else a new one), bound in every log
  line of its work and echoed in the response's `X-Request-ID`.
- `OperationMetrics` (schema extension): `wfs_graphql_operation_duration_seconds` (queries and
  mutations), `wfs_graphql_errors_total` (each error code once per operation) and
  `wfs_graphql_active_subscriptions`.
- `GraphQLTracing` (schema extension, when tracing is on): Strawberry's OpenTelemetry
  extension, narrowed to what is safe and cheap: one span per operation (a child of the
  caller's `traceparent`), one per root field; no arguments nor document text in attributes
  (tenant data), and nested resolvers' database calls attached to the operation's span.

Labels never take a caller's words: `operation` is the schema field the operation selects at
its root (one name, `(multiple)`, or `(invalid)` for a document that was not validated), so a
tenant cannot mint series by naming operations.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from inspect import isawaitable
from typing import Any

import strawberry
import structlog
from graphql import FieldNode, GraphQLError, OperationDefinitionNode, get_operation_ast
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.extensions import LifecycleStep, SchemaExtension
from strawberry.types import ExecutionContext

from app.metrics import (
    GRAPHQL_ACTIVE_SUBSCRIPTIONS,
    GRAPHQL_ERRORS,
    GRAPHQL_OPERATION_DURATION,
)

REQUEST_ID_HEADER = "x-request-id"
_PLAIN_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
NOT_VALIDATED = "(invalid)"
SEVERAL = "(multiple)"
UNKNOWN_TYPE = "unknown"
# A coded error says what it is; these name the uncoded ones.
INTERNAL = "INTERNAL_SERVER_ERROR"  # masked: an unexpected exception in a resolver
REQUEST_ERROR = "GRAPHQL_VALIDATION_FAILED"  # unparsable, invalid or over a limit: not run


class RequestIds:
    """Bind `request_id` for everything a request or socket does, and echo it (HTTP)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(REQUEST_ID_HEADER.encode(), b"")
        text = given.decode("latin-1")
        request_id = text if _PLAIN_ID.fullmatch(text) else uuid.uuid4().hex

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            await self.app(scope, receive, send_with_id if scope["type"] == "http" else send)


def root_field(operation: OperationDefinitionNode) -> str:
    """The schema field an operation selects at its root, for a label (validated documents
    only: their root fields are the schema's)."""
    names = {
        s.name.value
        for s in operation.selection_set.selections
        if isinstance(s, FieldNode) and s.name.value != "__typename"
    }
    if len(names) == 1:
        return names.pop()
    return SEVERAL if names else "__typename"


def operation_labels(execution: ExecutionContext) -> tuple[str, str]:
    """(type, operation) of an operation for metrics and span names."""
    document = execution.graphql_document
    operation = (
        get_operation_ast(document, execution.operation_name) if document is not None else None
    )
    if operation is None:
        return UNKNOWN_TYPE, NOT_VALIDATED
    kind = operation.operation.value
    if execution.pre_execution_errors:
        return kind, NOT_VALIDATED
    return kind, root_field(operation)


def error_code(error: GraphQLError) -> str:
    code = (error.extensions or {}).get("code")
    if isinstance(code, str):
        return code
    return INTERNAL if error.path else REQUEST_ERROR


def operation_errors(execution: ExecutionContext) -> set[str]:
    errors = execution.pre_execution_errors or []
    result = execution.result
    if not errors and result is not None:
        errors = getattr(result, "errors", None) or []
    return {error_code(e) for e in errors}


def count_user_error(info: strawberry.Info, code: str) -> None:
    """A mutation answered with a UserError member (app/api/extensions.py): counted like a
    coded GraphQL error, under the operation's root field."""
    operation = info.operation
    GRAPHQL_ERRORS.labels(operation.operation.value, root_field(operation), code).inc()


class OperationMetrics(SchemaExtension):
    """Latency of each query and mutation, its error codes, and the subscriptions running."""

    def on_operation(self) -> Iterator[None]:
        started = time.perf_counter()
        self.subscribed = False
        try:
            yield
        finally:
            if self.subscribed:
                GRAPHQL_ACTIVE_SUBSCRIPTIONS.dec()
            self._record(time.perf_counter() - started)

    def on_execute(self) -> Iterator[None]:
        if _is_subscription(self.execution_context):
            self.subscribed = True
            GRAPHQL_ACTIVE_SUBSCRIPTIONS.inc()
        yield

    def _record(self, seconds: float) -> None:
        execution = self.execution_context
        kind, operation = operation_labels(execution)
        for code in operation_errors(execution):
            GRAPHQL_ERRORS.labels(kind, operation, code).inc()
        if kind != "subscription":  # a subscription lasts as long as its client listens
            GRAPHQL_OPERATION_DURATION.labels(kind, operation).observe(seconds)


def _is_subscription(execution: ExecutionContext) -> bool:
    try:
        return execution.operation_type.value == "subscription"
    except Exception:  # no document (or no such operation): nothing runs
        return False


def tracing_extension() -> type[SchemaExtension]:
    """GraphQLTracing, imported only when tracing is on (it needs the OpenTelemetry API)."""
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
    from starlette.requests import Request
    from strawberry.extensions.tracing import OpenTelemetryExtension
    from strawberry.extensions.tracing.utils import should_skip_tracing

    class GraphQLTracing(OpenTelemetryExtension):
        """An operation span (parent: the caller's traceparent), a span per root field."""

        def __init__(self, *, execution_context: ExecutionContext | None = None) -> None:
            super().__init__(execution_context=execution_context, arg_filter=_no_arguments)

        def on_operation(self) -> Generator[None, None, None]:
            request = getattr(self.execution_context.context, "request", None)
            # HTTP callers may send W3C `traceparent`; a socket's operations start traces.
            parent = propagate.extract(request.headers) if isinstance(request, Request) else None
            span = self._tracer.start_span("GraphQL", context=parent, kind=SpanKind.SERVER)
            span.set_attribute("component", "graphql")
            self.operation_span = span
            self._span_holder[LifecycleStep.OPERATION] = span
            try:
                yield
            finally:
                kind, operation = operation_labels(self.execution_context)
                span.update_name(f"GraphQL {kind} {operation}")
                span.set_attribute("graphql.operation.type", kind)
                span.set_attribute("graphql.operation.root_field", operation)
                codes = operation_errors(self.execution_context)
                if codes:
                    span.set_attribute("graphql.error_codes", sorted(codes))
                    if codes & {INTERNAL, "UNAVAILABLE"}:
                        span.set_status(Status(StatusCode.ERROR))
                span.end()

        async def resolve(
            self, _next: Callable[..., Any], root: Any, info: Any, *args: Any, **kwargs: Any
        ) -> Any:
            if should_skip_tracing(_next, info):  # plain attributes: nothing to trace
                result = _next(root, info, *args, **kwargs)
                return await result if isawaitable(result) else result
            if info.path.prev is None:
                return await super().resolve(_next, root, info, *args, **kwargs)
            # Nested resolvers: no span of their own, but what they call (loaders' queries)
            # belongs to the operation's trace.
            with trace.use_span(self.operation_span, end_on_exit=False):
                result = _next(root, info, *args, **kwargs)
                return await result if isawaitable(result) else result

    return GraphQLTracing


def _no_arguments(arguments: dict[str, Any], info: Any) -> dict[str, Any]:
    return {}
