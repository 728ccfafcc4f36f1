"""SQL for execution statistics: executions created in a window, grouped by a key (UTC day,
ISO week, template, status, tenant tier), with the same figures for each group's previous
period, in one statement.

Each period is read from two sources that never overlap: the daily rollup
(app/models/analytics.py) for the whole UTC days it holds (before its `complete_until`), and
the execution rows for the rest (a partial first or last day, today, and everything when
paramsContains filters: the rollup has no params). Both give (key, status, duration bucket)
counts with AI-enhanced runs and AI cost; a `UNION ALL` of the parts is summed per period, key,
status and bucket, and the service side (fold_figures) turns the buckets into percentiles.

Percentiles therefore come from duration buckets of ratio 1.1 on either path (the same answer
whether or not the days were rolled up yet): a bucket stands for its geometric middle, and
p50/p95/p99 interpolate between the bucket values of the neighbouring ranks as percentile_cont
does between values, so each is within 5% of the exact one (sqrt(1.1) = 1.049).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    DateTime,
    Integer,
    Numeric,
    Select,
    String,
    cast,
    func,
    literal,
    select,
    true,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession

from app.analytics.repository import FINISHED
from app.analytics.rollup_repository import (
    RollupRepository,
    day_start,
    duration_bucket,
    run_seconds,
    usage_of_run,
    whole_days,
)
from app.models import Execution, ExecutionRollup, Template, Tenant
from app.models.analytics import ALL_TEMPLATES, DURATION_RATIO, NO_DURATION

PERCENTILES = (0.5, 0.95, 0.99)
CALENDAR = {"DAY": ("day", timedelta(days=1)), "WEEK": ("week", timedelta(days=7))}


@dataclass(frozen=True)
class Figures:
    """One group's figures over one period; durations in seconds (None without finished runs)."""

    total: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    p50_seconds: float | None = None
    p95_seconds: float | None = None
    p99_seconds: float | None = None
    ai_cost_usd: Decimal = Decimal(0)
    ai_enhanced: int = 0  # runs where a model answered at least one AI call


@dataclass(frozen=True)
class StatsScope:
    """Which executions: a tenant's (or every tenant's: None, for the platform operator),
    created in [since, until), matching the filter (None matches any)."""

    tenant_id: uuid.UUID | None
    since: datetime
    until: datetime
    group_by: str  # DAY | WEEK | TEMPLATE | STATUS | TIER (| TENANT: tenantComparison's)
    statuses: tuple[str, ...] | None = None
    template_ids: tuple[uuid.UUID, ...] | None = None
    params_contains: dict[str, Any] | None = None
    # Whether each key's previous period is read too (tenantComparison asks without).
    previous: bool = True
    # Whether the runs' AI cost and AI-enhanced count are read (aiCostUsd, aiEnhanced): a probe
    # of ai_usage per run read from the rows. tenantComparison reads AI spend by day instead.
    run_ai: bool = True

    @property
    def shift(self) -> timedelta:
        """How far back each bucket's previous period is: one calendar bucket for DAY and
        WEEK, the window's length for the others."""
        calendar = CALENDAR.get(self.group_by)
        return calendar[1] if calendar else self.until - self.since


def _interpolated(t: Any, q: float, low: Any, high: Any) -> float | None:
    """percentile_cont's interpolation between the values at ranks floor and ceil of
    q * (t - 1) (PostgreSQL's sums and powers come back as numeric: Decimal)."""
    if not t or low is None or high is None:
        return None
    rank = q * (int(t) - 1)
    return float(low) + (float(high) - float(low)) * (rank - int(rank))


def _rank_values(c: Any, q: float) -> tuple[ColumnElement[Any], ColumnElement[Any]]:
    """Over one group's buckets (c: bucket, n, before = runs in lower buckets, total): the
    middle of the bucket holding rank floor(q * (total - 1)), and of the one holding the next
    rank (the same bucket, mostly)."""
    rank = func.floor(q * (c.total - 1))
    middle = func.power(DURATION_RATIO, c.bucket + 0.5)

    def at(r: ColumnElement[Any]) -> ColumnElement[Any]:
        return func.max(middle).filter(c.before <= r, r < c.before + c.n)

    return at(rank), at(func.least(rank + 1, c.total - 1))


class StatsRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def figures(self, scope: StatsScope) -> dict[tuple[str, Any], Figures]:
        """{(period, key): Figures}, period "current" or "previous"; a key without runs in a
        period is absent. Keys: the bucket's start (DAY, WEEK: the UTC calendar day or ISO
        week, Monday 00:00 UTC), the template id, the status, the tier or the tenant id."""
        complete_until = None
        if scope.params_contains is None:
            complete_until = await RollupRepository(self.session).complete_until()
        shift = scope.shift
        parts: list[Select[Any]] = []
        periods = [("current", timedelta(0))] + ([("previous", shift)] if scope.previous else [])
        for period, back in periods:
            lo, hi = scope.since - back, scope.until - back
            days = whole_days(lo, hi, complete_until)
            raw = [(lo, hi)]
            if days is not None:
                parts.append(self._from_rollup(scope, period, days, back))
                raw = [(lo, day_start(days[0])), (day_start(days[1]), hi)]
            parts.extend(self._from_rows(scope, period, a, b, back) for a, b in raw if a < b)
        union = union_all(*parts).subquery("parts")
        query = self._folded(union)
        out = {}
        for r in (await self.session.execute(query)).mappings():
            p50, p95, p99 = (
                _interpolated(r["t"], q, r[f"lo{i}"], r[f"hi{i}"])
                for i, q in enumerate(PERCENTILES)
            )
            out[(r["period"], r["key"])] = Figures(
                total=int(r["total"]),
                completed=int(r["completed"]),
                failed=int(r["failed"]),
                cancelled=int(r["cancelled"]),
                p50_seconds=p50,
                p95_seconds=p95,
                p99_seconds=p99,
                ai_cost_usd=Decimal(r["cost"]),
                ai_enhanced=int(r["ai"]),
            )
        return out

    @staticmethod
    def _folded(parts: Any) -> Select[Any]:
        """The parts summed per period and key, with each percentile's two neighbouring
        bucket values: a few rows per group come back, not one per bucket (those took longer
        to send and fold in Python than PostgreSQL took to read them)."""
        group = (parts.c.period, parts.c.key)
        g = (
            select(
                *group,
                parts.c.status,
                parts.c.bucket,
                cast(func.sum(parts.c.runs), BigInteger).label("n"),
                cast(func.sum(parts.c.ai_runs), BigInteger).label("ai"),
                func.sum(parts.c.cost).label("cost"),
            )
            .group_by(*group, parts.c.status, parts.c.bucket)
            .cte("g")
        )

        def with_status(status: str) -> ColumnElement[Any]:
            return func.coalesce(func.sum(g.c.n).filter(g.c.status == status), 0)

        counts = (
            select(
                g.c.period,
                g.c.key,
                func.sum(g.c.n).label("total"),
                with_status("COMPLETED").label("completed"),
                with_status("FAILED").label("failed"),
                with_status("CANCELLED").label("cancelled"),
                func.sum(g.c.ai).label("ai"),
                func.sum(g.c.cost).label("cost"),
            )
            .group_by(g.c.period, g.c.key)
            .cte("counts")
        )
        h = (
            select(g.c.period, g.c.key, g.c.bucket, func.sum(g.c.n).label("n"))
            .where(g.c.status.in_(FINISHED), g.c.bucket != NO_DURATION)
            .group_by(g.c.period, g.c.key, g.c.bucket)
            .subquery("h")
        )
        within = (h.c.period, h.c.key)
        c = select(
            h.c.period,
            h.c.key,
            h.c.bucket,
            h.c.n,
            (func.sum(h.c.n).over(partition_by=within, order_by=h.c.bucket) - h.c.n).label(
                "before"
            ),
            func.sum(h.c.n).over(partition_by=within).label("total"),
        ).subquery("c")
        values = []
        for i, q in enumerate(PERCENTILES):
            low, high = _rank_values(c.c, q)
            values += [low.label(f"lo{i}"), high.label(f"hi{i}")]
        pct = (
            select(c.c.period, c.c.key, func.max(c.c.total).label("t"), *values)
            .group_by(c.c.period, c.c.key)
            .subquery("pct")
        )
        return select(counts, pct.c.t, *(pct.c[v.name] for v in values)).outerjoin(
            pct, (pct.c.period == counts.c.period) & (pct.c.key == counts.c.key)
        )

    async def template_names(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
        if not ids:
            return {}
        query = select(Template.id, Template.name).where(Template.id.in_(ids))
        return {r.id: r.name for r in await self.session.execute(query)}

    async def tier_of(self, tenant_id: uuid.UUID) -> str | None:
        return await self.session.scalar(select(Tenant.tier).where(Tenant.id == tenant_id))

    def _from_rows(
        self, scope: StatsScope, period: str, lo: datetime, hi: datetime, back: timedelta
    ) -> Select[Any]:
        key = self._key(
            scope,
            Execution.created_at + back,
            Execution.tenant_id,
            Execution.template_id,
            Execution.status,
        )
        bucket = duration_bucket(run_seconds())
        where = [Execution.created_at >= lo, Execution.created_at < hi]
        if scope.tenant_id is not None:
            where.append(Execution.tenant_id == scope.tenant_id)
        if scope.statuses is not None:
            where.append(Execution.status.in_(scope.statuses))
        if scope.template_ids is not None:
            where.append(Execution.template_id.in_(scope.template_ids))
        if scope.params_contains is not None:
            where.append(Execution.params.contains(scope.params_contains))
        columns: list[Any] = [
            literal(period, String).label("period"),
            key.label("key"),
            Execution.status.label("status"),
            bucket.label("bucket"),
            func.count().label("runs"),
        ]
        if scope.run_ai:
            usage = usage_of_run()
            columns += [
                cast(func.count().filter(usage.c.ai), Integer).label("ai_runs"),
                func.coalesce(func.sum(usage.c.cost), literal(0)).label("cost"),
            ]
        else:  # no probe of ai_usage per run
            columns += [
                cast(literal(0), Integer).label("ai_runs"),
                cast(literal(0), Numeric(18, 6)).label("cost"),
            ]
        query = select(*columns).select_from(Execution)
        if scope.run_ai:
            query = query.join(usage, true())
        query = query.where(*where).group_by(key, Execution.status, bucket)
        if scope.group_by == "TIER":
            query = query.join(Tenant, Tenant.id == Execution.tenant_id)
        return query

    def _from_rollup(
        self, scope: StatsScope, period: str, days: tuple[date, date], back: timedelta
    ) -> Select[Any]:
        r = ExecutionRollup
        at = func.timezone("UTC", cast(r.day, DateTime)) + back  # the day's start, UTC
        key = self._key(scope, at, r.tenant_id, r.template_id, r.status)
        where = [r.day >= days[0], r.day < days[1]]
        if scope.tenant_id is not None:
            where.append(r.tenant_id == scope.tenant_id)
        if scope.statuses is not None:
            where.append(r.status.in_(scope.statuses))
        if scope.template_ids is not None:
            where.append(r.template_id.in_(scope.template_ids))
        elif scope.group_by == "TEMPLATE":
            where.append(r.template_id != ALL_TEMPLATES)
        else:
            where.append(r.template_id == ALL_TEMPLATES)
        query = select(
            literal(period, String).label("period"),
            key.label("key"),
            r.status.label("status"),
            r.duration_bucket.label("bucket"),
            r.runs.label("runs"),
            r.ai_runs.label("ai_runs"),
            r.ai_cost_usd.label("cost"),
        ).where(*where)
        if scope.group_by == "TIER":
            query = query.join(Tenant, Tenant.id == r.tenant_id)
        return query

    @staticmethod
    def _key(
        scope: StatsScope,
        at: ColumnElement[Any],
        tenant_id: Any,
        template_id: Any,
        status: Any,
    ) -> ColumnElement[Any]:
        if scope.group_by in CALENDAR:
            return func.date_trunc(CALENDAR[scope.group_by][0], at, "UTC")
        if scope.group_by == "TEMPLATE":
            return cast(template_id, String)
        if scope.group_by == "STATUS":
            return cast(status, String)
        if scope.group_by == "TENANT":
            return cast(tenant_id, String)
        return cast(Tenant.tier, String)
