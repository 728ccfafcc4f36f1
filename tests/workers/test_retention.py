"""Retention purges run beside the reconciler and must never stand in its way: a DELETE
waiting on rows another session holds gives up after its timeout, is counted, and the round
still finishes lost executions; the next round deletes what was left. SLA breaches go by when
they ended, and an open rate breach stays."""

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
from app.models import Execution, Notification, SlaBreach
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


async def breach_rows(sessions: Any, now: datetime) -> dict[str, int]:
    """Breaches of one run's tenant and template, by name: which ones the retention keeps."""
    run, still_running = await new_execution(sessions), await new_execution(sessions)
    async with sessions() as session:
        execution = await session.get(Execution, run)
        assert execution is not None
        execution.status = "COMPLETED"
        days = lambda n: now - timedelta(days=n)  # noqa: E731
        owner = {"tenant_id": execution.tenant_id, "template_id": execution.template_id}
        rate = {"kind": "SUCCESS_RATE", "observed": 0.5, "target": 0.9, "runs": 10}
        rows = {
            "old_duration": SlaBreach(
                **owner,
                kind="DURATION",
                execution_id=run,
                observed=9,
                target=1,
                started_at=days(401),
            ),
            # Its run still RUNNING after 401 days: deleted, the next round would record it
            # (and notify) again.
            "open_run_duration": SlaBreach(
                **owner,
                kind="DURATION",
                execution_id=still_running,
                observed=9,
                target=1,
                started_at=days(401),
            ),
            "old_unlinked_duration": SlaBreach(
                **owner, kind="DURATION", observed=9, target=1, started_at=days(401)
            ),
            "recent_duration": SlaBreach(
                **owner, kind="DURATION", observed=9, target=1, started_at=days(399)
            ),
            # Ended before the cutoff: gone. Started long ago but ended inside it: a 366-day
            # report overlaps it, so it stays; still open: it stays (it stops renotifying).
            "old_rate": SlaBreach(**owner, **rate, started_at=days(600), ended_at=days(401)),
            "ended_recently": SlaBreach(**owner, **rate, started_at=days(600), ended_at=days(2)),
            "open_rate": SlaBreach(**owner, **rate, started_at=days(600)),
        }
        session.add_all(rows.values())
        await session.commit()
        return {name: row.id for name, row in rows.items()}


async def surviving(sessions: Any, ids: dict[str, int]) -> set[str]:
    async with sessions() as session:
        kept = set(
            await session.scalars(select(SlaBreach.id).where(SlaBreach.id.in_(ids.values())))
        )
    return {name for name, id_ in ids.items() if id_ in kept}


async def test_sla_breaches_past_retention_are_purged_by_the_round_and_a_stuck_purge_gives_up(
    sessions: Any, settings: Settings, bus: EventBus
) -> None:
    assert settings.sla_breach_retention_days == 400
    ids = await breach_rows(sessions, datetime.now(UTC))
    temporal = await Client.connect(settings.temporal_address or "")
    reconciler = Reconciler(
        sessions, temporal, bus, settings, grace_seconds=0, purge_timeout_seconds=0.2
    )
    before = failures("sla_breaches.purge")
    async with sessions() as holder:  # another session holds the old rows the purge deletes
        await holder.execute(
            select(SlaBreach).where(SlaBreach.id == ids["old_rate"]).with_for_update()
        )
        async with asyncio.timeout(60):
            assert await reconciler.purge_sla_breaches() == 0
        await holder.rollback()
    assert failures("sla_breaches.purge") == before + 1
    assert await surviving(sessions, ids) == set(ids)

    async with asyncio.timeout(120):
        await reconciler.run_round()  # the round's upkeep deletes them
    assert await surviving(sessions, ids) == {
        "open_run_duration",
        "recent_duration",
        "ended_recently",
        "open_rate",
    }


def test_sla_breach_retention_covers_the_longest_report_window() -> None:
    assert Settings(sla_breach_retention_days=366).sla_breach_retention_days == 366
    with pytest.raises(ValueError, match="366"):
        Settings(sla_breach_retention_days=365)
