"""What every scenario shares: a GraphQL client per tenant, percentiles, the table rows, a pool
of concurrent clients, waiting on Temporal's visibility, and the raw-Temporal worker process."""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client

from bench.stack import CpuMeter, Stack

CREATE = (
    "mutation($i: CreateTemplateInput!) { createTemplate(input: $i) "
    "{ __typename ... on Template { id } ... on UserError { code message } } }"
)
PUBLISH = (
    "mutation($i: PublishTemplateInput!) { publishTemplate(input: $i) "
    "{ __typename ... on UserError { code message } } }"
)
START = (
    "mutation($i: StartExecutionInput!) { startExecution(input: $i) "
    "{ __typename ... on Execution { id } ... on UserError { code message } } }"
)
SEND_EVENT = (
    "mutation($i: SendExecutionEventInput!) { sendExecutionEvent(input: $i) "
    "{ __typename ... on UserError { code message } } }"
)
UNPOLLED = "bench-unpolled-"  # task queue prefix of raw starts no worker runs (start scenarios)
# One `data.transform` call: the step both sides run (the service through a template, raw
# Temporal through bench/raw_workflows.py).
TRANSFORM_INPUT: dict[str, Any] = {
    "data": [{"sku": "A-1", "name": "  Widget  "}, {"sku": "B-2", "name": " gadget"}],
    "ops": [{"op": "strip", "field": "name"}, {"op": "upper", "field": "name"}],
}


class Api:
    """GraphQL over HTTP as one tenant."""

    def __init__(self, base_url: str, key: str, connections: int = 64) -> None:
        self.http = httpx.AsyncClient(
            base_url=base_url,
            timeout=300,
            headers={"Authorization": f"Bearer {key}"},
            # Idle connections go before uvicorn's 5 s keep-alive ends: reusing one the server is
            # closing at that moment fails the request (httpx.ReadError) for no fault of either.
            limits=httpx.Limits(
                max_connections=connections,
                max_keepalive_connections=connections,
                keepalive_expiry=2,
            ),
        )

    async def gql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        resp = await self.http.post("/graphql", json={"query": query, "variables": variables})
        body = resp.json()
        if body.get("errors"):
            raise RuntimeError(f"GraphQL errors: {body['errors']}")
        return dict(body["data"])

    async def mutate(self, query: str, field_name: str, variables: dict[str, Any]) -> Any:
        answer = (await self.gql(query, variables))[field_name]
        if "code" in answer:
            raise RuntimeError(f"{field_name} refused: {answer}")
        return answer

    async def publish(self, spec: dict[str, Any]) -> None:
        created = await self.mutate(CREATE, "createTemplate", {"i": {"spec": spec}})
        await self.mutate(PUBLISH, "publishTemplate", {"i": {"templateId": created["id"]}})

    async def start(self, template: str, params: dict[str, Any]) -> str:
        variables = {"i": {"templateName": template, "params": params}}
        return str((await self.mutate(START, "startExecution", variables))["id"])

    async def send_event(self, execution_id: str, name: str) -> None:
        variables = {"i": {"executionId": execution_id, "name": name}}
        await self.mutate(SEND_EVENT, "sendExecutionEvent", variables)

    async def close(self) -> None:
        await self.http.aclose()


@dataclass
class Bench:
    """Handed to every scenario: the stack, one Api per demo tenant, a Temporal client."""

    stack: Stack
    apis: dict[str, Api]
    temporal: Client
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:6])

    def tenant_apis(self) -> list[Api]:
        return list(self.apis.values())

    async def publish_everywhere(self, spec: dict[str, Any]) -> None:
        """A private template is its tenant's own: each tenant publishes its copy."""
        await asyncio.gather(*(api.publish(spec) for api in self.tenant_apis()))


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (p50 of 1..100 is 50, p99 is 99)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def rounded(value: float | None) -> float | None:
    """One decimal, two below 10 (cores used, small rates)."""
    return None if value is None else round(value, 2 if abs(value) < 10 else 1)


