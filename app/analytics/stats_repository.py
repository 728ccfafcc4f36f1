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
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Date,
    DateTime,
    Integer,
    Interval,
    Numeric,
    Select,
    String,
    and_,
    cast,
    func,
    literal,
    or_,
    select,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession

from app.analytics.plans import plan_for_values
from app.analytics.repository import FINISHED
from app.analytics.rollup_repository import (
    RollupRepository,
    day_start,
    duration_bucket,
    ran_ai,
    run_seconds,
    whole_days,
)
from app.models import Execution, ExecutionRollup, Template, Tenant
from app.models.analytics import ALL_TEMPLATES, DURATION_RATIO, NO_DURATION, UNKNOWN_TIER

T = TypeVar("T", date, datetime)
PERCENTILES = (0.5, 0.95, 0.99)
# The planner's cost of a random page read for a statement with paramsContains (see figures).
RANDOM_PAGE_COST = 1.1
CALENDAR = {"DAY": ("day", timedelta(days=1)), "WEEK": ("week", timedelta(days=7))}


@dataclass(frozen=True)
class Period:
    """A range [lo, hi) of one period's executions read from one source; `back` is how far
    that period lies before the window (its keys are shifted forward by it)."""

    period: str
    back: timedelta
    lo: datetime
    hi: datetime


def merged(spans: list[tuple[T, T]]) -> list[tuple[T, T]]:
    """Half-open ranges, overlapping or touching ones merged, in order."""
    out: list[tuple[T, T]] = []
    for lo, hi in sorted(spans):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _periods(ranges: list[Period], bound: Any = None) -> Any:
    """The ranges as a relation (period, back, lo, hi) to join the rows read to their periods;
    with `bound` Date, as UTC days (the rollup's): [lo's day, hi's day) and `back` in whole
    days. A UNION ALL of one-row SELECTs of bound values, not VALUES: SQLAlchemy caches no
    statement that holds a VALUES list (`values().data()`), so each request compiled the whole
    statement again (about 20 ms here; docs/library-notes.md)."""
    names = ("period", "back", "lo", "hi")
    if bound is Date:
        types: tuple[Any, ...] = (String, Integer, Date, Date)
        rows: list[tuple[Any, ...]] = [
            (r.period, r.back.days, r.lo.date(), r.hi.date()) for r in ranges
        ]
    else:
        types = (String, Interval, DateTime(timezone=True), DateTime(timezone=True))
        rows = [(r.period, r.back, r.lo, r.hi) for r in ranges]
    selects = [
        select(*(literal(v, t).label(n) for v, t, n in zip(row, types, names, strict=True)))
        for row in rows
    ]
    return (selects[0] if len(selects) == 1 else union_all(*selects)).subquery("periods")


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
    # Whether the runs' AI cost and AI-enhanced count are read (aiCostUsd, aiEnhanced; kept on
    # each execution row, migration 0022). tenantComparison reads AI spend by day instead.
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


def _period_columns(ranges: list[Period], p: Any, back_type: Any) -> tuple[Any, Any]:
    """The period and shift of each row read: from the VALUES list it is joined to, or as
    constants when one range is read (no join: tenantComparison's one period)."""
    if len(ranges) > 1:
        return p.c.period, p.c.back
    only = ranges[0]
    back = only.back.days if back_type is Integer else only.back
    return literal(only.period, String), literal(back, back_type)


class StatsRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def figures(self, scope: StatsScope) -> dict[tuple[str, Any], Figures]:
        """{(period, key): Figures}, period "current" or "previous"; a key without runs in a
        period is absent. Keys: the bucket's start (DAY, WEEK: the UTC calendar day or ISO
        week, Monday 00:00 UTC), the template id, the status, the tier or the tenant id.

        Each source is read once for both periods: the periods of DAY and WEEK overlap (the
        day before each day), so the executions (or rollup days) of the union of their ranges
        are read once and joined to the periods they fall in, rather than twice."""
        complete_until = None
        if scope.params_contains is None:
            complete_until = await RollupRepository(self.session).complete_until()
        shift = scope.shift
        raw: list[Period] = []
        rolled: list[Period] = []
        periods = [("current", timedelta(0))] + ([("previous", shift)] if scope.previous else [])
        for period, back in periods:
            lo, hi = scope.since - back, scope.until - back
            days = whole_days(lo, hi, complete_until)
            if days is None:
                raw.append(Period(period, back, lo, hi))
                continue
            rolled.append(Period(period, back, day_start(days[0]), day_start(days[1])))
            raw += [
                Period(period, back, a, b)
                for a, b in ((lo, day_start(days[0])), (day_start(days[1]), hi))
                if a < b
            ]
        parts: list[Select[Any]] = []
        if rolled:
            parts.append(self._from_rollup(scope, rolled))
        if raw:
            parts.append(self._from_rows(scope, raw))
        union = union_all(*parts).subquery("parts")
        query = self._folded(union)
        # A broad paramsContains reads the tenant's window through the GIN matches AND the
        # (tenant, created) range: a quarter of the heap pages the GIN matches alone cost (those
        # hold every tenant's matches). The default cost of a random page (4, a spinning
        # disk's) keeps PostgreSQL on the GIN alone; 1.1 is the usual setting for SSDs and
        # cached tables (docs/analytics.md, "Speed at scale").
        page_cost = RANDOM_PAGE_COST if scope.params_contains is not None else None
        await plan_for_values(self.session, random_page_cost=page_cost)
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

    def _from_rows(self, scope: StatsScope, ranges: list[Period]) -> Select[Any]:
        """(period, key, status, bucket) counts from the execution rows created in `ranges`:
        the rows of their union read once (with their AI figures), each counted in every
        period whose range holds it."""
        spans = merged([(r.lo, r.hi) for r in ranges])
        # Read once, then joined to the periods: left to itself PostgreSQL pushes the period
        # bounds into the scan and reads the rows once per period (it underestimates how many
        # match a broad paramsContains: a nested loop looked cheap).
        e = self._runs(scope, spans).cte("runs").prefix_with("MATERIALIZED")
        p = _periods(ranges)
        period, back = _period_columns(ranges, p, Interval)
        if scope.group_by in CALENDAR:
            # The run's day (week) once, shifted per period: the shift is whole days
            # (weeks) and UTC has no daylight saving, so truncating the shifted time gives
            # the same. A window read from the rows counts most runs in both periods.
            key = e.c.base + back
        else:
            key = self._key(
                scope,
                e.c.created_at + back,
                e.c.tenant_id,
                e.c.template_id,
                e.c.status,
                e.c.tier,
                Tenant.tier,
            )
        query = (
            select(
                period.label("period"),
                key.label("key"),
                e.c.status.label("status"),
                e.c.bucket.label("bucket"),
                func.count().label("runs"),
                cast(func.count().filter(e.c.ai), Integer).label("ai_runs"),
                func.coalesce(func.sum(e.c.cost), literal(0)).label("cost"),
            )
            .select_from(e)
            .group_by(period, key, e.c.status, e.c.bucket)
        )
        if len(ranges) > 1:
            query = query.join(p, and_(e.c.created_at >= p.c.lo, e.c.created_at < p.c.hi))
        if scope.group_by == "TIER":
            query = query.join(Tenant, Tenant.id == e.c.tenant_id)
        return query

    @staticmethod
    def _runs(scope: StatsScope, spans: list[tuple[datetime, datetime]]) -> Select[Any]:
        """The scope's executions created in `spans` with their bucket and AI figures (the
        ones stored on the row; zeros when the scope does not read them)."""
        created = Execution.created_at
        where = [or_(*(and_(created >= a, created < b) for a, b in spans))]
        if scope.tenant_id is not None:
            where.append(Execution.tenant_id == scope.tenant_id)
        if scope.statuses is not None:
            where.append(Execution.status.in_(scope.statuses))
        if scope.template_ids is not None:
            where.append(Execution.template_id.in_(scope.template_ids))
        if scope.params_contains is not None:
            where.append(Execution.params.contains(scope.params_contains))
        columns: list[Any] = [
            Execution.created_at,
            Execution.tenant_id,
            Execution.template_id,
            Execution.status,
            Execution.tier,
            duration_bucket(run_seconds()).label("bucket"),
        ]
        if scope.group_by in CALENDAR:
            unit = CALENDAR[scope.group_by][0]
            columns.append(func.date_trunc(unit, Execution.created_at, "UTC").label("base"))
        if scope.run_ai:
            columns += [ran_ai().label("ai"), Execution.ai_cost_usd.label("cost")]
        else:
            columns += [literal(False).label("ai"), cast(literal(0), Numeric(18, 6)).label("cost")]
        return select(*columns).select_from(Execution).where(*where)

    def _from_rollup(self, scope: StatsScope, ranges: list[Period]) -> Select[Any]:
        """The same counts from the rollup's whole days in `ranges` (starts of UTC days):
        the days of their union read once, each counted in every period that holds it."""
        r = ExecutionRollup
        spans = merged([(x.lo.date(), x.hi.date()) for x in ranges])
        where = [or_(*(and_(r.day >= a, r.day < b) for a, b in spans))]
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
        dims: list[Any] = [r.day, r.status, r.duration_bucket.label("bucket")]
        if scope.group_by == "TEMPLATE":
            dims.append(r.template_id)
        if scope.group_by in ("TIER", "TENANT"):
            dims.append(r.tenant_id)
        if scope.group_by == "TIER":
            dims.append(func.nullif(r.tier, UNKNOWN_TIER).label("tier"))
        figures = (r.runs, r.ai_runs, r.ai_cost_usd)
        if scope.tenant_id is None and scope.group_by not in ("TIER", "TENANT"):
            # The platform's DAY, WEEK, STATUS: every tenant's rows summed per day, status
            # and bucket before the days are joined to their periods and keyed (time zone
            # arithmetic per row: the platform's DAY over 30 days spent most of its time
            # there). Elsewhere this would merge next to nothing, at the cost of a pass.
            rows = (
                select(*dims, *(func.sum(f).label(f.key) for f in figures))
                .where(*where)
                .group_by(*dims)
            )
        else:
            rows = select(*dims, *figures).where(*where)
        e = rows.subquery("rolled")
        p = _periods(ranges, Date)
        period, back = _period_columns(ranges, p, Integer)
        at = func.timezone("UTC", cast(e.c.day + back, DateTime))  # the day's start, UTC

        def dim(name: str) -> Any:
            return e.c[name] if name in e.c else None

        key = self._key(
            scope, at, dim("tenant_id"), dim("template_id"), e.c.status, dim("tier"), Tenant.tier
        )
        query = (
            select(
                period.label("period"),
                key.label("key"),
                e.c.status.label("status"),
                e.c.bucket.label("bucket"),
                cast(func.sum(e.c.runs), Integer).label("runs"),
                cast(func.sum(e.c.ai_runs), Integer).label("ai_runs"),
                func.sum(e.c.ai_cost_usd).label("cost"),
            )
            .select_from(e)
            .group_by(period, key, e.c.status, e.c.bucket)
        )
        if len(ranges) > 1:
            query = query.join(p, and_(e.c.day >= p.c.lo, e.c.day < p.c.hi))
        if scope.group_by == "TIER":
            query = query.join(Tenant, Tenant.id == e.c.tenant_id)
        return query

    @staticmethod
    def _key(
        scope: StatsScope,
        at: ColumnElement[Any],
        tenant_id: Any,
        template_id: Any,
        status: Any,
        tier: Any,
        tenant_tier: Any,
    ) -> ColumnElement[Any]:
        """The group key; TIER is the tier the run recorded, else (runs created before
        migration 0019) the tenant's current one."""
        if scope.group_by in CALENDAR:
            return func.date_trunc(CALENDAR[scope.group_by][0], at, "UTC")
        if scope.group_by == "TEMPLATE":
            return cast(template_id, String)
        if scope.group_by == "STATUS":
            return cast(status, String)
        if scope.group_by == "TENANT":
            return cast(tenant_id, String)
        return cast(func.coalesce(tier, tenant_tier), String)
