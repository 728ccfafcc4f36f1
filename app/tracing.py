"""OpenTelemetry tracing of one process: on when the standard OTEL_* variables name an
exporter (Settings.tracing_enabled), off otherwise (`wfs dev` included), and then nothing of
the OpenTelemetry SDK is imported.

`configure` installs the process's tracer provider (OTLP over HTTP, batched), instruments
asyncpg, redis and httpx, and makes `temporal_interceptors` return Temporal's
TracingInterceptor, which `app.temporal.connect` puts on every client: a workflow started by
a request joins the request's trace, and its workflow and activity spans follow on the worker
(the trace context travels in Temporal headers). The GraphQL operation span is Strawberry's
extension (app/api/observe.py); AI provider calls get a span of their own
(app/ai/traced_provider.py). This module imports no domain: a kit the layers above share.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import structlog

from app.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

log = structlog.get_logger(__name__)

# An attribute value (a GraphQL document, an error message) is cut to this many characters:
# tenants choose those texts, and a span must not carry a megabyte of one to the collector.
MAX_ATTRIBUTE_CHARS = 2048
# How long an exit waits for the last batch of spans to reach the collector.
FLUSH_TIMEOUT_SECONDS = 5.0

_provider: TracerProvider | None = None
_trace: Any = None  # the opentelemetry.trace module, once tracing is on (log lines read it)
_instrumentors: list[Any] = []


def enabled() -> bool:
    return _provider is not None


def configure(settings: Settings, exporter: SpanExporter | None = None) -> bool:
    """Start tracing for this process when the settings ask for it (or `exporter` is given:
    the tests' in-memory one, exported span by span). Idempotent; True when tracing is on."""
    if _provider is not None:
        return True
    if exporter is None and not settings.tracing_enabled:
        return False
    _install(settings, exporter)
    return True


def _install(settings: Settings, exporter: SpanExporter | None) -> None:
    global _provider, _trace
    from opentelemetry import trace
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import SpanLimits, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: settings.otel_service_name}),
        span_limits=SpanLimits(max_attribute_length=MAX_ATTRIBUTE_CHARS),
    )
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        provider.add_span_processor(BatchSpanProcessor(_exporter(settings)))
    trace.set_tracer_provider(provider)
    _provider, _trace = provider, trace
    _instrument()
    log.info("tracing.started", service=settings.otel_service_name)


def _exporter(settings: Settings) -> SpanExporter:
    if settings.otel_traces_exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    # Passed explicitly so a .env file (read by Settings, not by the SDK) works too; headers,
    # timeout, compression and certificates come from the OTEL_* environment as usual.
    endpoint = settings.otel_exporter_otlp_traces_endpoint
    if endpoint is None and settings.otel_exporter_otlp_endpoint:
        endpoint = settings.otel_exporter_otlp_endpoint.rstrip("/") + "/v1/traces"
    return OTLPSpanExporter(endpoint=endpoint)


def _instrument() -> None:
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    for instrumentor in (AsyncPGInstrumentor(), RedisInstrumentor(), HTTPXClientInstrumentor()):
        instrumentor.instrument()
        _instrumentors.append(instrumentor)


def flush(timeout_seconds: float = FLUSH_TIMEOUT_SECONDS) -> bool:
    """Export the spans still batched, waiting at most `timeout_seconds` (False when that ran
    out, or tracing is off... True when off: nothing to flush).

    The batch processor's force_flush ignores its timeout (opentelemetry-sdk 1.45, upstream
    issue 4568) and an OTLP export retries for up to its own timeout (10 s by default), so it
    runs on a daemon thread and we wait for that at most `timeout_seconds`: an exit never
    hangs on an unreachable collector."""
    provider = _provider
    if provider is None:
        return True
    flusher = threading.Thread(target=provider.force_flush, name="otel-flush", daemon=True)
    flusher.start()
    flusher.join(timeout_seconds)
    if flusher.is_alive():
        log.warning("tracing.flush_timeout", timeout_seconds=timeout_seconds)
        return False
    return True


def shutdown(timeout_seconds: float = FLUSH_TIMEOUT_SECONDS) -> None:
    """Flush what is pending (bounded, see flush) and stop tracing new work in this process
    (the global provider stays: OpenTelemetry allows setting it once). Every `wfs` process
    calls it on its way out (app/cli/process.py hard_exit: os._exit skips the SDK's atexit
    flush); tests too."""
    global _provider
    if _provider is None:
        return
    for instrumentor in _instrumentors:
        instrumentor.uninstrument()
    _instrumentors.clear()
    flush(timeout_seconds)
    _provider = None


def temporal_interceptors() -> list[Any]:
    """Temporal's tracing interceptor (client and worker) when tracing is on, else none."""
    if _provider is None:
        return []
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor()]


def trace_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the span current in this context, as hex; None without one."""
    if _provider is None:
        return None
    context = _trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")
