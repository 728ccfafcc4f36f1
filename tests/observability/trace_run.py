"""One execution traced end to end, in a process of its own (tests/observability/test_tracing.py
starts it): tracing turns on process-wide (the global tracer provider, instrumented asyncpg,
redis and httpx) and logging is configured from the start (JSON at info), which a test must not
leave behind in the suite's process.

Settings come from the environment (the test session's, tests/workers/worker_process.py
`worker_env`). It runs the API, a worker and an AI worker in one event loop, publishes a
one-step template whose step is an AI task (the premium tenant's model call goes to the fake
LLM), starts it over GraphQL, polls it to the end, and prints the execution, then every
finished span as one JSON line on stdout; the log lines go to stderr.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app import tracing
from app.cli.process import hard_exit
from app.cli.runner import run_api, run_worker
from app.db import SessionFactory, make_engine, make_sessionmaker
from app.log_config import configure
from app.settings import Settings
from app.templates.service import TemplateService
from app.tenants.service import TenantService
from tests.support import GraphQLClient

OPS = Path(__file__).resolve().parents[2] / "graphql" / "operations"
TEXT = "Invoice INV-7 from ACME. Total due: $1,250.00. Contact billing@acme.example."
SPEC = {
    "title": "One AI step",
    "parameters": {"type": "object", "properties": {"text": {"type": "string"}}},
    "steps": [
        {"id": "summary", "activity": "ai.summarize", "input": {"text": "{{ params.text }}"}}
    ],
}


async def premium_tenant_with_template(sessions: SessionFactory) -> tuple[str, str]:
    """(an admin key of a new premium tenant, the name of its one-step AI template)."""
    name = f"trace-{uuid.uuid4().hex[:8]}"
    async with sessions() as session:
        tenants = TenantService(session)
        tenant = await tenants.create_tenant(name, "premium")
        _, key = await tenants.create_api_key(tenant, role="admin")
        await TemplateService(session).publish(
            {**SPEC, "name": name}, tenant_id=tenant.id, visibility="PRIVATE"
        )
        await session.commit()
    return key, name


async def run_to_end(client: GraphQLClient, template: str) -> dict[str, Any]:
    started = await client.data(
        (OPS / "StartExecution.graphql").read_text(),
        {"input": {"templateName": template, "params": {"text": TEXT}}},
    )
    execution_id = started["startExecution"]["id"]
    async with asyncio.timeout(90):
        while True:
            execution = (
                await client.data((OPS / "Execution.graphql").read_text(), {"id": execution_id})
            )["execution"]
            if execution["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
                return execution
            await asyncio.sleep(0.1)


def as_json(span: ReadableSpan) -> dict[str, Any]:
    context = span.get_span_context()
    assert context is not None
    return {
        "name": span.name,
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
        "parent_id": format(span.parent.span_id, "016x") if span.parent else None,
        "attributes": dict(span.attributes or {}),
    }


async def main() -> None:
    settings = Settings()
    exporter = InMemorySpanExporter()
    tracing.configure(settings, exporter=exporter)
    assert settings.database_url
    engine = make_engine(settings.database_url)
    key, template = await premium_tenant_with_template(make_sessionmaker(engine))
    stop, ready = asyncio.Event(), asyncio.Event()
    roles = [
        asyncio.create_task(run_api(settings, stop, ready)),
        asyncio.create_task(run_worker(settings, stop)),
        asyncio.create_task(run_worker(settings, stop, settings.ai_task_queue)),
    ]
    try:
        await asyncio.wait_for(ready.wait(), 60)
        client = GraphQLClient(f"http://127.0.0.1:{settings.api_port}", key)
        execution = await run_to_end(client, template)
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
