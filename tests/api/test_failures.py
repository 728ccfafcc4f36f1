"""A failing step ends the execution FAILED with a readable error, live and in the row."""

from __future__ import annotations

from pathlib import Path

from app.templates.service import TemplateService
from app.tenants.service import TenantService
from tests.conftest import TenantKeys
from tests.support import GraphQLClient, Subscription

OPS = Path(__file__).resolve().parents[2] / "graphql" / "operations"

BROKEN = {
    "name": "broken-sort",
    "title": "Sort by a field that is not comparable",
    "parameters": {
        "type": "object",
        "properties": {"rows": {"type": "array"}},
        "required": ["rows"],
    },
    "steps": [
        {
            "id": "first",
            "activity": "data.transform",
            "input": {"data": "{{ params.rows }}", "ops": []},
        },
        {
            "id": "sort",
            "activity": "data.transform",
            "input": {"data": "{{ steps.first }}", "ops": [{"op": "sort", "by": "v"}]},
            "retry": {"max_attempts": 5},
        },
        {"id": "never", "activity": "data.aggregate", "input": {"data": "{{ steps.sort }}"}},
    ],
}


async def test_failed_step_fails_the_execution_once_with_its_reason(
    client: GraphQLClient, server: str, tenant: TenantKeys, sessions
) -> None:  # type: ignore[no-untyped-def]
    async with sessions() as session:
        owner = await TenantService(session).get_by_name(tenant.name)
        await TemplateService(session).publish(BROKEN, tenant_id=owner.id, visibility="PRIVATE")
        await session.commit()

    data = await client.data(
        (OPS / "StartExecution.graphql").read_text(),
        {"input": {"templateName": "broken-sort", "params": {"rows": [{"v": 1}, {"v": "a"}]}}},
    )
    execution_id = data["startExecution"]["id"]
    sub = Subscription(server.replace("http", "ws") + "/graphql", tenant.admin)
    await sub.connect()
    await sub.start((OPS / "ExecutionUpdates.graphql").read_text(), {"id": execution_id})
    items, final = await sub.collect()
    await sub.close()
    events = [i["data"]["executionUpdates"] for i in items]
    assert final["type"] == "complete"
    assert [(e["type"], e["stepId"]) for e in events[-4:]] == [
        ("STEP_COMPLETED", "first"),
        ("STEP_STARTED", "sort"),
        ("STEP_FAILED", "sort"),
        ("FAILED", None),
    ]
    assert "cannot sort by 'v'" in events[-1]["message"]

    execution = (await client.data((OPS / "Execution.graphql").read_text(), {"id": execution_id}))[
        "execution"
    ]
    assert execution["status"] == "FAILED"
    assert execution["result"] is None
    assert "step sort (data.transform) failed: cannot sort by 'v'" in execution["error"]
    assert execution["progress"] == 33.33
