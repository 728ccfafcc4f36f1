"""Steering executions over GraphQL: pause and resume between steps, cancel with a reason
(compensations run), retry a failed execution from its failed step, bulk cancel, and typed
errors for impossible transitions, other roles and other tenants."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from app.settings import Settings
from app.tenants.service import TenantService
from tests.api.test_execution_flow import wait_terminal
from tests.conftest import TenantKeys, make_tenant
from tests.support import GraphQLClient
from tests.workers.test_template_graph import SAGA, publish

OPS = Path(__file__).resolve().parents[2] / "graphql" / "operations"
CONTROL = (OPS / "ControlExecution.graphql").read_text()

STEPS = {
    "name": "steps",
    "title": "Three steps with a timer first",
    "parameters": {"type": "object"},
    "steps": [
        {"id": "first", "activity": "wait.timer", "input": {"seconds": 1.5}},
        {"id": "second", "activity": "data.transform", "input": {"data": {"n": 2}, "ops": []}},
        {"id": "third", "activity": "data.transform", "input": {"data": {"n": 3}, "ops": []}},
    ],
}
READER = {
    "name": "reader",
    "title": "Fails until its input file exists",
    "parameters": {"type": "object"},
    "steps": [
        {
            "id": "stamp",
            "activity": "data.transform",
            "input": {"data": {"run": "{{ execution.id }}"}, "ops": []},
        },
        {
            "id": "read",
            "activity": "files.read",
            "input": {"path": "inbox/order.json", "as": "json"},
        },
        {
            "id": "done",
            "activity": "data.transform",
            "input": {
                "data": {"stamp": "{{ steps.stamp.run }}", "order": "{{ steps.read.content }}"},
                "ops": [],
            },
        },
    ],
}


async def call(client: GraphQLClient, operation: str, variables: dict[str, Any]) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=client.base_url, timeout=30) as http:
        resp = await http.post(
            "/graphql",
            json={"query": CONTROL, "variables": variables, "operationName": operation},
            headers={"Authorization": f"Bearer {client.key}"},
        )
    body = resp.json()
    assert not body.get("errors"), body["errors"]
    (value,) = body["data"].values()
    return value


async def start(client: GraphQLClient, name: str, params: dict[str, Any] | None = None) -> str:
    data = await client.data(
        (OPS / "StartExecution.graphql").read_text(),
        {"input": {"templateName": name, "params": params or {}}},
    )
    return data["startExecution"]["id"]


async def state(client: GraphQLClient, execution_id: str) -> dict[str, Any]:
    return (await client.data((OPS / "Execution.graphql").read_text(), {"id": execution_id}))[
        "execution"
    ]


async def until(
    client: GraphQLClient, execution_id: str, check: Any, timeout: float = 30
) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            current = await state(client, execution_id)
            if check(current):
                return current
            await asyncio.sleep(0.2)


def kinds(execution: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [(e["type"], e["stepId"]) for e in execution["events"]]


async def test_pause_holds_between_steps_and_resume_continues(
    client: GraphQLClient, tenant: TenantKeys, sessions: Any
) -> None:
    name = await publish(sessions, tenant, STEPS)
    execution_id = await start(client, name)
    await until(client, execution_id, lambda e: e["currentStep"] == "first")
    paused = await call(client, "PauseExecution", {"id": execution_id, "reason": "maintenance"})
    assert paused["__typename"] == "Execution"
    held = await until(client, execution_id, lambda e: e["status"] == "PAUSED")
    await asyncio.sleep(2.5)  # the timer fires meanwhile, but no further step may start
    held = await state(client, execution_id)
    assert held["status"] == "PAUSED"
    assert ("STEP_STARTED", "second") not in kinds(held)
    again = await call(client, "PauseExecution", {"id": execution_id})
    assert again["code"] == "CONFLICT"
    assert (await call(client, "ResumeExecution", {"id": execution_id}))[
        "__typename"
    ] == "Execution"
    done = await wait_terminal(client, execution_id)
    assert done["status"] == "COMPLETED"
    events = {e["type"]: e for e in done["events"]}
    assert events["PAUSED"]["message"] == "maintenance"
    assert events["PAUSED"]["actor"].startswith("admin:")
    assert events["STEP_STARTED"]["actor"] == "system"
    order = [t for t, _ in kinds(done)]
    assert order.index("PAUSED") < order.index("RESUMED") < order.index("COMPLETED")
    # Impossible transitions on a finished execution are typed errors.
    for op in ("ResumeExecution", "PauseExecution", "CancelExecution", "RetryExecution"):
        assert (await call(client, op, {"id": execution_id}))["code"] == "CONFLICT", op


async def test_control_needs_an_operator_and_the_owning_tenant(
    client: GraphQLClient, server: str, tenant: TenantKeys, sessions: Any
) -> None:
    name = await publish(sessions, tenant, STEPS)
    execution_id = await start(client, name)
    viewer = GraphQLClient(server, tenant.viewer)
    assert (await call(viewer, "PauseExecution", {"id": execution_id}))["code"] == "FORBIDDEN"
    stranger = await make_tenant(sessions, "pro")
    other = GraphQLClient(server, stranger.admin)
    assert (await call(other, "CancelExecution", {"id": execution_id}))["code"] == "NOT_FOUND"
    assert (await wait_terminal(client, execution_id))["status"] == "COMPLETED"


async def test_cancel_records_who_and_why_and_compensates(
    client: GraphQLClient, tenant: TenantKeys, sessions: Any
) -> None:
    name = await publish(sessions, tenant, SAGA)
    execution_id = await start(client, name, {"hold": 30})
    await until(client, execution_id, lambda e: e["currentStep"] == "hold")
    done = await call(client, "CancelExecution", {"id": execution_id, "reason": "customer asked"})
    assert done["__typename"] == "Execution"
    final = await wait_terminal(client, execution_id)
    assert final["status"] == "CANCELLED"
    requested = next(e for e in final["events"] if e["type"] == "CANCEL_REQUESTED")
    assert requested["message"] == "customer asked"
    assert kinds(final)[-4:] == [
        ("COMPENSATING", None),
        ("STEP_COMPENSATED", "charge"),
        ("STEP_COMPENSATED", "reserve"),
        ("CANCELLED", None),
    ]


async def test_retry_continues_from_the_failed_step_keeping_outputs(
    client: GraphQLClient, tenant: TenantKeys, sessions: Any, settings: Settings
) -> None:
    name = await publish(sessions, tenant, READER)
    execution_id = await start(client, name)
    failed = await wait_terminal(client, execution_id)
    assert failed["status"] == "FAILED" and "inbox/order.json" in failed["error"]
    async with sessions() as session:
        owner = await TenantService(session).get_by_name(tenant.name)
    inbox = settings.files_root / str(owner.id) / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / "order.json").write_text('{"sku": "A-1"}')
    retried = await call(client, "RetryExecution", {"id": execution_id})
    assert retried["__typename"] == "Execution"
    done = await wait_terminal(client, execution_id)
    assert done["status"] == "COMPLETED", done["error"]
    assert done["error"] is None
    assert done["result"]["order"] == {"sku": "A-1"}
    assert done["result"]["stamp"]  # the first run's output of `stamp` was kept
    steps = kinds(done)
    assert steps.count(("STEP_STARTED", "stamp")) == 1  # not run again
    assert steps.count(("STEP_STARTED", "read")) == 2
    assert [e["seq"] for e in done["events"]] == list(range(1, len(steps) + 1))
    assert ("RETRIED", None) in steps
    retried_event = next(e for e in done["events"] if e["type"] == "RETRIED")
    assert retried_event["message"] == "run 2: 1 steps kept"  # `stamp`, the step it keeps
    states = {s["id"]: s for s in done["steps"]}
    assert (states["stamp"]["status"], states["stamp"]["attempts"]) == ("COMPLETED", 1)
    assert (states["read"]["status"], states["read"]["attempts"]) == ("COMPLETED", 2)
    assert states["read"]["output"]["content"] == {"sku": "A-1"}
    assert done["temporalUiUrl"] is None  # no UI in the tests' Temporal server


async def test_admins_cancel_many_at_once(
    client: GraphQLClient, server: str, tenant: TenantKeys, sessions: Any
) -> None:
    name = await publish(sessions, tenant, SAGA)
    ids = [await start(client, name, {"hold": 30}) for _ in range(3)]
    for execution_id in ids:
        await until(client, execution_id, lambda e: e["status"] == "RUNNING")
    operator = GraphQLClient(server, tenant.operator)
    denied = await call(operator, "CancelExecutions", {"filter": {"templateName": name}})
    assert denied["code"] == "FORBIDDEN"
    done = await call(
        client, "CancelExecutions", {"filter": {"templateName": name}, "reason": "bulk"}
    )
    assert done["count"] == 3
    for execution_id in ids:
        assert (await wait_terminal(client, execution_id))["status"] == "CANCELLED"
