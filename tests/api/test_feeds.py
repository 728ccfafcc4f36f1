"""The dashboard subscriptions over real WebSockets: `executionsFeed` (per tenant, in order,
resumable by time, through a Redis restart) and `queueStatus` (Temporal pollers and backlog,
the tenant's counts matching PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from app.executions.feed import OVERLAP
from app.settings import Settings
from tests.conftest import TenantKeys, make_tenant
from tests.support import GraphQLClient, Subscription

OPS = Path(__file__).resolve().parents[2] / "graphql" / "operations"
ORDER = {"customer": "Feed", "items": [{"sku": "f-1", "qty": 1, "price": 2}], "wait_seconds": 0}
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}


def op(name: str) -> str:
    return (OPS / f"{name}.graphql").read_text()


def ws_url(base: str) -> str:
    return base.replace("http://", "ws://") + "/graphql"


async def start(client: GraphQLClient, **params: Any) -> str:
    data = await client.data(
        op("StartExecution"),
        {"input": {"templateName": "order-summary", "params": {**ORDER, **params}}},
    )
    assert data["startExecution"]["__typename"] == "Execution", data
    return str(data["startExecution"]["id"])


async def events_of(client: GraphQLClient, execution_id: str) -> list[dict[str, Any]]:
    return list((await client.data(op("Execution"), {"id": execution_id}))["execution"]["events"])


async def wait_terminal(client: GraphQLClient, execution_id: str) -> list[dict[str, Any]]:
    async with asyncio.timeout(60):
        while True:
            execution = (await client.data(op("Execution"), {"id": execution_id}))["execution"]
            if execution["status"] in TERMINAL:
                return list(execution["events"])
            await asyncio.sleep(0.2)


async def feed(base: str, key: str, since: str | None = None) -> Subscription:
    sub = Subscription(ws_url(base), key)
    await sub.connect()
    await sub.start(op("ExecutionsFeed"), {"since": since})
    return sub


async def read_until_terminal(
    sub: Subscription, ids: set[str], first: int = 0
) -> list[dict[str, Any]]:
    """Feed items until each of `ids` has sent its terminal event (and at least `first` items)."""
    items: list[dict[str, Any]] = []
    done: set[str] = set()
    while not ids <= done or len(items) < first:
        msg = await sub.next(timeout=60)
        assert msg["type"] == "next" and "errors" not in msg["payload"], msg
        item = msg["payload"]["data"]["executionsFeed"]
        items.append(item)
        if item["event"]["type"] in TERMINAL:
            done.add(item["execution"]["id"])
    return items


async def assert_quiet(sub: Subscription, seconds: float = 1.5) -> None:
    """Nothing more arrives (a poll-interval re-read included)."""
    with pytest.raises(TimeoutError):
        await sub.next(timeout=seconds)


def seqs_of(items: list[dict[str, Any]], execution_id: str) -> list[int]:
    return [i["event"]["seq"] for i in items if i["execution"]["id"] == execution_id]


def when(at: str) -> datetime:
    return datetime.fromisoformat(at)


async def test_feed_streams_each_tenants_own_events_in_order(
    server: str, tenant: TenantKeys, other_tenant: TenantKeys
) -> None:
    mine, theirs = await feed(server, tenant.viewer), await feed(server, other_tenant.viewer)
    a = await start(GraphQLClient(server, tenant.operator), wait_seconds=0.5)
    b = await start(GraphQLClient(server, other_tenant.operator), wait_seconds=0.5)
    items_a = await read_until_terminal(mine, {a})
    items_b = await read_until_terminal(theirs, {b})
    await assert_quiet(mine)
    await mine.close()
    await theirs.close()

    assert {i["execution"]["id"] for i in items_a} == {a}
    assert {i["execution"]["id"] for i in items_b} == {b}
    for items, execution_id in ((items_a, a), (items_b, b)):
        assert seqs_of(items, execution_id) == list(range(1, len(items) + 1))
        assert items[0]["event"]["type"] == "CREATED"
        assert items[-1]["event"]["type"] == "COMPLETED"
        assert items[-1]["execution"]["status"] == "COMPLETED"
        assert items[-1]["execution"]["progress"] == 100.0
        assert {i["execution"]["template"]["name"] for i in items} == {"order-summary"}
    types = [i["event"]["type"] for i in items_a]
    assert types.count("STEP_COMPLETED") == 3 and "STARTED" in types


async def test_since_replays_postgres_in_feed_order_then_goes_live(
    server: str, tenant: TenantKeys
) -> None:
    client = GraphQLClient(server, tenant.operator)
    first = await start(client)
    first_events = await wait_terminal(client, first)
    second = await start(client)
    second_events = await wait_terminal(client, second)

    # since - OVERLAP is exactly the first execution's last event: none of it, all of the second.
    sub = await feed(
        server, tenant.viewer, since=(when(first_events[-1]["at"]) + OVERLAP).isoformat()
    )
    replayed = await read_until_terminal(sub, {second}, first=len(second_events))
    assert [(i["execution"]["id"], i["event"]["seq"]) for i in replayed] == [
        (second, e["seq"]) for e in second_events
    ]
    assert [when(i["event"]["at"]) for i in replayed] == sorted(
        when(i["event"]["at"]) for i in replayed
    )

    third = await start(client)
    live = await read_until_terminal(sub, {third})
    await sub.close()
    assert seqs_of(live, third) == list(range(1, len(live) + 1))
    assert not {first, second} & {i["execution"]["id"] for i in live}


async def test_resuming_with_the_last_at_loses_nothing(server: str, tenant: TenantKeys) -> None:
    client = GraphQLClient(server, tenant.operator)
    first_sub = await feed(server, tenant.viewer)
    execution_id = await start(client, wait_seconds=1.5)
    seen = await read_until_terminal(first_sub, set(), first=3)
    await first_sub.close()  # the client drops mid-execution

    since = seen[-1]["event"]["at"]
    again = await feed(server, tenant.viewer, since=since)
    rest = await read_until_terminal(again, {execution_id})
    await again.close()
    keys = [(i["execution"]["id"], i["event"]["seq"]) for i in seen + rest]
    assert sorted(set(keys)) == [(execution_id, n) for n in range(1, len(set(keys)) + 1)]
    assert rest[-1]["event"]["type"] == "COMPLETED"
    # Only events of the stated overlap before `since` come again.
    repeated = [i for i in rest if (i["execution"]["id"], i["event"]["seq"]) in keys[: len(seen)]]
    assert all(when(i["event"]["at"]) > when(since) - OVERLAP for i in repeated)


async def test_since_older_than_a_day_is_refused(server: str, tenant: TenantKeys) -> None:
    sub = await feed(server, tenant.viewer, since="2020-01-01T00:00:00+00:00")
    msg = await sub.next()
    await sub.close()
    errors = msg["payload"]["errors"] if msg["type"] == "next" else msg["payload"]
    assert errors[0]["extensions"]["code"] == "VALIDATION_FAILED", msg


async def test_feed_survives_redis_restart(restartable, sessions) -> None:  # type: ignore[no-untyped-def]
    base, valkey = restartable
    keys = await make_tenant(sessions, "premium")
    sub = await feed(base, keys.viewer)
    execution_id = await start(GraphQLClient(base, keys.operator), wait_seconds=4)
    seen: list[dict[str, Any]] = []
    while not any(
        i["event"]["type"] == "STEP_STARTED" and i["event"]["stepId"] == "hold" for i in seen
    ):
        seen += await read_until_terminal(sub, set(), first=1)

    # Redis goes away while the timer runs; events recorded meanwhile are never published.
    await asyncio.to_thread(valkey.stop)
    await asyncio.sleep(5)
    await asyncio.to_thread(valkey.start)

    seen += await read_until_terminal(sub, {execution_id})
    await sub.close()
    assert seqs_of(seen, execution_id) == list(range(1, len(seen) + 1))
    assert seen[-1]["event"]["type"] == "COMPLETED"
    assert [i["event"]["type"] for i in seen].count("STEP_COMPLETED") == 3


async def tenant_counts(sessions, tenant_name: str) -> dict[str, int]:  # type: ignore[no-untyped-def]
    async with sessions() as session:
        rows = await session.execute(
            text(
                "SELECT e.status, count(*) FROM executions e JOIN tenants t ON t.id = e.tenant_id "
                "WHERE t.name = :name AND e.status IN ('PENDING', 'RUNNING') GROUP BY e.status"
            ),
            {"name": tenant_name},
        )
        return {"PENDING": 0, "RUNNING": 0} | {status: int(n) for status, n in rows}


async def test_queue_status_reports_pollers_backlog_and_tenant_counts(
    server: str, tenant: TenantKeys, settings: Settings, sessions
) -> None:  # type: ignore[no-untyped-def]
    client = GraphQLClient(server, tenant.operator)
    sub = Subscription(ws_url(server), tenant.viewer)
    await sub.connect()
    await sub.start(op("QueueStatus"), {"intervalSeconds": 1})
    execution_id = await start(client, wait_seconds=5)
    updates: list[dict[str, dict[str, Any]]] = []
    matched = False
    while len(updates) < 2 or not matched:
        msg = await sub.next(timeout=15)
        assert msg["type"] == "next" and "errors" not in msg["payload"], msg
        update = {q["purpose"]: q for q in msg["payload"]["data"]["queueStatus"]}
        counts = await tenant_counts(sessions, tenant.name)  # right after, so they agree
        main = update["WORKFLOWS"]
        matched |= main["running"] == 1 and (main["running"], main["pending"]) == (
            counts["RUNNING"],
            counts["PENDING"],
        )
        updates.append(update)
        assert len(updates) < 12, updates  # running for 5 s, so some update must see it
    await sub.close()

    times = [when(u["WORKFLOWS"]["at"]) for u in updates]
    assert times == sorted(set(times))  # one snapshot per tick, in order
    for update in updates:
        main, ai, hooks = update["WORKFLOWS"], update["AI"], update["WEBHOOKS"]
        assert (main["name"], ai["name"], hooks["name"]) == (
            settings.temporal_task_queue,
            settings.ai_task_queue,
            settings.webhook_task_queue,
        )
        assert hooks["workflowTasks"]["pollers"] >= 1  # the webhook worker's deliveries
        assert hooks["running"] is None and hooks["pending"] is None
        assert main["pollers"] >= 1
        assert main["workflowTasks"]["pollers"] >= 1 and main["activityTasks"]["pollers"] >= 1
        assert ai["activityTasks"]["pollers"] >= 1  # the AI worker polls activities only
        # This dev server reports backlog counts (0 is a count, not unknown).
        assert isinstance(main["backlog"], int) and isinstance(ai["backlog"], int)
        assert ai["running"] is None and ai["pending"] is None
    assert (await wait_terminal(client, execution_id))[-1]["type"] == "COMPLETED"


@pytest.mark.parametrize("interval", [0, 61])
async def test_queue_status_interval_is_checked(
    server: str, tenant: TenantKeys, interval: int
) -> None:
    sub = Subscription(ws_url(server), tenant.viewer)
    await sub.connect()
    await sub.start(op("QueueStatus"), {"intervalSeconds": interval})
    msg = await sub.next()
    await sub.close()
    errors = msg["payload"]["errors"] if msg["type"] == "next" else msg["payload"]
    assert errors[0]["extensions"]["code"] == "VALIDATION_FAILED", msg
