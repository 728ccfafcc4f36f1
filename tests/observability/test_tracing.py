"""One trace from the request to the model: startExecution's GraphQL operation, its resolver,
Temporal's start, the workflow, the AI activities and the provider call with its model, tokens
and cost, all under one trace id (an in-memory exporter, in a process of its own:
trace_run.py). The same run's JSON log lines carry request, tenant, execution and trace ids.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from app.ai_catalog import default_catalog
from app.settings import Settings
from tests.support import free_port
from tests.workers.test_template_graph import pk as execution_pk
from tests.workers.worker_process import worker_env

ROOT = Path(__file__).resolve().parents[2]


async def traced_run(settings: Settings) -> tuple[dict[str, Any], list[dict[str, Any]], str]:
    own = settings.model_copy(
        update={
            "api_port": free_port(),
            "temporal_task_queue": f"trace-{uuid.uuid4().hex[:8]}",
            "ai_task_queue": f"trace-ai-{uuid.uuid4().hex[:8]}",
        }
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.observability.trace_run",
        cwd=ROOT,
        env=worker_env(own),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 180)
    assert proc.returncode == 0, err.decode()[-4000:]
    lines = [json.loads(line) for line in out.decode().splitlines()]
    return lines[0], lines[1:], err.decode()


def ancestors(span: dict[str, Any], by_id: dict[str, dict[str, Any]]) -> list[str]:
    names = []
    while span["parent_id"] in by_id:
        span = by_id[span["parent_id"]]
        names.append(span["name"])
    return names


async def test_one_trace_from_start_execution_through_the_workflow_to_the_ai_call(
    settings: Settings, sessions: Any
) -> None:
    execution, spans, stderr = await traced_run(settings)
    assert execution["status"] == "COMPLETED"

    operation = next(s for s in spans if s["name"] == "GraphQL mutation startExecution")
    trace_id = operation["trace_id"]
    trace = [s for s in spans if s["trace_id"] == trace_id]
    by_id = {s["span_id"]: s for s in trace}
    names = {s["name"] for s in trace}
    assert {
        "GraphQL Resolving: startExecution",
        "StartWorkflow:TemplateWorkflow",
        "RunWorkflow:TemplateWorkflow",
        "StartActivity:ai.summarize",
        "RunActivity:ai.summarize",
    } <= names, sorted(names)

    calls = [s for s in trace if s["name"].startswith("ai.call ")]
    assert len(calls) == 1  # the template's one AI step: one model call, in this trace
    for call in calls:
        attributes = call["attributes"]
        first = default_catalog().routing["premium"]["summarize"][0]  # the tier's first model
        assert attributes["gen_ai.system"] == first.provider
        assert attributes["gen_ai.request.model"] == first.model
        assert attributes["gen_ai.usage.input_tokens"] > 0
        assert attributes["gen_ai.usage.output_tokens"] > 0
        assert Decimal(attributes["wfs.ai.cost_usd"]) > 0
        # Temporal's interceptor: the workflow's activity starts hang under its start
        # (RunWorkflow is their sibling), each activity run under its start.
        chain = ancestors(call, by_id)
        assert chain[:3] == [
            chain[0],
            chain[0].replace("Run", "Start"),
            "StartWorkflow:TemplateWorkflow",
        ]
        assert chain[0].startswith("RunActivity:ai.")
        assert chain[3:5] == ["GraphQL Resolving: startExecution", operation["name"]]

    # The database and Redis calls of the request are in its trace too.
    kinds: dict[str, int] = defaultdict(int)
    for span in trace:
        kinds[
            str(span["attributes"].get("db.system", span["attributes"].get("db.system.name")))
        ] += 1
    assert kinds["postgresql"] > 0 and kinds["redis"] > 0, dict(kinds)
    # No argument nor document text of a tenant's in the spans.
    assert not any(
        k.startswith("graphql.param.") or k == "query" for s in trace for k in s["attributes"]
    )

    logs = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    execution_id = execution_pk(execution["execution"])
    started = next(line for line in logs if line["event"] == "execution.started")
    assert started["request_id"] and started["trace_id"] == trace_id
    tenant_id = started["tenant_id"]
    # Lines that pass none of these ids themselves: the bound context says them.
    admitted = next(line for line in logs if line["event"] == "execution.admitted")
    assert admitted["tenant_id"] == tenant_id
    assert admitted["request_id"] == started["request_id"]
    # On the AI worker, even a library's line (the SDK's HTTP request) names the execution.
    in_activities = [line for line in logs if str(line.get("activity", "")).startswith("ai.")]
    assert in_activities
    for line in in_activities:
        assert line["execution_id"] == execution_id and line["tenant_id"] == tenant_id
        assert line["trace_id"] == trace_id and line["workflow_id"] == f"exec-{execution_id}"


def test_tracing_is_off_unless_an_exporter_is_configured() -> None:
    def settings(**env: str) -> Settings:
        return Settings(_env_file=None, **{k.lower(): v for k, v in env.items()})  # type: ignore[call-arg]

    assert not settings().tracing_enabled  # `wfs dev` and any process without OTEL_*
    assert settings(OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4318").tracing_enabled
    assert settings(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="http://c:4318/v1/traces").tracing_enabled
    assert settings(OTEL_TRACES_EXPORTER="console").tracing_enabled
    off = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    assert not settings(**off, OTEL_SDK_DISABLED="true").tracing_enabled
    assert not settings(**off, OTEL_TRACES_EXPORTER="none").tracing_enabled
    with pytest.raises(ValidationError, match="http/protobuf"):
        settings(**off, OTEL_EXPORTER_OTLP_PROTOCOL="grpc")  # not shipped: refused at start


EXIT_SCRIPT = """
from opentelemetry import trace
from app import tracing
from app.cli.process import hard_exit
from app.settings import Settings

assert tracing.configure(Settings(_env_file=None))  # OTEL_TRACES_EXPORTER=console: batched
with trace.get_tracer("exit-test").start_as_current_span("span-before-exit"):
    pass
hard_exit(3)
"""


def test_spans_batched_at_exit_are_exported_before_hard_exit() -> None:
    # Every `wfs` process leaves through os._exit, which skips the SDK's atexit flush: before
    # the fix the batch processor (5 s schedule) still held the span and it was lost.
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["OTEL_TRACES_EXPORTER"] = "console"
    done = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3, done.stderr
    assert '"name": "span-before-exit"' in done.stdout
