"""The SLA rollup (app/analytics/sla_rollup.py) answers `slaReport` as reading every row does:
whole days from the rollup, the rest from the rows, for windows with partial edge days, runs
still open past their target, a run that ends after its day was rolled up, and an override
set, changed and cleared (at once, by falling back to the rows, and again from the rollup
after the refresh); the breaches page agrees page by page. And SQL treats an override that no
longer validates as no target, as Python does."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, time, timedelta
from typing import Any

from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from app.analytics.sla import SlaReportService
from app.analytics.sla_repository import SlaReportRepository, Span
from app.analytics.sla_rollup import SlaFigures
from app.analytics.sla_rollup_repository import SlaRollupRepository
from app.models import Execution, SlaRollupTarget, Template, TemplateVersion, Tenant
from app.settings import Settings
from app.sla.spec import SlaSpec
from app.tenants.service import Principal, TenantService
from tests.api.test_execution_stats import refresh
from tests.conftest import TenantKeys
from tests.workers.test_template_graph import publish

TARGETED = {
    "name": "sla-rolled",
    "title": "Rolled-up SLA figures",
    "steps": [{"id": "noop", "activity": "data.transform", "input": {"data": {}, "ops": []}}],
    "sla": {"max_duration_seconds": 60, "min_success_rate": 0.8, "min_runs": 3},
}
UNTARGETED = {**TARGETED, "name": "sla-untargeted"}
UNTARGETED.pop("sla")
# (status, hour of its day, seconds from creation to its end; None: still open). Runs still
# open are PENDING without a run id (queued): the reconciler leaves those alone, and admission
# does too while the tenant's slots are all taken (`hold_every_slot`).
DAY_RUNS: list[tuple[str, int, float | None]] = [
    ("COMPLETED", 1, 30),
    ("COMPLETED", 5, 90),
    ("FAILED", 9, 10),
    ("FAILED", 13, 200),
    ("CANCELLED", 17, 70),
    ("PENDING", 21, None),
]


async def seed(
    sessions: Any, tenant_id: uuid.UUID, template: str, days_ago: range
) -> list[uuid.UUID]:
    """DAY_RUNS on each day `days_ago` (and a COMPLETED run an hour ago), as writers leave
    them (updated_at now: the next refresh rolls their days up)."""
    today = datetime.combine(datetime.now(UTC).date(), time(), tzinfo=UTC)
    now = datetime.now(UTC)
    rows = [(today - timedelta(days=d, hours=-h), s, t) for d in days_ago for s, h, t in DAY_RUNS]
    rows.append((now - timedelta(hours=1), "COMPLETED", 100))
    async with sessions() as session:
        template_id, version_id = (
            await session.execute(
                select(Template.id, TemplateVersion.id)
                .join(TemplateVersion, TemplateVersion.template_id == Template.id)
                .where(Template.name == template)
            )
        ).one()
        executions = [
            Execution(
                tenant_id=tenant_id,
                template_id=template_id,
                template_version_id=version_id,
                params={},
                status=status,
                workflow_id=f"sla-rollup-{uuid.uuid4()}",
                created_at=created,
                started_at=created,
                finished_at=None if took is None else created + timedelta(seconds=took),
                updated_at=now,
            )
            for created, status, took in rows
        ]
        session.add_all(executions)
        await session.commit()
        return [e.id for e in executions]


async def hold_every_slot(
    sessions: Any, tenant_id: uuid.UUID, template: str, settings: Settings
) -> None:
    """RUNNING runs created an hour ago, as many as the tenant's tier may run at once, so
    admission starts none of its queued ones; updated_at ahead keeps the reconciler away."""
    async with sessions() as session:
        tier = (await session.get(Tenant, tenant_id)).tier  # type: ignore[union-attr]
        template_id, version_id = (
            await session.execute(
                select(Template.id, TemplateVersion.id)
                .join(TemplateVersion, TemplateVersion.template_id == Template.id)
                .where(Template.name == template)
            )
        ).one()
        created = datetime.now(UTC) - timedelta(hours=1)
        session.add_all(
            Execution(
                tenant_id=tenant_id,
                template_id=template_id,
                template_version_id=version_id,
                params={},
                status="RUNNING",
                workflow_id=f"sla-holder-{uuid.uuid4()}",
                run_id="held",
                created_at=created,
                started_at=created,
                updated_at=created + timedelta(days=2),
            )
            for _ in range(settings.tier_concurrency.get(tier, 1))
        )
        await session.commit()


async def rolled_up(sessions: Any) -> None:
    """A refresh, then the runs look quiet (changed long ago), as they will an interval
    later: the report may read their days from the rollup."""
    await refresh(sessions)
    await update_seeded(
        sessions,
        update(Execution)
        .where(Execution.workflow_id.like("sla-rollup-%"))
        .values(updated_at=Execution.created_at),
    )


async def update_seeded(sessions: Any, statement: Any) -> None:
    """Run an UPDATE of several seeded runs in a transaction of its own. The seeded queued runs
    are real to this process's server: its admission claims several of them in one
    transaction, which can deadlock with such an update (seen in CI and in PostgreSQL's log);
    the one PostgreSQL picks is rolled back, so try again."""
    for attempt in range(5):
        try:
            async with sessions() as session:
                await session.execute(statement)
                await session.commit()
            return
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) != "40P01" or attempt == 4:
                raise


async def snapshot(sessions: Any) -> AsyncSession:
    session: AsyncSession = sessions()
    await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    return session


async def agree(
    sessions: Any, tenant_id: uuid.UUID, template_id: uuid.UUID, since: datetime, until: datetime
) -> int:
    """Rollup path and rows path give the same figures (all templates, one template) and the
    same breaches pages (2 at a time), in one snapshot; returns the days read from the
    rollup."""
    now = datetime.now(UTC)
    async with await snapshot(sessions) as s:
        rows, figures = SlaReportRepository(s), SlaFigures(s)
        for only in (None, template_id):
            want = await rows.run_stats(tenant_id, [Span(since, until, only)], now)
            if only is None:
                want = [w for w in want if w.has_target]
            got = await figures.run_stats(tenant_id, since, until, now, only)
            assert sorted(got, key=str) == sorted(want, key=str), (since, until, only)
        before = None
        while True:
            page = await figures.breached_runs(
                tenant_id, template_id, since, until, now, before=before, limit=2
            )
            whole = [Span(since, until, template_id)]
            expected = await rows.breached_runs(
                tenant_id, template_id, whole, now, before=before, limit=2
            )
            assert [e.id for e in page] == [e.id for e in expected], (since, until, before)
            if len(page) < 2:
                break
            before = (page[-1].created_at, page[-1].id)
        plan = await figures.plan(tenant_id, since, until, template_id)
        return len(plan.rolled)


async def test_the_rollup_answers_as_the_rows_do_through_changes(
    sessions: Any, tenant: TenantKeys, settings: Settings
) -> None:
    targeted = await publish(sessions, tenant, TARGETED)
    untargeted = await publish(sessions, tenant, UNTARGETED)
    async with sessions() as s:
        tenant_id = (await TenantService(s).get_by_name(tenant.name)).id
        template_id = await s.scalar(select(Template.id).where(Template.name == targeted))
    await hold_every_slot(sessions, tenant_id, targeted, settings)
    ids = await seed(sessions, tenant_id, targeted, range(1, 7))
    await seed(sessions, tenant_id, untargeted, range(1, 3))
    await rolled_up(sessions)
    assert template_id is not None
    now = datetime.now(UTC)
    today = datetime.combine(now.date(), time(), tzinfo=UTC)
    windows = [
        (now - timedelta(days=8), now + timedelta(minutes=1)),  # partial edge days
        (today - timedelta(days=5), today - timedelta(days=1)),  # whole days only
        (today - timedelta(days=3, hours=7), today - timedelta(days=2, hours=3)),
        (now - timedelta(days=366), now),  # the longest window
    ]

    async def all_agree() -> list[int]:
        return [await agree(sessions, tenant_id, template_id, lo, hi) for lo, hi in windows]

    assert await all_agree() == [6, 4, 0, 6]  # whole days from the rollup

    # A queued run (open past its target, not in the rollup) ends after its day was rolled up:
    # its day is read from the rows until the next refresh rebuilds it.
    ended = ids[2 * len(DAY_RUNS) + 5]  # three days ago
    async with sessions() as s:
        await s.execute(
            update(Execution)
            .where(Execution.id == ended)
            .values(
                status="COMPLETED",
                finished_at=Execution.created_at + timedelta(seconds=20),
                updated_at=datetime.now(UTC),
            )
        )
        await s.commit()
    assert await all_agree() == [5, 3, 0, 5]
    await rolled_up(sessions)
    assert await all_agree() == [6, 4, 0, 6]

    # An override set, changed, cleared: at once (every day from the rows), and from the
    # rollup again after the refresh.
    admin = Principal(
        tenant_id=tenant_id, tenant_name=tenant.name, tier="pro", role="admin", key_id=uuid.uuid4()
    )
    for sla in ({"max_duration_seconds": 100}, {"max_duration_seconds": 20}, None):
        async with sessions() as s:
            service = SlaReportService(s)
            if sla is None:
                await service.clear_override(admin, template_id)
            else:
                await service.set_override(admin, template_id, SlaSpec.model_validate(sla))
            await s.commit()
        assert await all_agree() == [0, 0, 0, 0], sla
        await rolled_up(sessions)
        assert await all_agree() == [6, 4, 0, 6], sla


async def test_an_override_that_no_longer_validates_is_no_target_in_sql_too(
    sessions: Any, tenant: TenantKeys
) -> None:
    targeted = await publish(sessions, tenant, TARGETED)
    async with sessions() as s:
        tenant_id = (await TenantService(s).get_by_name(tenant.name)).id
        template_id = await s.scalar(select(Template.id).where(Template.name == targeted))
        # Stored before bounds were tightened: a window under today's 300 s minimum.
        await s.execute(
            text(
                "INSERT INTO template_slas (tenant_id, template_id, max_duration_seconds, "
                "window_seconds, min_runs, updated_at) VALUES (:t, :p, 10, 60, 1, now())"
            ),
            {"t": tenant_id, "p": template_id},
        )
        await s.commit()
    await seed(sessions, tenant_id, targeted, range(1, 2))
    await rolled_up(sessions)
    now = datetime.now(UTC)
    async with sessions() as s:
        (found,) = await SlaReportService(s).report(
            tenant_id, now - timedelta(days=3), now, template_id
        )
    assert found.target is None  # Python: no target
    assert (found.stats.runs, found.stats.measured, found.stats.breached) == (7, 0, 0)
    assert template_id is not None
    await agree(sessions, tenant_id, template_id, now - timedelta(days=3), now)


async def test_many_templates_changed_on_a_few_days_still_read_the_other_days_rolled_up(
    sessions: Any, tenant: TenantKeys
) -> None:
    """A run of each of 70 templates changed on 3 days apart since the refresh: 210 (template,
    day) spans, past MAX_ROW_SPANS. The report over every template reads those 3 days whole
    from the rows and the 2 others from the rollup, with the same figures as the rows."""
    names = [await publish(sessions, tenant, TARGETED) for _ in range(70)]
    async with sessions() as s:
        tenant_id = (await TenantService(s).get_by_name(tenant.name)).id
    runs = [await seed(sessions, tenant_id, name, range(1, 6)) for name in names]
    await rolled_up(sessions)
    touched = [ids[d * len(DAY_RUNS)] for ids in runs for d in (0, 2, 4)]  # days 1, 3 and 5
    await update_seeded(
        sessions,
        update(Execution).where(Execution.id.in_(touched)).values(updated_at=datetime.now(UTC)),
    )
    async with sessions() as s:
        template_id = await s.scalar(select(Template.id).where(Template.name == names[0]))
    assert template_id is not None
    now = datetime.now(UTC)
    since = now - timedelta(days=8)
    assert await agree(sessions, tenant_id, template_id, since, now) == 2
    async with await snapshot(sessions) as s:
        plan = await SlaFigures(s).plan(tenant_id, since, now, None)
    assert len(plan.rolled) == 70 * 2  # days 2 and 4 of every template
    assert len(plan.from_rows) == 2 + 3  # the edges and the three changed days


async def test_finding_the_pairs_to_rebuild_does_not_read_the_rollup(
    sessions: Any, tenant: TenantKeys
) -> None:
    """The refresh's search for (tenant, template) pairs judged against a target no longer in
    force reads the recorded targets, not sla_rollup (its cost would grow with every day
    rolled up): it answers while another session holds sla_rollup locked, and still finds an
    override set and one cleared."""
    targeted, other = [await publish(sessions, tenant, TARGETED) for _ in range(2)]
    async with sessions() as s:
        tenant_id = (await TenantService(s).get_by_name(tenant.name)).id
        template_id = await s.scalar(select(Template.id).where(Template.name == targeted))
        other_id = await s.scalar(select(Template.id).where(Template.name == other))
    assert template_id is not None and other_id is not None
    runs = await seed(sessions, tenant_id, targeted, range(1, 2))
    await seed(sessions, tenant_id, other, range(2, 3))
    await rolled_up(sessions)
    admin = Principal(
        tenant_id=tenant_id, tenant_name=tenant.name, tier="pro", role="admin", key_id=uuid.uuid4()
    )

    async def stale_while_locked() -> set[tuple[uuid.UUID, uuid.UUID]]:
        async with sessions() as holder, sessions() as s:
            await holder.execute(text("LOCK TABLE sla_rollup IN ACCESS EXCLUSIVE MODE"))
            await s.execute(text("SET LOCAL lock_timeout = '2s'"))
            found = set(await SlaRollupRepository(s).stale())
            await holder.rollback()
            return found

    assert (tenant_id, template_id) not in await stale_while_locked()
    # Right after migration 0025 nothing is recorded: the next refresh records every row's,
    # a day it rebuilds (a run changed) or not.
    async with sessions() as s:
        await s.execute(delete(SlaRollupTarget))
        await s.execute(
            update(Execution).where(Execution.id == runs[0]).values(updated_at=datetime.now(UTC))
        )
        await s.commit()
    await rolled_up(sessions)
    async with sessions() as s:
        for template in (template_id, other_id):
            recorded = await s.scalars(
                select(SlaRollupTarget.target).where(SlaRollupTarget.template_id == template)
            )
            assert list(recorded) == [60], template
    for sla in ({"max_duration_seconds": 100}, None):
        async with sessions() as s:
            service = SlaReportService(s)
            if sla is None:
                await service.clear_override(admin, template_id)
            else:
                await service.set_override(admin, template_id, SlaSpec.model_validate(sla))
            await s.commit()
        assert (tenant_id, template_id) in await stale_while_locked(), sla
        await rolled_up(sessions)
        assert (tenant_id, template_id) not in await stale_while_locked(), sla
