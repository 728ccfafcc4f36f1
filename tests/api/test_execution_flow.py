"""The walking skeleton end to end: HTTP mutation -> Temporal worker -> PostgreSQL -> Redis ->
WebSocket subscription, plus reconnects, auth, tenancy and typed errors."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from tests.conftest import TenantKeys
from tests.support import GraphQLClient, Subscription

OPS = Path(__file__).resolve().parents[2] / "graphql" / "operations"


def op(name: str) -> str:
    return (OPS / f"{name}.graphql").read_text()


ORDER = {
    "customer": "Grace",
    "items": [{"sku": "b-2", "qty": 2, "price": 9.5}, {"sku": "a-1", "qty": 1, "price": 20}],
    "wait_seconds": 0.5,
}
STEP_EVENTS = [
    ("STEP_STARTED", "normalize"),
    ("STEP_COMPLETED", "normalize"),
    ("STEP_STARTED", "hold"),
    ("STEP_COMPLETED", "hold"),
    ("STEP_STARTED", "totals"),
    ("STEP_COMPLETED", "totals"),
]


async def start(client: GraphQLClient, params: Any = ORDER, **extra: Any) -> dict[str, Any]:
    data = await client.data(
        op("StartExecution"),
        {"input": {"templateName": "order-summary", "params": params, **extra}},
    )
    return data["startExecution"]


async def wait_terminal(
    client: GraphQLClient, execution_id: str, timeout: float = 60
) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            execution = (await client.data(op("Execution"), {"id": execution_id}))["execution"]
            if execution["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
                return execution
            await asyncio.sleep(0.2)


def ws_url(server: str) -> str:
    return server.replace("http://", "ws://") + "/graphql"


async def test_start_watch_and_read_result(
    client: GraphQLClient, server: str, tenant: TenantKeys
) -> None:
    sub = Subscription(ws_url(server), tenant.admin)
    await sub.connect()
    started = await start(client)
    assert started["__typename"] == "Execution", started
    assert started["templateVersion"] == 1
    await sub.start(op("ExecutionUpdates"), {"id": started["id"]})
    items, final = await sub.collect()
    await sub.close()

    assert final["type"] == "complete", final
    events = [i["data"]["executionUpdates"] for i in items]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["type"] for e in events] == (
        ["CREATED", "STARTED"] + [t for t, _ in STEP_EVENTS] + ["COMPLETED"]
    )
    assert [(e["type"], e["stepId"]) for e in events[2:-1]] == STEP_EVENTS
    assert [e["progress"] for e in events if e["type"] == "STEP_COMPLETED"] == [33.33, 66.67, 100.0]
    assert events[-1]["status"] == "COMPLETED"

    execution = (await client.data(op("Execution"), {"id": started["id"]}))["execution"]
    assert execution["status"] == "COMPLETED"
    assert execution["progress"] == 100.0
    assert execution["error"] is None
    assert execution["finishedAt"] and execution["startedAt"]
    assert execution["result"] == {
        "customer": "Grace",
        "items": [{"sku": "A-1", "qty": 1, "price": 20}, {"sku": "B-2", "qty": 2, "price": 9.5}],
        "total_qty": 3,
        "total_value": 39,
    }
    assert [e["seq"] for e in execution["events"]] == [e["seq"] for e in events]


async def test_reconnect_with_after_seq_gets_the_rest_once(
    client: GraphQLClient, server: str, tenant: TenantKeys
) -> None:
    started = await start(client, {**ORDER, "wait_seconds": 1.5})
    first = Subscription(ws_url(server), tenant.admin)
    await first.connect()
    await first.start(op("ExecutionUpdates"), {"id": started["id"]})
    seen = []
    while len(seen) < 3:
        msg = await first.next()
        seen.append(msg["payload"]["data"]["executionUpdates"])
    await first.close()  # the client drops mid-execution

    again = Subscription(ws_url(server), tenant.admin)
    await again.connect()
    await again.start(op("ExecutionUpdates"), {"id": started["id"], "afterSeq": seen[-1]["seq"]})
    items, final = await again.collect()
    await again.close()
    rest = [i["data"]["executionUpdates"] for i in items]
    assert final["type"] == "complete"
    seqs = [e["seq"] for e in seen + rest]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    assert rest[-1]["type"] == "COMPLETED"

    # After the end, a subscription from the start replays everything and completes at once.
    replay = Subscription(ws_url(server), tenant.admin)
    await replay.connect()
    await replay.start(op("ExecutionUpdates"), {"id": started["id"], "afterSeq": 0})
    items, final = await replay.collect(timeout=10)
    await replay.close()
    assert [i["data"]["executionUpdates"]["seq"] for i in items] == seqs
    assert final["type"] == "complete"


async def test_invalid_params_are_a_typed_error_and_start_nothing(client: GraphQLClient) -> None:
    before = await client.data(op("Executions"), {"first": 100})
    result = await start(client, {"customer": "", "items": [{"sku": "x", "qty": 0}], "extra": 1})
    assert result["__typename"] == "ValidationError"
    assert result["code"] == "VALIDATION_FAILED"
    paths = {p["path"] for p in result["problems"]}
    assert {"$.customer", "$.items[0].qty", "$.items[0]", "$"} <= paths, result["problems"]
    after = await client.data(op("Executions"), {"first": 100})
    assert len(after["executions"]["edges"]) == len(before["executions"]["edges"])


async def test_unknown_template_is_not_found(client: GraphQLClient) -> None:
    data = await client.data(
        op("StartExecution"), {"input": {"templateName": "no-such-template", "params": {}}}
    )
    assert data["startExecution"]["__typename"] == "NotFoundError"
    assert data["startExecution"]["code"] == "NOT_FOUND"


async def test_same_idempotency_key_returns_the_same_execution(client: GraphQLClient) -> None:
    key = f"order-{uuid.uuid4()}"
    results = await asyncio.gather(*[start(client, idempotencyKey=key) for _ in range(5)])
    ids = {r["id"] for r in results}
    assert len(ids) == 1, results
    listed = await client.data(op("Executions"), {"first": 100})
    assert sum(e["node"]["id"] in ids for e in listed["executions"]["edges"]) == 1
    assert (await wait_terminal(client, ids.pop()))["status"] == "COMPLETED"


async def test_viewer_and_roles(server: str, tenant: TenantKeys) -> None:
    viewer = await GraphQLClient(server, tenant.viewer).data(op("Viewer"))
    assert viewer["viewer"]["role"] == "VIEWER"
    assert viewer["viewer"]["tenant"]["name"] == tenant.name
    assert viewer["viewer"]["tenant"]["tier"] == "PRO"
    denied = await start(GraphQLClient(server, tenant.viewer))
    assert denied["__typename"] == "ForbiddenError"
    allowed = await start(GraphQLClient(server, tenant.operator))
    assert allowed["__typename"] == "Execution"


async def test_missing_and_bad_keys_are_refused(server: str) -> None:
    for key, needle in ((None, "missing API key"), ("wfs_nope_nope", "invalid API key")):
        body = await GraphQLClient(server, key).raw(op("Viewer"))
        assert body["data"] is None
        assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        assert needle in body["errors"][0]["message"]

    import websockets

    for key in (None, "wfs_nope_nope"):
        sub = Subscription(ws_url(server), key)
        try:
            await sub.connect()
        except (AssertionError, websockets.ConnectionClosed) as exc:
            closed = exc
        else:
            raise AssertionError("connection_init with a bad key was acknowledged")
        assert sub.ws.close_code == 4403, closed


async def test_other_tenants_objects_are_not_found(
    client: GraphQLClient, server: str, other_tenant: TenantKeys
) -> None:
    started = await start(client)
    other = GraphQLClient(server, other_tenant.admin)
    body = await other.raw(op("Execution"), {"id": started["id"]})
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert "Grace" not in str(body)
    # `node` answers null for an id that names nothing of the caller's, as Relay expects.
    body = await other.raw(op("Node"), {"id": started["id"]})
    assert body == {"data": {"node": None}}, body
    listed = await other.data(op("Executions"), {"first": 100})
    assert started["id"] not in {e["node"]["id"] for e in listed["executions"]["edges"]}

    sub = Subscription(ws_url(server), other_tenant.admin)
    await sub.connect()
    await sub.start(op("ExecutionUpdates"), {"id": started["id"]})
    msg = await sub.next()
    await sub.close()
    assert msg["type"] in ("next", "error")
    errors = msg["payload"]["errors"] if msg["type"] == "next" else msg["payload"]
    assert errors[0]["extensions"]["code"] == "NOT_FOUND"
    assert (await wait_terminal(client, started["id"]))["status"] == "COMPLETED"


async def test_templates_connection_and_template_lookup(client: GraphQLClient) -> None:
    page = await client.data(op("Templates"), {"first": 10})
    names = [e["node"]["name"] for e in page["templates"]["edges"]]
    assert "order-summary" in names
    by_name = (await client.data(op("Template"), {"name": "order-summary"}))["template"]
    assert [s["id"] for s in by_name["steps"]] == ["normalize", "hold", "totals"]
    assert by_name["parametersSchema"]["required"] == ["customer", "items"]
    by_id = (await client.data(op("Template"), {"id": by_name["id"]}))["template"]
    assert by_id == by_name
    # The example params are valid: starting with them runs to completion.
    started = await start(client, {**by_name["exampleParams"], "wait_seconds": 0})
    assert (await wait_terminal(client, started["id"]))["status"] == "COMPLETED"


async def test_executions_pagination_and_status_filter(client: GraphQLClient) -> None:
    ids = [(await start(client, {**ORDER, "wait_seconds": 0}))["id"] for _ in range(3)]
    for i in ids:
        await wait_terminal(client, i)
    seen: list[str] = []
    after = None
    while True:
        page = (await client.data(op("Executions"), {"first": 2, "after": after}))["executions"]
        seen += [e["node"]["id"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen[:3] == list(reversed(ids))  # newest first
    assert len(seen) == len(set(seen))
    failed = await client.data(op("Executions"), {"first": 50, "filter": {"status": ["FAILED"]}})
    assert all(e["node"]["status"] == "FAILED" for e in failed["executions"]["edges"])


async def test_estimated_finish_comes_from_past_runs(client: GraphQLClient) -> None:
    for _ in range(2):  # history for the template (other tests add more)
        done = await start(client, {**ORDER, "wait_seconds": 0})
        await wait_terminal(client, done["id"])
    running = await start(client, {**ORDER, "wait_seconds": 3})
    query = (
        "query($id: ID!) { execution(id: $id) { status startedAt createdAt estimatedFinishAt } }"
    )
    execution = (await client.data(query, {"id": running["id"]}))["execution"]
    assert execution["estimatedFinishAt"] is not None
    assert execution["estimatedFinishAt"] > execution["createdAt"]
    await wait_terminal(client, running["id"])
    finished = (await client.data(query, {"id": running["id"]}))["execution"]
    assert finished["estimatedFinishAt"] is None
