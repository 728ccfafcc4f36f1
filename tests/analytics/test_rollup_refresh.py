"""An idle analytics rollup refresh keeps the cost estimates instead of recomputing them (most
of its time: 377 ms p50 of the bench's refresh), in a database of its own so that no other
test's executions count as changes: recomputed on the first refresh, kept while no execution
changed and no day was added, recomputed after a change, and after AI usage recorded for a run
that had ended (its cost changes without its updated_at: the 0022 trigger)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, select, update

from app.analytics.service import RollupService
from app.db import make_engine, make_sessionmaker
from app.migrate import upgrade_async
from app.models import AiUsage, Execution, TemplateCostEstimate
from app.seed import seed_templates
from app.templates.service import TemplateService
from app.tenants.service import TenantService
from tests.cli.test_migration_0009 import blank_db  # noqa: F401 (fixture)
from tests.conftest import make_tenant


async def test_an_idle_refresh_keeps_the_cost_estimates(blank_db: str) -> None:  # noqa: F811
    await upgrade_async(blank_db)
    engine = make_engine(blank_db, pool_size=1)
    sessions = make_sessionmaker(engine)
    try:
        await seed_templates(sessions)
        keys = await make_tenant(sessions, "pro")
        hour_ago = datetime.now(UTC) - timedelta(hours=1)
        async with sessions() as s:
            tenant = await TenantService(s).get_by_name(keys.name)
            templates = TemplateService(s)
            template = await templates.resolve(tenant.id, template_id=None, name="user-onboarding")
            version, _ = await templates.latest_version(template)
            run = Execution(
                tenant_id=tenant.id,
                template_id=template.id,
                template_version_id=version.id,
                params={},
                status="COMPLETED",
                workflow_id=f"refresh-{keys.name}",
                created_at=hour_ago - timedelta(days=1),
                started_at=hour_ago - timedelta(days=1),
                finished_at=hour_ago - timedelta(days=1) + timedelta(seconds=30),
                updated_at=hour_ago,
            )
            s.add(run)
            await s.commit()

        async def refresh() -> tuple[bool, int, int]:
            async with sessions() as s:
                done = await RollupService(s).refresh()
                await s.commit()
                rows = await s.scalar(select(func.count()).select_from(TemplateCostEstimate))
            return done.estimates_kept, done.estimates, int(rows or 0)

        kept, written, rows = await refresh()  # the first: every day, every estimate
        assert (kept, written) == (False, rows) and rows > 0
        assert await refresh() == (True, 0, rows)  # nothing changed: kept as they are
        async with sessions() as s:
            await s.execute(
                update(Execution).where(Execution.id == run.id).values(updated_at=func.now())
            )
            await s.commit()
        assert await refresh() == (False, rows, rows)  # a run changed: recomputed
        async with sessions() as s:  # that change long past: kept again
            await s.execute(
                update(Execution).where(Execution.id == run.id).values(updated_at=hour_ago)
            )
            await s.commit()
        assert await refresh() == (True, 0, rows)
        async with sessions() as s:  # a call recorded after its run ended (a late activity)
            s.add(
                AiUsage(
                    tenant_id=tenant.id,
                    execution_id=run.id,
                    task="summarize",
                    provider="openai",
                    model="gpt-test",
                    cost_usd=Decimal("1.5"),
                    outcome="OK",
                )
            )
            await s.commit()
        assert await refresh() == (False, rows, rows)  # recomputed: the run's cost changed
        async with sessions() as s:
            p50 = await s.scalar(
                select(func.max(TemplateCostEstimate.p50_usd)).where(
                    TemplateCostEstimate.template_id == run.template_id
                )
            )
        assert p50 == Decimal("1.5")
    finally:
        await engine.dispose()