def row(
    metric: str, service: float | None, raw: float | None, goal: str = "", **extra: Any
) -> dict[str, Any]:
    """One table row: the service's figure, raw Temporal's, service/raw, and the issue's goal."""
    ratio = service / raw if service is not None and raw else None
    return {
        "metric": metric,
        "ratio": None if ratio is None else round(ratio, 2),
        "service": rounded(service),
        "raw": rounded(raw),
        "goal": goal,
        **extra,
    }


def cpu_rows(service: CpuMeter, raw: CpuMeter) -> list[dict[str, Any]]:
    """One row per process busy on either side: cores it used (this machine has 2)."""
    s, r = service.cores(), raw.cores()
    return [row(f"cores used: {name}", s.get(name), r.get(name)) for name in sorted(s | r)]


def latency_rows(what: str, service: list[float], raw: list[float], goals: dict) -> list[dict]:
    return [
        row(f"{what} p{p} ms", percentile(service, p), percentile(raw, p), goals.get(p, ""))
        for p in (50, 95, 99)
    ]


async def pool(n: int, concurrency: int, call: Callable[[int], Awaitable[Any]]) -> list[float]:
    """`call(0..n-1)` from `concurrency` clients, each waiting for its answer before the next;
    returns each call's latency in ms (in call order)."""
    latencies = [0.0] * n
    counter = iter(range(n))

    async def client() -> None:
        for i in counter:
            t0 = time.perf_counter()
            await call(i)
            latencies[i] = (time.perf_counter() - t0) * 1000

    await asyncio.gather(*(client() for _ in range(min(n, concurrency))))
    return latencies


async def count(temporal: Client, query: str) -> int:
    return (await temporal.count_workflows(query)).count


async def wait_count(
    temporal: Client, query: str, n: int, timeout: float, every: float = 0.2
) -> float:
    """Wait until Temporal's visibility counts n workflows matching `query`; returns the
    monotonic time it first did. Raises with the count reached after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        seen = await count(temporal, query)
        now = time.monotonic()
        if seen >= n:
            return now
        if now > deadline:
            raise RuntimeError(f"{seen} of {n} workflows match [{query}] after {timeout}s")
        await asyncio.sleep(every)


def service_scope(template: str) -> str:
    """Executions of one bench template: the service tags its workflows with WfsTemplate."""
    return f"WfsTemplate = '{template}'"


def raw_scope(task_queue: str, id_prefix: str) -> str:
    return f"TaskQueue = '{task_queue}' AND WorkflowId STARTS_WITH '{id_prefix}'"


def status(scope: str, value: str) -> str:
    return f"{scope} AND ExecutionStatus = '{value}'"


async def check_all_completed(temporal: Client, scope: str, n: int) -> None:
    """Every one of the n workflows of `scope` completed (none failed, timed out, ...)."""
    completed = await count(temporal, status(scope, "Completed"))
    others = await count(
        temporal, f"{scope} AND ExecutionStatus != 'Running' AND ExecutionStatus != 'Completed'"
    )
    if completed != n or others:
        raise RuntimeError(f"[{scope}]: {completed} of {n} completed, {others} closed otherwise")


class RawWorker:
    """bench/raw_worker.py in its own process, on its own task queue of the stack's Temporal:
    the service's worker has a process of its own too, so neither side shares the bench's loop."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.task_queue = f"bench-raw-{uuid.uuid4().hex[:8]}"
        self.proc: subprocess.Popen[str] | None = None

    async def __aenter__(self) -> RawWorker:
        self.proc = self._spawn()
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), 60)
        if line.strip() != "ready":
            raise RuntimeError(f"raw worker did not start (exit {self.proc.poll()})")
        return self

    def _spawn(self) -> subprocess.Popen[str]:
        env = dict(os.environ)
        env |= {k.upper(): v for k, v in self.stack.services.items() if k != "temporal_ui_url"}
        root = Path(__file__).resolve().parents[1]
        return subprocess.Popen(
            [sys.executable, "-m", "bench.raw_worker", self.task_queue],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def __aexit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        await asyncio.to_thread(self.proc.wait, 30)


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, default=str)
