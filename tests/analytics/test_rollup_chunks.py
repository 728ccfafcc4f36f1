"""The analytics and SLA rollups catch up in committed chunks (ROLLUP_CHUNK_DAYS per
transaction), in a database of their own (a first fill needs a rollup never refreshed): with
ten days of runs and chunks of three days, each refresh advances both states by one chunk;
executionStats and slaReport answer mid-way as they do before and after; a run changed during
the catch-up is picked up by the next chunk (refreshed_from keeps its meaning); the tables end
equal to a one-shot fill; and the activity stops when its budget is used, the next one going on
from the state it committed."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import delete, event, select, update
from temporalio.testing import ActivityEnvironment

from app.analytics.planning_repository import PlanningRepository
from app.analytics.service import RollupRefresh, RollupService, StatsService, stats_scope
from app.analytics.sla import SlaReportService
from app.analytics.workflow_io import RollupInput
from app.db import make_engine, make_sessionmaker
from app.executions.repository import ExecutionCriteria
from app.migrate import upgrade_async
from app.models import (
    Execution,
    ExecutionRollup,
    RollupState,
    SlaRollup,
    SlaRollupState,
    SlaRollupTarget,
    StepUsageRollup,
    Template,
    TemplateCostEstimate,
)
from app.seed import seed_templates
from app.tenants.service import TenantService
from tests.api.test_sla_rollup import TARGETED, seed
from tests.cli.test_migration_0009 import blank_db  # noqa: F401 (fixture)
from tests.conftest import make_tenant
from tests.workers.test_template_graph import publish
from workers.analytics_activities import AnalyticsActivities

TABLES = (ExecutionRollup, StepUsageRollup, SlaRollup)


async def seeded(url: str) -> tuple[Any, Any, uuid.UUID, uuid.UUID]:
    """(engine, sessions, tenant id, template id): a migrated database with DAY_RUNS of a
    template with a duration target on each of the ten days before today."""
    await upgrade_async(url)
    engine = make_engine(url, pool_size=1)
    sessions = make_sessionmaker(engine)
    await seed_templates(sessions)
    keys = await make_tenant(sessions, "pro")
    name = await publish(sessions, keys, TARGETED)
    async with sessions() as s:
        tenant_id = (await TenantService(s).get_by_name(keys.name)).id
        template_id = await s.scalar(select(Template.id).where(Template.name == name))
    assert template_id is not None
    await seed(sessions, tenant_id, name, range(1, 11))
    return engine, sessions, tenant_id, template_id


async def states(sessions: Any) -> tuple[date | None, date | None]:
    """Both rollups' complete_until (None: never refreshed)."""
    async with sessions() as s:
        return (
            await s.scalar(select(RollupState.complete_until)),
            await s.scalar(select(SlaRollupState.complete_until)),
        )


async def answers(sessions: Any, tenant_id: uuid.UUID, template_id: uuid.UUID) -> Any:
    """executionStats by DAY and by STATUS over the twelve days to now, and slaReport."""
    today = datetime.combine(datetime.now(UTC).date(), datetime.min.time(), tzinfo=UTC)
    since, until = today - timedelta(days=12), datetime.now(UTC) + timedelta(hours=1)
    found: list[Any] = []
    async with sessions() as s:
        stats = StatsService(s)
        for group_by in ("DAY", "STATUS"):
            scope = stats_scope(tenant_id, since, until, group_by, ExecutionCriteria())
            report = await stats.execution_stats(scope)
            found.append([(b.key, b.current, b.previous) for b in report.buckets])
        reports = await SlaReportService(s).report(tenant_id, since, until, template_id)
        found.append([(r.target, r.stats) for r in reports])
    return found


