"""The platform operator's tenant comparison: per tenant with activity in a window, its
executions, success rate, AI spend, storage and p95 duration, ranked by one of them.

A tenant is listed when it created executions or used AI in [from, to) (the window is checked
as for templateImpact: at most 366 days). Ranks are most-first (the highest p95 duration
first: the slowest tenants are the ones to look at), tenants without a figure last, ties by
name; the rank is a tenant's position in the whole ranking, so pages can be read in any order.
The whole ranking is computed per request and paged with an offset cursor.

The figures are read as executionStats reads them (app/analytics/stats_repository.py, grouped
by tenant, without a previous period): whole UTC days from the daily rollup, the partial first
and last day (and days not rolled up yet) from the execution rows; AI spend likewise from
ai_usage_daily and the ai_usage rows. So the p95 duration comes from duration buckets (within
5% of the exact percentile): the exact one over every tenant's rows took 0.3-2.9 s for 30-90
days at 1,000,000 executions, 60% of it the percentile (docs/analytics.md, Speed at scale).
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from app.analytics.rollup_repository import RollupRepository
from app.analytics.service import checked_window
from app.analytics.stats_repository import StatsRepository, StatsScope
from app.analytics.storage_usage import StorageGauge, StorageReading
from app.pagination import Page, check_first, decode_cursor, encode_cursor
from app.tenants.service import PlatformPrincipal


class TenantRankBy(enum.Enum):
    EXECUTIONS = "EXECUTIONS"
    SUCCESS_RATE = "SUCCESS_RATE"
    AI_SPEND = "AI_SPEND"
    STORAGE = "STORAGE"
    P95_DURATION = "P95_DURATION"


@dataclass(frozen=True)
class TenantFigures:
    """A tenant's executions created in the window (completed, finished: completed, failed or
    cancelled), the p95 start-to-finish seconds of the finished ones, its AI spend."""

    tenant_id: uuid.UUID
    name: str
    tier: str
    executions: int
    completed: int
    finished: int
    p95_seconds: float | None
    ai_spend_usd: Decimal


@dataclass(frozen=True)
class TenantComparisonRow:
    rank: int
    figures: TenantFigures
    storage: StorageReading | None

    @property
    def success_rate(self) -> float | None:
        """Completed / finished; None without finished runs."""
        f = self.figures
        return f.completed / f.finished if f.finished else None


def _metric(row: TenantComparisonRow, by: TenantRankBy) -> float | Decimal | None:
    if by is TenantRankBy.EXECUTIONS:
        return row.figures.executions
    if by is TenantRankBy.SUCCESS_RATE:
        return row.success_rate
    if by is TenantRankBy.AI_SPEND:
        return row.figures.ai_spend_usd
    if by is TenantRankBy.STORAGE:
        return None if row.storage is None else row.storage.bytes
    return row.figures.p95_seconds


def ranked(rows: list[TenantComparisonRow], by: TenantRankBy) -> list[TenantComparisonRow]:
    """Most first, rows without the figure last, ties by tenant name; ranks from 1."""

    def key(row: TenantComparisonRow) -> tuple[bool, float, str]:
        value = _metric(row, by)
        return (value is None, -float(value or 0), row.figures.name)

    ordered = sorted(rows, key=key)
    return [TenantComparisonRow(i, r.figures, r.storage) for i, r in enumerate(ordered, 1)]


class TenantComparison:
    def __init__(self, session: AsyncSession, storage: StorageGauge) -> None:
        self.stats = StatsRepository(session)
        self.rollup = RollupRepository(session)
        self.storage = storage

    async def figures(self, since: datetime, until: datetime) -> list[TenantFigures]:
        """Per tenant with executions created or AI usage in [since, until)."""
        scope = StatsScope(None, since, until, "TENANT", previous=False, run_ai=False)
        runs = {uuid.UUID(key): f for (_, key), f in (await self.stats.figures(scope)).items()}
        spend = await self.rollup.ai_spend(since, until)
        ids = list(dict.fromkeys([*runs, *spend]))
        tenants = await self.rollup.tenants(ids)
        out = []
        for tenant_id in ids:
            if tenant_id not in tenants:
                continue  # deleted meanwhile
            name, tier = tenants[tenant_id]
            f = runs.get(tenant_id)
            out.append(
                TenantFigures(
                    tenant_id=tenant_id,
                    name=name,
                    tier=tier,
                    executions=f.total if f else 0,
                    completed=f.completed if f else 0,
                    finished=f.completed + f.failed + f.cancelled if f else 0,
                    p95_seconds=f.p95_seconds if f else None,
                    ai_spend_usd=spend.get(tenant_id, Decimal(0)),
                )
            )
        return out

    async def page(
        self,
        _: PlatformPrincipal,
        since: datetime,
        until: datetime,
        by: TenantRankBy,
        first: int | None,
        after: str | None,
    ) -> tuple[datetime, datetime, Page[TenantComparisonRow]]:
        since, until = checked_window(since, until)
        limit = check_first(first, default=20)
        position = decode_cursor(after, "int")
        offset = position[0] if position else 0
        figures = await self.figures(since, until)
        # Storage is measured for every tenant only to rank by it; else for the page's.
        storage: dict[uuid.UUID, StorageReading] = {}
        if by is TenantRankBy.STORAGE:
            storage = await self.storage.read(f.tenant_id for f in figures)
        rows = ranked([TenantComparisonRow(0, f, storage.get(f.tenant_id)) for f in figures], by)
        items = rows[offset : offset + limit]
        if by is not TenantRankBy.STORAGE:
            storage = await self.storage.read(r.figures.tenant_id for r in items)
            items = [
                TenantComparisonRow(r.rank, r.figures, storage.get(r.figures.tenant_id))
                for r in items
            ]
        cursors = [encode_cursor([r.rank]) for r in items]
        return since, until, Page(items, cursors, has_next=offset + limit < len(rows))
