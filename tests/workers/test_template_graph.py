"""The workflow's step semantics end to end on the real worker: a dependency graph with
parallel branches, conditions, fan-out (in-workflow and as batch child workflows), external
events, compensation on failure, and cancellation."""

from __future__ import annotations

import asyncio
import base64
import os
import uuid
from pathlib import Path
from typing import Any

from temporalio.client import Client

from app.settings import Settings
from app.templates.service import TemplateService
from app.tenants.service import TenantService
from tests.api.test_execution_flow import wait_terminal
from tests.conftest import TenantKeys
from tests.support import GraphQLClient, Subscription, record_history

OPS = Path(__file__).resolve().parents[2] / "graphql" / "operations"


async def publish(sessions: Any, tenant: TenantKeys, spec: dict[str, Any]) -> str:
    name = f"{spec['name']}-{uuid.uuid4().hex[:6]}"
    async with sessions() as session:
        owner = await TenantService(session).get_by_name(tenant.name)
        await TemplateService(session).publish(
            {**spec, "name": name}, tenant_id=owner.id, visibility="PRIVATE"
        )
        await session.commit()
    return name


async def run(
    client: GraphQLClient, server: str, key: str, name: str, params: Any
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Start, watch to the end; returns (events, execution)."""
    started = await client.data(
        (OPS / "StartExecution.graphql").read_text(),
        {"input": {"templateName": name, "params": params}},
    )
    execution_id = started["startExecution"]["id"]
    sub = Subscription(server.replace("http", "ws") + "/graphql", key)
    await sub.connect()
    await sub.start((OPS / "ExecutionUpdates.graphql").read_text(), {"id": execution_id})
    items, final = await sub.collect(timeout=90)
    await sub.close()
    assert final["type"] == "complete", final
    execution = await wait_terminal(client, execution_id)
    return [i["data"]["executionUpdates"] for i in items], execution


def pk(global_id: str) -> str:
    return base64.urlsafe_b64decode(global_id + "==").decode().split(":", 1)[1]


def kinds(events: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    return [(e["type"], e["stepId"]) for e in events]


GRAPH = {
    "name": "graph",
    "title": "Diamond with a condition",
    "parameters": {"type": "object", "properties": {"vip": {"type": "boolean"}}},
    "steps": [
        {
            "id": "root",
            "activity": "data.transform",
            "input": {"data": {"n": 1}, "ops": [{"op": "set", "field": "root", "value": True}]},
        },
        {"id": "left", "activity": "wait.timer", "needs": ["root"], "input": {"seconds": 1}},
        {"id": "right", "activity": "wait.timer", "needs": ["root"], "input": {"seconds": 1}},
        {
            "id": "vip",
            "activity": "data.transform",
            "needs": ["root"],
            "when": "params.vip",
            "input": {"data": "{{ steps.root }}", "ops": []},
        },
        {
            "id": "join",
            "activity": "data.transform",
            "needs": ["left", "right", "vip"],
            "input": {
                "data": {
                    "left": "{{ steps.left.waited_seconds }}",
                    "vip": "{{ steps.vip is none }}",
                },
                "ops": [],
            },
        },
    ],
}


async def test_independent_steps_run_in_parallel_and_false_conditions_skip(
    client: GraphQLClient, server: str, tenant: TenantKeys, sessions: Any
) -> None:
    name = await publish(sessions, tenant, GRAPH)
    events, execution = await run(client, server, tenant.admin, name, {"vip": False})
    order = kinds(events)
    # Both branches started before either finished: they ran side by side.
    first_done = min(
        order.index(("STEP_COMPLETED", "left")), order.index(("STEP_COMPLETED", "right"))
    )
    assert order.index(("STEP_STARTED", "left")) < first_done
    assert order.index(("STEP_STARTED", "right")) < first_done
    assert ("STEP_SKIPPED", "vip") in order and ("STEP_STARTED", "vip") not in order
    assert order.index(("STEP_STARTED", "join")) > max(
        order.index(("STEP_COMPLETED", "left")),
        order.index(("STEP_COMPLETED", "right")),
        order.index(("STEP_SKIPPED", "vip")),
    )
    assert execution["status"] == "COMPLETED"
    assert execution["result"] == {"left": 1, "vip": True}
    assert events[-1]["progress"] == 100.0


FAN_OUT = {
    "name": "fan-out",
    "title": "Fan out over a list",
    "parameters": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
    "steps": [
        {
            "id": "each",
            "activity": "data.transform",
            "for_each": "range(params.n) | list",
            "for_each_concurrency": 20,
            "input": {"data": {"i": "{{ index }}", "sq": "{{ item * item }}"}, "ops": []},
        },
        {
            "id": "total",
            "activity": "data.aggregate",
            "input": {"data": "{{ steps.each }}", "fields": ["sq"]},
        },
    ],
}


async def test_fan_out_in_workflow_and_in_batch_child_workflows(
    client: GraphQLClient, server: str, tenant: TenantKeys, sessions: Any, settings: Settings
) -> None:
    name = await publish(sessions, tenant, FAN_OUT)
    for n in (7, 120):  # batch size is 50 in tests: 120 items run as 3 child workflows
        events, execution = await run(client, server, tenant.admin, name, {"n": n})
        assert execution["status"] == "COMPLETED", execution["error"]
        assert execution["result"]["count"] == n
        assert execution["result"]["sq"]["sum"] == sum(i * i for i in range(n))
    if os.environ.get("WFS_RECORD_HISTORIES"):
        await record_history("custom/fan-out-children", execution["id"], settings.temporal_address)
    # A fan-out in child workflows shows progress as its slices (50, 50, 20) finish.
    progress = [e for e in events if e["type"] == "STEP_PROGRESS"]
    done = [int(e["message"].split(" of ")[0]) for e in progress]
    # (slices finishing together may record their events in either order)
    ordered = sorted(done)
    assert len(set(done)) == 3 and ordered[-1] == 120, done
    assert {b - a for a, b in zip([0, *ordered], ordered, strict=False)} <= {50, 20}
    percents = sorted(e["progress"] for e in progress)
    assert 0 < percents[0] < percents[-1] == 50.0  # all items of 1 of 2 steps
    assert execution["progress"] == 100.0
    (each,) = [s for s in execution["steps"] if s["id"] == "each"]
    assert (each["items"], each["itemsDone"]) == (120, 120)
    assert settings.temporal_address
    temporal = await Client.connect(settings.temporal_address)
    workflow_id = f"exec-{pk(execution['id'])}"
    children = [w async for w in temporal.list_workflows("WorkflowType = 'ForEachBatchWorkflow'")]
    mine = sorted(w.id for w in children if w.id.startswith(workflow_id))
    assert mine == [f"{workflow_id}-each-{k}" for k in range(3)]


WAIT_EVENT = {
    "name": "approval",
    "title": "Wait for an approval",
    "parameters": {"type": "object"},
    "steps": [
        {
            "id": "ask",
            "activity": "wait.event",
            "input": {"event": "approved", "timeout_seconds": 60},
        },
        {
            "id": "late",
            "activity": "wait.event",
            "input": {"event": "never", "timeout_seconds": 1, "on_timeout": "continue"},
        },
    ],
    "output": {"by": "{{ steps.ask.payload.by }}", "late": "{{ steps.late.timed_out }}"},
}


async def test_wait_event_is_delivered_by_send_execution_event(
    client: GraphQLClient, server: str, tenant: TenantKeys, sessions: Any
) -> None:
    name = await publish(sessions, tenant, WAIT_EVENT)
    started = await client.data(
        (OPS / "StartExecution.graphql").read_text(),
        {"input": {"templateName": name, "params": {}}},
    )
    execution_id = started["startExecution"]["id"]
    send = (OPS / "SendExecutionEvent.graphql").read_text()
    viewer = GraphQLClient(server, tenant.viewer)
    denied = await viewer.data(send, {"input": {"executionId": execution_id, "name": "approved"}})
    assert denied["sendExecutionEvent"]["__typename"] == "ForbiddenError"
    sent = await client.data(
        send, {"input": {"executionId": execution_id, "name": "approved", "payload": {"by": "ops"}}}
    )
    assert sent["sendExecutionEvent"]["__typename"] == "Execution"
    execution = await wait_terminal(client, execution_id)
    assert execution["status"] == "COMPLETED"
    assert execution["result"] == {"by": "ops", "late": True}
    again = await client.data(send, {"input": {"executionId": execution_id, "name": "approved"}})
    assert again["sendExecutionEvent"]["code"] == "CONFLICT"


SAGA = {
    "name": "saga",
    "title": "Compensate what was done",
    "parameters": {
        "type": "object",
        "properties": {"fail": {"type": "boolean"}, "hold": {"type": "number"}},
    },
    "steps": [
        {
            "id": "reserve",
            "activity": "data.transform",
            "input": {"data": {"r": 1}, "ops": []},
            "compensate": {
                "activity": "data.transform",
                "input": {"data": "{{ output }}", "ops": []},
            },
        },
        {
            "id": "charge",
            "activity": "data.transform",
            "input": {"data": {"c": 1}, "ops": []},
            "compensate": {"activity": "data.transform", "input": {"data": {}, "ops": []}},
        },
        {
            "id": "hold",
            "activity": "wait.timer",
            "input": {"seconds": "{{ params.hold | default(0) }}"},
        },
        {
            "id": "ship",
            "activity": "data.transform",
            "input": {
                "data": [{"v": 1}, {"v": "x"}],
                "ops": "{{ [{'op': 'sort', 'by': 'v'}] if params.fail else [] }}",
            },
        },
    ],
}


async def test_failure_runs_compensations_in_reverse_order(
    client: GraphQLClient, server: str, tenant: TenantKeys, sessions: Any
) -> None:
    name = await publish(sessions, tenant, SAGA)
    events, execution = await run(client, server, tenant.admin, name, {"fail": True})
    assert kinds(events)[-5:] == [
        ("STEP_FAILED", "ship"),
        ("COMPENSATING", None),
        ("STEP_COMPENSATED", "charge"),
        ("STEP_COMPENSATED", "reserve"),
        ("FAILED", None),
    ]
    assert execution["status"] == "FAILED"
    assert "cannot sort by 'v'" in execution["error"]
    _, ok = await run(client, server, tenant.admin, name, {"fail": False})
    assert ok["status"] == "COMPLETED"
    assert not any(e["type"] == "COMPENSATING" for e in ok["events"])


async def test_cancelling_the_workflow_compensates_and_ends_cancelled(
    client: GraphQLClient, server: str, tenant: TenantKeys, sessions: Any, settings: Settings
) -> None:
    name = await publish(sessions, tenant, SAGA)
    started = await client.data(
        (OPS / "StartExecution.graphql").read_text(),
        {"input": {"templateName": name, "params": {"hold": 30}}},
    )
    execution_id = started["startExecution"]["id"]
    async with asyncio.timeout(30):
        while (
            await client.data(
                "query($id: ID!) { execution(id: $id) { currentStep } }", {"id": execution_id}
            )
        )["execution"]["currentStep"] != "hold":
            await asyncio.sleep(0.2)
    assert settings.temporal_address
    temporal = await Client.connect(settings.temporal_address)
    await temporal.get_workflow_handle(f"exec-{pk(execution_id)}").cancel()
    execution = await wait_terminal(client, execution_id)
    assert execution["status"] == "CANCELLED"
    assert kinds(execution["events"])[-4:] == [
        ("COMPENSATING", None),
        ("STEP_COMPENSATED", "charge"),
        ("STEP_COMPENSATED", "reserve"),
        ("CANCELLED", None),
    ]
