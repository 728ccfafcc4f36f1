"""One execution traced end to end, in a process of its own (tests/observability/test_tracing.py
starts it): tracing turns on process-wide (the global tracer provider, instrumented asyncpg,
redis and httpx) and logging is configured from the start (JSON at info), which a test must not
leave behind in the suite's process.

Settings come from the environment (the test session's, tests/workers/worker_process.py
`worker_env`). It runs the API, a worker and an AI worker in one event loop, starts
document-processing for a premium tenant (its three AI steps call the fake LLM), watches it to
the end, and prints every finished span as one JSON line on stdout; the log lines go to stderr.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app import tracing
from app.cli.process import hard_exit
from app.cli.runner import run_api, run_worker
from app.db import make_engine, make_sessionmaker
from app.log_config import configure
from app.settings import Settings
from tests.conftest import make_tenant
from tests.support import GraphQLClient
from tests.workers.test_template_graph import run

TEXT = "Invoice INV-7 from ACME. Total due: $1,250.00. Contact billing@acme.example."


def as_json(span: ReadableSpan) -> dict[str, Any]:
    context = span.get_span_context()
    assert context is not None
    return {
        "name": span.name,
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
        "parent_id": format(span.parent.span_id, "016x") if span.parent else None,
        "attributes": {k: v for k, v in (span.attributes or {}).items()},
    }


async def main() -> None:
    settings = Settings()
    exporter = InMemorySpanExporter()
    tracing.configure(settings, exporter=exporter)
    assert settings.database_url
    engine = make_engine(settings.database_url)
    keys = await make_tenant(make_sessionmaker(engine), "premium")
    stop, ready = asyncio.Event(), asyncio.Event()
    roles = [
        asyncio.create_task(run_api(settings, stop, ready)),
        asyncio.create_task(run_worker(settings, stop)),
        asyncio.create_task(run_worker(settings, stop, settings.ai_task_queue)),
    ]
    try:
        await asyncio.wait_for(ready.wait(), 60)
        base = f"http://127.0.0.1:{settings.api_port}"
        client = GraphQLClient(base, keys.admin)
        _, execution = await run(client, base, keys.admin, "document-processing", {"text": TEXT})
        print(json.dumps({"execution": execution["id"], "status": execution["status"]}))
    finally:
        stop.set()
        await asyncio.gather(*roles)
        await engine.dispose()
    tracing.shutdown()
    for span in exporter.get_finished_spans():
        print(json.dumps(as_json(span), default=str))
    sys.stdout.flush()


if __name__ == "__main__":
    configure("info", json=True)
    asyncio.run(main())
    hard_exit(0)
