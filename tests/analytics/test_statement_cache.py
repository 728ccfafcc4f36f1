"""Why tenantComparison over 90 days took 136 ms on the client against 62-68 ms of PostgreSQL
time (docs/analytics.md, Speed at scale), and executionStats alike:
- SQLAlchemy caches no statement that holds a VALUES list, so the stats statement was compiled
  on every request (10-20 ms of Python): each statement a second identical request sends must
  come from SQLAlchemy's compiled cache;
- from a prepared statement's sixth run PostgreSQL may switch to a generic plan, which was
  slower: the stats statements run with plan_cache_mode force_custom_plan."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine.interfaces import CacheStats

from app.analytics.comparison import TenantComparison, TenantRankBy
from app.analytics.service import RollupService, StatsService
from app.analytics.storage_usage import StorageGauge
from app.db import make_engine, make_sessionmaker
from app.settings import Settings
from app.tenants.service import PlatformPrincipal, TenantService
from tests.conftest import make_tenant


async def test_stats_and_comparison_statements_come_from_the_compiled_cache(
    settings: Settings, sessions: Any
) -> None:
    assert settings.database_url
    keys = await make_tenant(sessions, "pro")
    async with sessions() as s:
        tenant_id = (await TenantService(s).get_by_name(keys.name)).id
        await RollupService(s).refresh()  # whole days from the rollup, edges from the rows
        await s.commit()
    engine = make_engine(settings.database_url, pool_size=1)
    seen: list[tuple[CacheStats, str]] = []

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def record(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        context = rest[1]
        seen.append((context.cache_hit, statement))

    now = datetime.now(UTC)
    since = now - timedelta(days=30, hours=5)  # partial first and last days
    operator = PlatformPrincipal(uuid.uuid4(), "test")
    gauge = StorageGauge(settings)
    try:
        for _ in range(2):
            seen.clear()
            async with make_sessionmaker(engine)() as s:
                stats = StatsService(s)
                for group_by in ("DAY", "TEMPLATE"):
                    scope = await stats.scope(tenant_id, since, now, group_by, None, settings)
                    await stats.execution_stats(scope)
                await TenantComparison(s, gauge).page(
                    operator, since, now, TenantRankBy.EXECUTIONS, 20, None
                )
                # asyncpg prepares each statement once per connection; from its sixth run
                # PostgreSQL may plan it for any window (generic), which was 1.7x slower here.
                settings_now = await s.execute(
                    text("SELECT current_setting('plan_cache_mode'), current_setting('jit')")
                )
                assert tuple(settings_now.one()) == ("force_custom_plan", "off")
    finally:
        await engine.dispose()
    assert len(seen) >= 3
    missed = [statement for hit, statement in seen if hit is not CacheStats.CACHE_HIT]
    assert missed == []
