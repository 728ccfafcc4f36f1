"""What /metrics tells operators about GraphQL operations (latency by root field, errors by
code, subscriptions open) and what a worker's metrics port tells about Temporal (its SDK's
temporal_* series), scraped over HTTP as Prometheus would."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import start_http_server
from prometheus_client.parser import text_string_to_metric_families

from app.settings import Settings
from app.temporal_metrics import ALERTED_SERIES
from tests.conftest import TenantKeys
from tests.support import GraphQLClient, Subscription, free_port
from tests.workers.test_template_graph import run

OPS = Path(__file__).resolve().parents[2] / "graphql" / "operations"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(url: str) -> Samples:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(url)
    assert response.status_code == 200
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the series of `name` that have these labels (and any others)."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= have)


async def test_operations_are_timed_and_their_errors_counted_by_root_field_and_code(
    server: str, client: GraphQLClient
) -> None:
    before = await scrape(f"{server}/metrics")
    # The client's operation name is not a label: the root field is.
    await client.data(f"query Anything{uuid.uuid4().hex} {{ viewer {{ role }} }}")
    refused = await client.raw(
        'mutation { startExecution(input: {templateName: "no-such-template", params: {}}) '
        "{ __typename ... on UserError { code } } }"
    )
    assert refused["data"]["startExecution"]["code"] == "NOT_FOUND"
    invalid = await client.raw("query { noSuchField }")
    assert invalid["errors"]
    after = await scrape(f"{server}/metrics")

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    duration = "wfs_graphql_operation_duration_seconds_count"
    assert grew(duration, type="query", operation="viewer") == 1
    assert grew(duration, type="mutation", operation="startExecution") == 1
    assert grew(duration, type="query", operation="(invalid)") == 1
    errors = "wfs_graphql_errors_total"
    assert grew(errors, type="mutation", operation="startExecution", code="NOT_FOUND") == 1
    assert grew(errors, type="query", operation="(invalid)", code="GRAPHQL_VALIDATION_FAILED") == 1
    assert grew(errors, type="query", operation="viewer", code="NOT_FOUND") == 0


async def test_open_subscriptions_are_a_gauge(server: str, tenant: TenantKeys) -> None:
    """Up while this subscription runs, down by one when it ends. Relative to what the gauge
    says meanwhile: an earlier test's socket may still be closing on the server."""
    sub = Subscription(server.replace("http", "ws") + "/graphql", tenant.admin)
    await sub.connect()
    await sub.start((OPS / "Notifications.graphql").read_text(), {})
    try:
        open_ = await until(server, lambda v: v >= 1)
    finally:
        await sub.close()
    assert await until(server, lambda v: v <= open_ - 1) >= 0


async def until(server: str, ok: Any) -> float:
    """The gauge once `ok` holds (the server handles a socket's messages on its own time)."""
    async with asyncio.timeout(30):
        while True:
            samples = await scrape(f"{server}/metrics")
            current = value(samples, "wfs_graphql_active_subscriptions")
            if ok(current):
                return current
            await asyncio.sleep(0.05)


async def test_a_worker_metrics_port_serves_temporal_sdk_metrics(
    server: str, client: GraphQLClient, tenant: TenantKeys, settings: Settings
) -> None:
    # `wfs worker --metrics-port` serves the process's registry the same way.
    _, execution = await run(
        client,
        server,
        tenant.admin,
        "order-summary",
        {"customer": "c", "items": [{"sku": "s", "qty": 1, "price": 1}], "wait_seconds": 0},
    )
    httpd, thread = start_http_server(free_port(), addr="127.0.0.1")
    try:
        samples = await scrape(f"http://127.0.0.1:{httpd.server_port}/metrics")
    finally:
        httpd.shutdown()
        thread.join()
    assert execution["status"] == "COMPLETED"
    names = {name for name, _ in samples}
    assert set(ALERTED_SERIES) <= names, sorted(set(ALERTED_SERIES) - names)
    assert not {n for n in names if n.endswith("_total_total")}
    # Durations in seconds: a workflow task waits milliseconds here, not thousands of them.
    latency = "temporal_workflow_task_schedule_to_start_latency"
    queue = settings.temporal_task_queue
    count = total(samples, f"{latency}_count", task_queue=queue)
    assert count > 0
    assert total(samples, f"{latency}_bucket", le="60.0", task_queue=queue) == count
    # Slots: labelled by worker type, as Temporal's dashboards expect.
    slots = "temporal_worker_task_slots_available"
    kinds = {dict(labels).get("worker_type") for name, labels in samples if name == slots}
    assert {"WorkflowWorker", "ActivityWorker"} <= kinds