async def contents(sessions: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the rollup tables, sorted."""
    found = {}
    async with sessions() as s:
        for table in TABLES:
            rows = (await s.execute(select(table.__table__))).all()
            found[table.__tablename__] = sorted(tuple(map(str, r)) for r in rows)
    return found


async def chunk(sessions: Any, chunk_days: int) -> RollupRefresh:
    """One refresh (one chunk, committed), as it went."""
    async with sessions() as s:
        done = await RollupService(s).refresh(chunk_days)
        await s.commit()
    assert not done.skipped
    return done


async def refresh(sessions: Any, chunk_days: int) -> bool:
    """One refresh (one chunk, committed); whether days are still missing."""
    return (await chunk(sessions, chunk_days)).more


async def test_the_first_fill_goes_chunk_by_chunk_and_ends_as_one_fill(
    blank_db: str,  # noqa: F811
) -> None:
    engine, sessions, tenant_id, template_id = await seeded(blank_db)
    try:
        today = datetime.now(UTC).date()
        first = today - timedelta(days=10)
        before = await answers(sessions, tenant_id, template_id)  # every run from the rows
        assert await refresh(sessions, 3)
        assert await states(sessions) == (first + timedelta(days=3),) * 2
        assert await answers(sessions, tenant_id, template_id) == before
        async with sessions() as s:  # no estimates while a catch-up goes on
            assert await s.scalar(select(TemplateCostEstimate.template_id).limit(1)) is None

        # A run of a day already rolled up ends during the catch-up: the next chunk, which
        # looks for changes since the last one began, rebuilds its day (executionStats shows
        # the change from then on, as after any refresh; the tables end as a one-shot fill's).
        async with sessions() as s:
            opened = await s.scalar(
                select(Execution.id).where(
                    Execution.tenant_id == tenant_id,
                    Execution.status == "PENDING",
                    Execution.created_at
                    < datetime.combine(first + timedelta(days=1), datetime.min.time(), tzinfo=UTC),
                )
            )
            await s.execute(
                update(Execution)
                .where(Execution.id == opened)
                .values(
                    status="COMPLETED",
                    finished_at=Execution.created_at + timedelta(seconds=20),
                    updated_at=datetime.now(UTC),
                )
            )
            await s.commit()
        assert await answers(sessions, tenant_id, template_id) != before
        progress, midway = [], []
        while await refresh(sessions, 3):
            progress.append(await states(sessions))
            midway.append(await answers(sessions, tenant_id, template_id))
        assert progress == [(first + timedelta(days=d),) * 2 for d in (6, 9)]
        assert await states(sessions) == (today, today)
        after = await answers(sessions, tenant_id, template_id)
        assert midway == [after, after]
        chunked = await contents(sessions)
        assert chunked["sla_rollup"] and chunked["execution_rollup"]

        # The same data filled in one go (a chunk longer than the ten days).
        async with sessions() as s:
            for model in (*TABLES, SlaRollupTarget, RollupState, SlaRollupState):
                await s.execute(delete(model))
            await s.commit()
        assert not await refresh(sessions, 1000)
        assert await contents(sessions) == chunked
    finally:
        await engine.dispose()


async def test_the_activity_stops_at_its_budget_and_the_next_goes_on(
    blank_db: str,  # noqa: F811
) -> None:
    engine, sessions, _, _ = await seeded(blank_db)
    try:
        today = datetime.now(UTC).date()
        first = today - timedelta(days=10)
        env = ActivityEnvironment()
        stopped = AnalyticsActivities(sessions, budget=timedelta(0), chunk_days=3)
        done = await env.run(stopped.refresh_rollup, RollupInput())
        assert (done.chunks, done.more, done.days) == (1, True, 3)
        assert done.complete_until == (first + timedelta(days=3)).isoformat()
        assert await states(sessions) == (first + timedelta(days=3),) * 2
        done = await env.run(stopped.refresh_rollup, RollupInput())  # goes on from there
        assert (done.chunks, done.more) == (1, True)
        assert await states(sessions) == (first + timedelta(days=6),) * 2
        beats: list[Any] = []
        env.on_heartbeat = lambda *details: beats.append(details)
        going = AnalyticsActivities(sessions, chunk_days=3)  # the default budget: to the end
        done = await env.run(going.refresh_rollup, RollupInput())
        assert (done.chunks, done.more, done.complete_until) == (2, False, today.isoformat())
        # A heartbeat after each chunk, with how far the rollup got (liveness beats while
        # a chunk runs repeat the latest details).
        reached = [(first + timedelta(days=9)).isoformat(), today.isoformat()]
        assert [b for b in dict.fromkeys(beats) if b] == [(d,) for d in reached]
        assert await states(sessions) == (today, today)
        async with sessions() as s:  # the last chunk computed the estimates
            assert await s.scalar(select(TemplateCostEstimate.template_id).limit(1)) is not None
    finally:
        await engine.dispose()


async def test_changed_days_are_read_once_when_both_rollups_ask_the_same(
    blank_db: str,  # noqa: F811
) -> None:
    engine, sessions, _, _ = await seeded(blank_db)
    asked: list[str] = []

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def record(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        if statement.startswith("SELECT DISTINCT changed.tenant_id, changed.day"):
            asked.append(statement)

    try:
        while await refresh(sessions, 31):
            pass
        asked.clear()
        assert not await refresh(sessions, 31)  # both states alike: one query
        assert len(asked) == 1
        async with sessions() as s:  # the SLA rollup's last refresh began earlier
            await s.execute(
                update(SlaRollupState).values(
                    refreshed_from=SlaRollupState.refreshed_from - timedelta(minutes=1)
                )
            )
            await s.commit()
        asked.clear()
        assert not await refresh(sessions, 31)  # its own `since`: its own query
        assert len(asked) == 2
    finally:
        await engine.dispose()


async def test_days_without_runs_add_no_chunks(blank_db: str) -> None:  # noqa: F811
    engine, sessions, tenant_id, template_id = await seeded(blank_db)
    try:
        async with sessions() as s:  # and runs 60 days before the oldest of those ten days
            name = await s.scalar(select(Template.name).where(Template.id == template_id))
        await seed(sessions, tenant_id, str(name), range(70, 71))
        today = datetime.now(UTC).date()
        assert await refresh(sessions, 3)
        assert await states(sessions) == (today - timedelta(days=67),) * 2
        # The next chunk spans the 57 days without runs and the first 3 with runs.
        assert await refresh(sessions, 3)
        assert await states(sessions) == (today - timedelta(days=7),) * 2
    finally:
        await engine.dispose()


async def estimates_as_of(sessions: Any) -> datetime | None:
    async with sessions() as s:
        return await PlanningRepository(s).estimates_as_of()


async def test_estimates_say_the_moment_they_describe_through_a_catch_up(
    blank_db: str,  # noqa: F811
) -> None:
    """costEstimate's asOf is the moment its estimates describe: none while a first fill goes
    on (not the latest chunk's start), the last chunk's start once it computed them, moved by
    an idle refresh that found them current; and a catch-up of the SLA rollup alone leaves the
    estimates (and their moment) until its last chunk, even with runs changing meanwhile."""
    engine, sessions, tenant_id, _ = await seeded(blank_db)
    try:
        done = await chunk(sessions, 3)
        assert done.more and await estimates_as_of(sessions) is None
        while done.more:
            done = await chunk(sessions, 3)
        assert done.estimates > 0 and await estimates_as_of(sessions) == done.started
        async with sessions() as s:  # the runs look quiet, as an interval later
            await s.execute(update(Execution).values(updated_at=Execution.created_at))
            await s.commit()
        idle = await chunk(sessions, 3)
        assert idle.estimates_kept and idle.estimates == 0
        assert await estimates_as_of(sessions) == idle.started  # still what they describe

        async with sessions() as s:  # the SLA rollup alone goes back nine days
            await s.execute(
                update(SlaRollupState).values(
                    complete_until=SlaRollupState.complete_until - timedelta(days=9)
                )
            )
            await s.commit()
        described = idle.started
        for _ in range(3):
            async with sessions() as s:  # a run changes during every chunk
                await s.execute(
                    update(Execution)
                    .where(Execution.tenant_id == tenant_id)
                    .values(updated_at=datetime.now(UTC))
                )
                await s.commit()
            done = await chunk(sessions, 3)
            if not done.more:
                break
            assert done.estimates == 0 and await estimates_as_of(sessions) == described
        assert not done.more and done.estimates > 0
        assert await estimates_as_of(sessions) == done.started
    finally:
        await engine.dispose()
