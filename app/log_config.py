"""Logging: structlog for our events (dotted names with ids) and the same renderer for stdlib
loggers (uvicorn, alembic, the event bus), console in dev, JSON lines in production.

Every line carries the ids bound in the context (app/log_context.py: request, tenant,
execution, activity) and, when tracing is on, the current `trace_id` and `span_id`. A JSON
line keeps its traceback as text in `exception` (docs/observability.md lists the fields).
"""

from __future__ import annotations

import logging
import sys
from typing import IO

import structlog
from structlog.typing import EventDict, WrappedLogger

from app import tracing

QUIET = ("httpx", "temporalio", "uvicorn.access", "alembic", "asyncio")


def add_trace_ids(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    ids = tracing.trace_ids()
    if ids is not None:
        event.setdefault("trace_id", ids[0])
        event.setdefault("span_id", ids[1])
    return event


def configure(level: str = "info", json: bool = False, stream: IO[str] | None = None) -> None:
    """Route structlog and stdlib logging to `stream` (stderr) at `level`."""
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        add_trace_ids,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    # Plain tracebacks: structlog's ConsoleRenderer picks rich's formatter whenever `rich` is
    # installed (import-linter brings it), and that one renders every frame's locals. A step
    # that failed on a 200-level-deep tenant value then took 26 s to log, holding the event
    # loop of the worker (and, in `wfs dev --processes 1`, the API's).
    # JSON: the traceback as text in `exception` (JSONRenderer alone would drop exc_info).
    rendering: list[structlog.typing.Processor] = (
        [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
        if json
        else [
            structlog.dev.ConsoleRenderer(
                colors=False, exception_formatter=structlog.dev.plain_traceback
            )
        ]
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *rendering],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    for name in QUIET:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
    # OpenTelemetry warns once per span attribute it cuts to MAX_ATTRIBUTE_CHARS (long SQL).
    logging.getLogger("opentelemetry.attributes").setLevel(max(numeric, logging.ERROR))
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        cache_logger_on_first_use=True,
    )
