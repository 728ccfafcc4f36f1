"""The tenant's notification log over real WebSockets: executions ending, AI budget warnings and
`events.publish` messages arrive once and in seq order, resume with afterSeq after a dropped
socket, filter by type, stay within the tenant, and survive a Redis restart."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from app.ai.budget import BudgetLedger, BudgetNotices
from app.api.relay import from_global_id
from app.models import Execution as ExecutionModel
from app.notifications.service import NotificationService
from app.settings import Settings
from app.templates.service import TemplateService
from app.tenants.service import TenantService
from tests.conftest import TenantKeys, make_tenant
from tests.support import GraphQLClient, Subscription

OPS = Path(__file__).resolve().parents[2] / "graphql" / "operations"
ORDER = {"customer": "Ada", "items": [{"sku": "n-1", "qty": 1, "price": 3}], "wait_seconds": 0}
BROKEN = {
    "name": "notify-broken",
    "title": "Sort by a field that is not comparable",
    "parameters": {"type": "object", "properties": {"rows": {"type": "array"}}},
    "steps": [
        {
            "id": "sort",
            "activity": "data.transform",
            "input": {"data": "{{ params.rows }}", "ops": [{"op": "sort", "by": "v"}]},
        }
    ],
}


def op(name: str) -> str:
    return (OPS / f"{name}.graphql").read_text()


def ws_url(base: str) -> str:
    return base.replace("http://", "ws://") + "/graphql"


async def start(client: GraphQLClient, name: str = "order-summary", **params: Any) -> str:
    data = await client.data(
        op("StartExecution"), {"input": {"templateName": name, "params": params or ORDER}}
    )
    assert data["startExecution"]["__typename"] == "Execution", data
    return str(data["startExecution"]["id"])


async def wait_status(client: GraphQLClient, execution_id: str, *statuses: str) -> None:
    async with asyncio.timeout(60):
        while (await client.data(op("Execution"), {"id": execution_id}))["execution"][
            "status"
        ] not in statuses:
            await asyncio.sleep(0.2)


async def subscribe(
    base: str, key: str, after_seq: int | None = 0, types: list[str] | None = None
) -> Subscription:
    sub = Subscription(ws_url(base), key)
    await sub.connect()
    await sub.start(op("Notifications"), {"afterSeq": after_seq, "types": types})
    return sub


async def receive(sub: Subscription, count: int) -> list[dict[str, Any]]:
    items = []
    for _ in range(count):
        msg = await sub.next(timeout=60)
        assert msg["type"] == "next" and "errors" not in msg["payload"], msg
        items.append(msg["payload"]["data"]["notifications"])
    return items


async def assert_quiet(sub: Subscription, seconds: float = 2.5) -> None:
    """Nothing more arrives (the 1 s poll re-read included)."""
    with pytest.raises(TimeoutError):
        await sub.next(timeout=seconds)


async def history(client: GraphQLClient, **variables: Any) -> list[dict[str, Any]]:
    data = await client.data(op("NotificationHistory"), {"first": 100, **variables})
    return [edge["node"] for edge in data["notifications"]["edges"]]


async def tenant_id(sessions: Any, keys: TenantKeys) -> uuid.UUID:
    async with sessions() as session:
        return (await TenantService(session).get_by_name(keys.name)).id


async def test_executions_and_publish_notify_once_in_order(
    server: str, tenant: TenantKeys, other_tenant: TenantKeys, sessions: Any
) -> None:
    async with sessions() as session:
        owner = await TenantService(session).get_by_name(tenant.name)
        await TemplateService(session).publish(BROKEN, tenant_id=owner.id, visibility="PRIVATE")
        await session.commit()
    client = GraphQLClient(server, tenant.admin)
    everything = await subscribe(server, tenant.viewer)  # viewers may listen
    failures = await subscribe(server, tenant.admin, types=["EXECUTION_FAILED"])
    others = await subscribe(server, other_tenant.admin)

    completed = await start(client)
    await wait_status(client, completed, "COMPLETED")
    failed = await start(client, "notify-broken", rows=[{"v": 1}, {"v": "a"}])
    await wait_status(client, failed, "FAILED")
    cancelled = await start(client, **{**ORDER, "wait_seconds": 60})
    await wait_status(client, cancelled, "RUNNING")
    body = await client.raw(
        "mutation($id: ID!) { cancelExecution(id: $id) { __typename } }", {"id": cancelled}
    )
    assert body["data"]["cancelExecution"]["__typename"] == "Execution", body
    await wait_status(client, cancelled, "CANCELLED")
    published = await start(
        client, "notification", message="Export ready", subject="Export", channels=["in_app"]
    )
    await wait_status(client, published, "COMPLETED")

    items = await receive(everything, 5)
    await assert_quiet(everything)
    assert [n["seq"] for n in items] == [1, 2, 3, 4, 5]
    assert [(n["type"], n["execution"]["id"]) for n in items] == [
        ("EXECUTION_COMPLETED", completed),
        ("EXECUTION_FAILED", failed),
        ("EXECUTION_CANCELLED", cancelled),
        ("PUBLISHED", published),
        ("EXECUTION_COMPLETED", published),
    ]
    assert [n["data"]["status"] for n in items if n["type"].startswith("EXECUTION_")] == [
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "COMPLETED",
    ]
    assert "step sort (data.transform) failed" in items[1]["data"]["error"], items[1]["data"]
    for item in items:  # the template's id, as template(id:) takes it
        if item["type"].startswith("EXECUTION_"):
            ran = await client.data(
                "query($id: ID!) { execution(id: $id) { template { id } } }",
                {"id": item["execution"]["id"]},
            )
            assert item["data"]["templateId"] == ran["execution"]["template"]["id"], item
    assert items[1]["execution"]["status"] == "FAILED"
    assert items[3]["data"]["channel"] == "notifications"
    assert items[3]["data"]["stepId"] == "in_app"
    assert items[3]["data"]["data"] == {
        "subject": "Export",
        "message": "Export ready",
        "severity": "info",
    }
    assert items[3]["execution"]["template"]["name"] == "notification"

    only_failed = await receive(failures, 1)
    assert [(n["seq"], n["type"]) for n in only_failed] == [(2, "EXECUTION_FAILED")]
    await assert_quiet(failures, 1.5)
    await assert_quiet(others, 0.5)
    for sub in (everything, failures, others):
        await sub.close()

    # The history: newest first, paged by cursor, filtered by type; nothing of other tenants.
    assert [n["seq"] for n in await history(client)] == [5, 4, 3, 2, 1]
    page = await client.data(op("NotificationHistory"), {"first": 2})
    assert [e["node"]["seq"] for e in page["notifications"]["edges"]] == [5, 4]
    rest = await history(client, after=page["notifications"]["pageInfo"]["endCursor"])
    assert [n["seq"] for n in rest] == [3, 2, 1]
    cancels = await history(client, types=["EXECUTION_CANCELLED"])
    assert [(n["seq"], n["execution"]["id"]) for n in cancels] == [(3, cancelled)]
    assert await history(GraphQLClient(server, other_tenant.admin)) == []

    # The webhooks' interface reads the same rows.
    async with sessions() as session:
        rows = await NotificationService(session).read_after(await tenant_id(sessions, tenant), 3)
    assert [(r.seq, r.type) for r in rows] == [(4, "PUBLISHED"), (5, "EXECUTION_COMPLETED")]


async def test_resume_after_a_dropped_socket_loses_and_repeats_nothing(
    server: str, tenant: TenantKeys
) -> None:
    client = GraphQLClient(server, tenant.admin)
    sub = await subscribe(server, tenant.admin)
    ids = [await start(client, **{**ORDER, "wait_seconds": 0.3 * i}) for i in range(6)]
    first = await receive(sub, 2)
    sub.ws.transport.abort()  # the socket drops, no close handshake
    # Executions finish while nobody listens; then the client resumes after what it saw.
    for execution_id in ids:
        await wait_status(client, execution_id, "COMPLETED")
    resumed = await subscribe(server, tenant.admin, after_seq=first[-1]["seq"])
    rest = await receive(resumed, 4)
    await assert_quiet(resumed)
    await resumed.close()
    seen = first + rest
    assert [n["seq"] for n in seen] == [1, 2, 3, 4, 5, 6]
    assert sorted(n["execution"]["id"] for n in seen) == sorted(ids)
    assert {n["type"] for n in seen} == {"EXECUTION_COMPLETED"}


async def test_without_after_seq_only_new_notifications_come(
    server: str, tenant: TenantKeys
) -> None:
    client = GraphQLClient(server, tenant.admin)
    old = await start(client)
    await wait_status(client, old, "COMPLETED")
    sub = await subscribe(server, tenant.admin, after_seq=None)
    new = await start(client)
    (item,) = await receive(sub, 1)
    await sub.close()
    assert (item["seq"], item["execution"]["id"]) == (2, new)


async def test_unknown_cursor_is_a_validation_error(server: str, tenant: TenantKeys) -> None:
    body = await GraphQLClient(server, tenant.admin).raw(
        op("NotificationHistory"), {"first": 5, "after": "bm9wZQ"}
    )
    assert body["errors"][0]["extensions"]["code"] == "VALIDATION_FAILED", body


async def test_budget_threshold_and_exhaustion_notify_once_each(
    server: str, tenant: TenantKeys, sessions: Any, settings: Settings
) -> None:
    assert settings.redis_url
    redis = aioredis.from_url(settings.redis_url)
    ledger = BudgetLedger(redis, soft_threshold=0.8, notices=BudgetNotices(sessions, redis))
    tid = str(await tenant_id(sessions, tenant))
    sub = await subscribe(server, tenant.admin)
    now, limit = datetime(2031, 3, 14, tzinfo=UTC), Decimal("1.00")
    try:
        for amount in (Decimal("0.5"), Decimal("0.4")):  # 90%: past the soft threshold
            reservation = await ledger.reserve(tid, amount, limit, now=now)
            assert reservation is not None
            await ledger.settle(reservation, amount, now=now)
        # Refused, but $0.10 is left: a big estimate is not exhaustion (told nothing).
        assert await ledger.reserve(tid, Decimal("0.2"), limit, now=now) is None
        reservation = await ledger.reserve(tid, Decimal("0.1"), limit, now=now)
        assert reservation is not None
        await ledger.settle(reservation, Decimal("0.1"), now=now)  # spent = limit: exhausted
        assert await ledger.reserve(tid, Decimal("0.2"), limit, now=now) is None  # told once
        # Next month: one call's settled cost reaches the limit, past both at once.
        later = datetime(2031, 4, 2, tzinfo=UTC)
        reservation = await ledger.reserve(tid, Decimal("0.1"), limit, now=later)
        assert reservation is not None
        await ledger.settle(reservation, Decimal("1.2"), now=later)
        items = await receive(sub, 4)
        await assert_quiet(sub)
    finally:
        await sub.close()
        await redis.aclose()
    assert [(n["seq"], n["type"], n["execution"]) for n in items] == [
        (1, "BUDGET_THRESHOLD", None),
        (2, "BUDGET_EXHAUSTED", None),
        (3, "BUDGET_THRESHOLD", None),
        (4, "BUDGET_EXHAUSTED", None),
    ]
    assert items[0]["data"] == {"month": "2031-03", "limitUsd": "1.00", "spentUsd": "0.900000"}
    assert items[1]["data"] == {"month": "2031-03", "limitUsd": "1.00", "spentUsd": "1.000000"}
    assert items[3]["data"] == {"month": "2031-04", "limitUsd": "1.00", "spentUsd": "1.200000"}


async def test_notifications_survive_a_redis_restart(restartable: Any, sessions: Any) -> None:
    base, valkey = restartable
    keys = await make_tenant(sessions, "pro")
    client = GraphQLClient(base, keys.admin)
    sub = await subscribe(base, keys.admin)
    before = await start(client)
    (first,) = await receive(sub, 1)
    during = await start(client, **{**ORDER, "wait_seconds": 3})
    # Redis goes away while the second execution runs: its end's wake-up is never published,
    # and polling (60 s here) cannot be what brings it.
    port = valkey.port
    await asyncio.to_thread(valkey.stop)
    pk = from_global_id(during, "Execution")[1]
    async with asyncio.timeout(60):  # it ends while Redis is away (read from PostgreSQL)
        while True:
            async with sessions() as session:
                if (await session.get(ExecutionModel, pk)).status == "COMPLETED":
                    break
            await asyncio.sleep(0.2)
    await asyncio.to_thread(valkey.start)
    assert valkey.port == port
    (second,) = await receive(sub, 1)
    await sub.close()
    await wait_status(client, during, "COMPLETED")
    assert [(n["seq"], n["execution"]["id"]) for n in (first, second)] == [
        (1, before),
        (2, during),
    ]


async def test_concurrent_writers_never_make_a_reader_skip(sessions: Any) -> None:
    """Writers of one tenant commit in any order and at any pace; a reader polling
    `read_after(last)` always gets the next seqs, contiguous: none is committed out of order."""
    keys = await make_tenant(sessions, "free")
    tid = await tenant_id(sessions, keys)
    writers = 12

    async def write(i: int) -> int:
        async with sessions() as session:
            seq = await NotificationService(session).add(tid, "PUBLISHED", {"i": i})
            await asyncio.sleep(0.01 * (i % 4))  # hold the transaction open a little
            await session.commit()
            return seq

    async def read() -> list[int]:
        seen: list[int] = []
        async with asyncio.timeout(30):
            while len(seen) < writers:
                async with sessions() as session:
                    rows = await NotificationService(session).read_after(
                        tid, seen[-1] if seen else 0
                    )
                got = [r.seq for r in rows]
                assert got == list(range(len(seen) + 1, len(seen) + 1 + len(got))), (seen, got)
                seen += got
                await asyncio.sleep(0)
        return seen

    reader = asyncio.create_task(read())
    seqs = await asyncio.gather(*(write(i) for i in range(writers)))
    assert sorted(seqs) == list(range(1, writers + 1))
    assert await reader == list(range(1, writers + 1))


async def test_retention_deletes_old_notifications_and_seqs_go_on(sessions: Any) -> None:
    keys = await make_tenant(sessions, "free")
    tid = await tenant_id(sessions, keys)
    now = datetime.now(UTC)
    async with sessions() as session:
        service = NotificationService(session)
        for days in (45, 31, 2):
            await service.add(tid, "PUBLISHED", {"days": days}, at=now - timedelta(days=days))
        await session.commit()
    async with sessions() as session:
        assert await NotificationService(session).purge(30, now=now) >= 2
        await session.commit()
    async with sessions() as session:
        service = NotificationService(session)
        assert [(r.seq, r.data) for r in await service.read_after(tid, 0)] == [(3, {"days": 2})]
        assert await service.add(tid, "PUBLISHED", {"days": 0}) == 4  # the counter stays
        await session.rollback()


async def test_oversized_data_is_replaced_by_its_size(sessions: Any) -> None:
    keys = await make_tenant(sessions, "free")
    tid = await tenant_id(sessions, keys)
    async with sessions() as session:
        service = NotificationService(session)
        await service.add(tid, "PUBLISHED", {"text": "x" * 20_000, "bad": float("nan")})
        await service.add(tid, "PUBLISHED", {"bad": float("nan"), "nul": "a\x00b"})
        await session.commit()
        big, odd = await service.read_after(tid, 0)
    assert big.data == {"truncated": True, "bytes": 20_022}
    assert odd.data == {"bad": None, "nul": "a\ufffdb"}
