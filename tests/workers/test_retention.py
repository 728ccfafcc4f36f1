"""Retention purges run beside the reconciler and must never stand in its way: a DELETE
waiting on rows another session holds gives up after its timeout, is counted, and the round
still finishes lost executions; the next round deletes what was left."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select
from temporalio.client import Client

from app.events.bus import EventBus
from app.executions.reconciler import Reconciler
from app.models import Execution, Notification
from app.models.idempotency import StepIdempotency
from app.notifications.service import NotificationService
from app.settings import Settings
from app.steps import idempotency
from app.tenants.service import TenantService
from tests.api.test_enhancement_metrics import new_execution
from tests.conftest import make_tenant

OLD = timedelta(days=400)


@pytest.fixture
async def bus(settings: Settings) -> AsyncIterator[EventBus]:
    events = EventBus(settings.redis_url or "")
    await events.start()
    yield events
    await events.close()


def failures(job: str) -> float:
    return REGISTRY.get_sample_value("wfs_upkeep_failures_total", {"job": job}) or 0.0


async def new_tenant_id(sessions: Any) -> uuid.UUID:
    keys = await make_tenant(sessions, "free")
    async with sessions() as session:
        return (await TenantService(session).get_by_name(keys.name)).id


async def test_a_stuck_notification_purge_does_not_stop_the_round(
    sessions: Any, settings: Settings, bus: EventBus
) -> None:
    tid = await new_tenant_id(sessions)
    async with sessions() as session:
        await NotificationService(session).add(
            tid, "PUBLISHED", {"old": True}, at=datetime.now(UTC) - OLD
        )
        await session.commit()
    lost = await new_execution(sessions)  # RUNNING, no workflow behind it
    temporal = await Client.connect(settings.temporal_address or "")
    reconciler = Reconciler(
        sessions, temporal, bus, settings, grace_seconds=0, purge_timeout_seconds=0.2
    )
    before = failures("notifications.purge")
    finished: list[uuid.UUID] = []
    async with sessions() as holder:  # another session holds the old row the purge deletes
        await holder.execute(
            select(Notification).where(Notification.tenant_id == tid).with_for_update()
        )
        async with asyncio.timeout(120):  # unbounded before: the DELETE waited on the lock
            for _ in range(20):  # a busy test database may hold more open rows than a round
                finished += await reconciler.run_round()
                if lost in finished:
                    break
        await holder.rollback()
    assert lost in finished
    assert failures("notifications.purge") > before
    async with sessions() as session:
        assert (await session.get(Execution, lost)).status == "FAILED"  # type: ignore[union-attr]
        assert await NotificationService(session).read_after(tid, 0)  # still there
    assert await reconciler.purge_notifications() >= 1  # the lock is gone: the next one works
    async with sessions() as session:
        assert await NotificationService(session).read_after(tid, 0) == []


async def test_old_step_records_are_purged_and_a_stuck_purge_gives_up(sessions: Any) -> None:
    tid = await new_tenant_id(sessions)
    now = datetime.now(UTC)
    old, recent = f"test:{uuid.uuid4()}:old", f"test:{uuid.uuid4()}:recent"
    async with sessions() as session:
        session.add(StepIdempotency(key=old, tenant_id=tid, result={}, created_at=now - OLD))
        session.add(StepIdempotency(key=recent, tenant_id=tid, result={}, created_at=now))
        await session.commit()
    before = failures("step_idempotency.purge")
    async with sessions() as holder:
        await holder.execute(
            select(StepIdempotency).where(StepIdempotency.key == old).with_for_update()
        )
        async with asyncio.timeout(60):
            assert await idempotency.purge(sessions, 30, timeout_seconds=0.2) == 0
        await holder.rollback()
    assert failures("step_idempotency.purge") == before + 1
    assert await idempotency.purge(sessions, 30) >= 1
    assert await idempotency.recall(sessions, old) is None
    assert (await idempotency.recall(sessions, recent)) is not None
