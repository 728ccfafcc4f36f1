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
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    DateTime,
    Integer,
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
    day_start,
    duration_bucket,
    run_seconds,
    usage_of_run,
)
from app.models import Execution, ExecutionRollup, RollupState, Template, Tenant
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
    group_by: str  # DAY | WEEK | TEMPLATE | STATUS | TIER
    statuses: tuple[str, ...] | None = None
    template_ids: tuple[uuid.UUID, ...] | None = None
    params_contains: dict[str, Any] | None = None

    @property
    def shift(self) -> timedelta:
        """How far back each bucket's previous period is: one calendar bucket for DAY and
        WEEK, the window's length for the others."""
        calendar = CALENDAR.get(self.group_by)
        return calendar[1] if calendar else self.until - self.since


def bucket_seconds(bucket: int) -> float:
    """The duration a bucket stands for: its geometric middle."""
    return float(DURATION_RATIO ** (bucket + 0.5))


def percentile(histogram: dict[int, int], q: float) -> float | None:
    """percentile_cont over bucketed values: the values at ranks floor and ceil of q*(n-1),
    each its bucket's middle, interpolated."""
    n = sum(histogram.values())
    if n == 0:
        return None
    rank = q * (n - 1)
    low, high = int(rank), min(int(rank) + 1, n - 1)
    values: dict[int, float] = {}
    seen = 0
    for bucket in sorted(histogram):
        count = histogram[bucket]
        for r in (low, high):
            if r not in values and seen <= r < seen + count:
                values[r] = bucket_seconds(bucket)
        seen += count
        if len(values) == 2 or (low == high and values):
            break
    return values[low] + (values[high] - values[low]) * (rank - low)


def fold_figures(rows: list[Any]) -> dict[tuple[str, Any], Figures]:
    """(period, key, status, bucket, runs, ai_runs, cost) rows -> Figures per (period, key)."""
    counts: dict[tuple[str, Any], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    costs: dict[tuple[str, Any], Decimal] = defaultdict(Decimal)
    histograms: dict[tuple[str, Any], dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for period, key, status, bucket, summed_runs, summed_ai, cost in rows:
        runs, ai_runs = int(summed_runs), int(summed_ai)  # sum(bigint) is numeric
        c = counts[(period, key)]
        c["total"] += runs
        c[status] += runs
        c["ai"] += ai_runs
        costs[(period, key)] += Decimal(cost)
        if status in FINISHED and bucket != NO_DURATION:
            histograms[(period, key)][bucket] += runs
    out = {}
    for group, c in counts.items():
        p50, p95, p99 = (percentile(histograms[group], q) for q in PERCENTILES)
        out[group] = Figures(
            total=c["total"],
            completed=c["COMPLETED"],
            failed=c["FAILED"],
            cancelled=c["CANCELLED"],
            p50_seconds=p50,
            p95_seconds=p95,
            p99_seconds=p99,
            ai_cost_usd=costs[group],
            ai_enhanced=c["ai"],
        )
    return out


def _whole_days(
    lo: datetime, hi: datetime, complete_until: date | None
) -> tuple[date, date] | None:
    """The whole UTC days inside [lo, hi) that the rollup holds, or None."""
    if complete_until is None:
        return None
    lo, hi = lo.astimezone(UTC), hi.astimezone(UTC)
    first = lo.date() if day_start(lo.date()) == lo else lo.date() + timedelta(days=1)
    end = min(hi.date(), complete_until)
    return (first, end) if first < end else None


class StatsRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def figures(self, scope: StatsScope) -> dict[tuple[str, Any], Figures]:
        """{(period, key): Figures}, period "current" or "previous"; a key without runs in a
        period is absent. Keys: the bucket's start (DAY, WEEK: the UTC calendar day or ISO
        week, Monday 00:00 UTC), the template id, the status or the tier."""
        complete_until = None
        if scope.params_contains is None:
            complete_until = await self.session.scalar(
                select(RollupState.complete_until).where(RollupState.id == 1)
            )
        shift = scope.shift
        parts: list[Select[Any]] = []
        for period, back in (("current", timedelta(0)), ("previous", shift)):
            lo, hi = scope.since - back, scope.until - back
            days = _whole_days(lo, hi, complete_until)
            raw = [(lo, hi)]
            if days is not None:
                parts.append(self._from_rollup(scope, period, days, back))
                raw = [(lo, day_start(days[0])), (day_start(days[1]), hi)]
            parts.extend(self._from_rows(scope, period, a, b, back) for a, b in raw if a < b)
        union = union_all(*parts).subquery("parts")
        query = select(
            union.c.period,
            union.c.key,
            union.c.status,
            union.c.bucket,
            cast(func.sum(union.c.runs), BigInteger),
            cast(func.sum(union.c.ai_runs), BigInteger),
            func.sum(union.c.cost),
        ).group_by(union.c.period, union.c.key, union.c.status, union.c.bucket)
        rows = (await self.session.execute(query)).all()
        return fold_figures([tuple(r) for r in rows])

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
        key = self._key(scope, Execution.created_at + back, Execution.template_id, Execution.status)
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
        usage = usage_of_run()
        query = (
            select(
                literal(period, String).label("period"),
                key.label("key"),
                Execution.status.label("status"),
                bucket.label("bucket"),
                func.count().label("runs"),
                cast(func.count().filter(usage.c.ai), Integer).label("ai_runs"),
                func.coalesce(func.sum(usage.c.cost), literal(0)).label("cost"),
            )
            .select_from(Execution)
            .join(usage, true())
            .where(*where)
            .group_by(key, Execution.status, bucket)
        )
        if scope.group_by == "TIER":
            query = query.join(Tenant, Tenant.id == Execution.tenant_id)
        return query

    def _from_rollup(
        self, scope: StatsScope, period: str, days: tuple[date, date], back: timedelta
    ) -> Select[Any]:
        r = ExecutionRollup
        at = func.timezone("UTC", cast(r.day, DateTime)) + back  # the day's start, UTC
        key = self._key(scope, at, r.template_id, r.status)
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
        template_id: Any,
        status: Any,
    ) -> ColumnElement[Any]:
        if scope.group_by in CALENDAR:
            return func.date_trunc(CALENDAR[scope.group_by][0], at, "UTC")
        if scope.group_by == "TEMPLATE":
            return cast(template_id, String)
        if scope.group_by == "STATUS":
            return cast(status, String)
        return cast(Tenant.tier, String)
