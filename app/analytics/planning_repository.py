"""SQL for forecasts and the platform's planning views: a tenant's AI cost per UTC day, the
platform's executions per day and their busiest hours, and a template's AI cost per run (the
tenant comparison reads the rollups: app/analytics/comparison.py).

Days and hours are cut in UTC (`date_trunc(unit, ts, 'UTC')`), whatever the session's time
zone. Every query is bounded by a time window on an indexed column: `ai_usage (tenant_id, at)`
for a tenant's cost, `executions (template_id, created_at)` for a template's runs, and the
platform-wide ones by `executions (created_at)`, `executions (finished_at) WHERE finished` and
`ai_usage (at)` (migration 0015).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Date,
    DateTime,
    Select,
    Uuid,
    and_,
    cast,
    delete,
    func,
    insert,
    literal,
    select,
    text,
    true,
    tuple_,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession

from app.analytics.plans import plan_for_values
from app.models import (
    AiUsage,
    Execution,
    ExecutionRollup,
    RollupState,
    TemplateCostEstimate,
    Tenant,
)
from app.models.analytics import ALL_TEMPLATES, ALL_TENANTS, UNKNOWN_TIER
from app.models.execution import FINISHED_SQL


def _utc(unit: str, ts: Any) -> ColumnElement[Any]:
    return func.date_trunc(unit, ts, "UTC")


@dataclass(frozen=True)
class ExecutionDay:
    """The executions created on one UTC day, and how many of them in its busiest hour."""

    day: date
    executions: int
    busiest_hour: int


@dataclass(frozen=True)
class PeakHour:
    at: datetime
    completions: int


@dataclass(frozen=True)
class RunCosts:
    """A template's AI cost per run: how many runs, and the 50th and 95th percentiles."""

    runs: int
    p50: Decimal | None
    p95: Decimal | None


@dataclass(frozen=True)
class TemplateRuns:
    """A template's sample of runs: the costs over every run and over the caller's own, how
    many other tenants ran the rest, how many runs that is and the most of any one of them."""

    every: RunCosts
    own: RunCosts
    other_tenants: int
    other_runs: int
    top_other_runs: int


class PlanningRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def daily_ai_cost(
        self, tenant_id: uuid.UUID, since: datetime, until: datetime
    ) -> dict[date, Decimal]:
        """The tenant's AI cost per UTC day over [since, until); days without usage absent."""
        day = _utc("day", AiUsage.at).label("day")
        query = (
            select(day, func.sum(AiUsage.cost_usd))
            .where(AiUsage.tenant_id == tenant_id, AiUsage.at >= since, AiUsage.at < until)
            .group_by(day)
        )
        return {r[0].date(): Decimal(r[1]) for r in (await self.session.execute(query)).all()}

    async def execution_days(self, since: datetime, until: datetime) -> list[ExecutionDay]:
        """Every tenant's executions created per UTC day over [since, until), with the count
        of each day's busiest hour; days without executions absent. Oldest first."""
        hour = _utc("hour", Execution.created_at).label("hour")
        hours = (
            select(hour, func.count().label("n"))
            .where(Execution.created_at >= since, Execution.created_at < until)
            .group_by(hour)
            .subquery("hours")
        )
        day = _utc("day", hours.c.hour).label("day")
        query = select(day, func.sum(hours.c.n), func.max(hours.c.n)).group_by(day).order_by(day)
        rows = (await self.session.execute(query)).all()
        return [ExecutionDay(r[0].date(), int(r[1]), int(r[2])) for r in rows]

    async def peak_completion_hour(self, since: datetime, until: datetime) -> PeakHour | None:
        """The clock hour in [since, until) in which most executions (every tenant's)
        finished, or None when none did (on the partial finished_at index)."""
        hour = _utc("hour", Execution.finished_at).label("hour")
        query = (
            select(hour, func.count().label("n"))
            .where(
                Execution.finished_at >= since,
                Execution.finished_at < until,
                text(FINISHED_SQL),
            )
            .group_by(hour)
            .order_by(func.count().desc(), hour.desc())
            .limit(1)
        )
        row = (await self.session.execute(query)).first()
        return None if row is None else PeakHour(row[0], int(row[1]))

    async def refresh_cost_estimates(
        self, since: datetime, sample: int, complete_until: date
    ) -> int:
        """Replace template_cost_estimates: per (template, tier) with COMPLETED runs created
        since `since`, the AI cost per run over its latest `sample` such runs of that tier
        (the tier the run recorded, else its tenant's current one), as percentiles over the
        whole sample and over each tenant's runs in it; the rows written. The
        execution_rollup must be complete before `complete_until` (the refresh that calls
        this has just rebuilt it): the pairs and their runs per day come from its rows for
        whole days and from the executions after it; each pair's runs from a LATERAL read
        of (template_id, created_at) over the latest days that hold `sample` runs, stopping
        at `sample`; only those runs' AI usage is summed. (Deleted executions stay counted
        in rolled-up days: a pair whose latest days lost runs gets a smaller sample.)"""
        await self.session.execute(delete(TemplateCostEstimate))
        # Completed runs per (template, tier) and UTC day: the rollup's whole days, the
        # executions of the days after it.
        r = ExecutionRollup
        rolled_tier = func.coalesce(func.nullif(r.tier, UNKNOWN_TIER), Tenant.tier)
        rolled = (
            select(r.template_id, rolled_tier.label("tier"), r.day, func.sum(r.runs).label("n"))
            .join(Tenant, Tenant.id == r.tenant_id)
            .where(
                r.day >= since.astimezone(UTC).date(),
                r.day < complete_until,
                r.status == "COMPLETED",
                r.template_id != ALL_TEMPLATES,
            )
            .group_by(r.template_id, rolled_tier, r.day)
        )
        run_tier = func.coalesce(Execution.tier, Tenant.tier)
        run_day = cast(func.timezone("UTC", Execution.created_at), Date)
        recent = (
            select(Execution.template_id, run_tier, run_day, func.count())
            .join(Tenant, Tenant.id == Execution.tenant_id)
            .where(
                Execution.created_at >= max(since, day_start(complete_until)),
                Execution.status == "COMPLETED",
            )
            .group_by(Execution.template_id, run_tier, run_day)
        )
        daily = union_all(rolled, recent).subquery("daily")
        # Runs on that day and after, newest day first: the sample lies within the latest
        # days that hold `sample` runs, so each walk below reads only those days' runs
        # (PostgreSQL cannot know how soon a walk filtered by tier reaches its limit, and
        # read every run of the template within 90 days when left to choose).
        upto = (
            select(
                daily.c.template_id,
                daily.c.tier,
                daily.c.day,
                func.sum(daily.c.n)
                .over(partition_by=(daily.c.template_id, daily.c.tier), order_by=daily.c.day.desc())
                .label("upto"),
            )
        ).subquery("upto")
        first_day = func.coalesce(
            func.max(upto.c.day).filter(upto.c.upto >= sample), func.min(upto.c.day)
        )
        pairs = (
            select(upto.c.template_id, upto.c.tier, first_day.label("first_day"))
            .group_by(upto.c.template_id, upto.c.tier)
            .subquery("pairs")
        )
        latest = (
            select(Execution.tenant_id, Execution.ai_cost_usd)
            .join(Tenant, Tenant.id == Execution.tenant_id)
            .where(
                Execution.template_id == pairs.c.template_id,
                Execution.created_at >= since,
                Execution.created_at >= func.timezone("UTC", cast(pairs.c.first_day, DateTime)),
                Execution.status == "COMPLETED",
                run_tier == pairs.c.tier,
            )
            .order_by(Execution.created_at.desc())
            .limit(sample)
            .lateral("latest")
        )
        # The run's AI cost as its row keeps it (alembic 0022); no usage: 0.
        cost = func.coalesce(latest.c.ai_cost_usd, 0)
        runs = (
            select(pairs.c.template_id, pairs.c.tier, latest.c.tenant_id, cost.label("cost"))
            .select_from(pairs)
            .join(latest, true())
            .cte("runs")
        )

        def figures(tenant: Any, *by: Any) -> Select[Any]:
            return select(
                runs.c.template_id,
                runs.c.tier,
                tenant,
                func.count(),
                func.percentile_cont(0.5).within_group(runs.c.cost),
                func.percentile_cont(0.95).within_group(runs.c.cost),
            ).group_by(runs.c.template_id, runs.c.tier, *by)

        every = figures(literal(ALL_TENANTS, Uuid))
        own = figures(runs.c.tenant_id, runs.c.tenant_id)
        columns = ["template_id", "tier", "tenant_id", "runs", "p50_usd", "p95_usd"]
        # Its estimated cost passes jit_above_cost; compiling took longer than the statement.
        await plan_for_values(self.session)
        result = await self.session.execute(
            insert(TemplateCostEstimate).from_select(columns, union_all(every, own))
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def estimates_as_of(self) -> datetime | None:
        """The moment template_cost_estimates describes (None: never computed): not the
        rollup's refreshed_from, which moves with each chunk of a catch-up."""
        return await self.session.scalar(
            select(RollupState.estimates_from).where(RollupState.id == 1)
        )

    async def cost_estimates(
        self, keys: list[tuple[uuid.UUID, str]], caller: uuid.UUID
    ) -> dict[tuple[uuid.UUID, str], TemplateRuns]:
        """Per (template, tier) asked that template_cost_estimates holds: the figures over
        the whole sample and over the caller's own runs in it, and how the other tenants'
        runs are spread (whether they may count is the service's call). One statement for
        a page (the primary key's (template_id, tier) ranges)."""
        if not keys:
            return {}
        c = TemplateCostEstimate
        every = c.tenant_id == ALL_TENANTS
        own = c.tenant_id == caller
        other = and_(c.tenant_id != ALL_TENANTS, c.tenant_id != caller)
        query = (
            select(
                c.template_id,
                c.tier,
                func.max(c.runs).filter(every),
                func.max(c.p50_usd).filter(every),
                func.max(c.p95_usd).filter(every),
                func.max(c.runs).filter(own),
                func.max(c.p50_usd).filter(own),
                func.max(c.p95_usd).filter(own),
                func.count().filter(other),
                func.sum(c.runs).filter(other),
                func.max(c.runs).filter(other),
            )
            .where(tuple_(c.template_id, c.tier).in_(keys))
            .group_by(c.template_id, c.tier)
        )
        return {
            (r[0], r[1]): TemplateRuns(
                every=RunCosts(int(r[2] or 0), _decimal(r[3]), _decimal(r[4])),
                own=RunCosts(int(r[5] or 0), _decimal(r[6]), _decimal(r[7])),
                other_tenants=int(r[8] or 0),
                other_runs=int(r[9] or 0),
                top_other_runs=int(r[10] or 0),
            )
            for r in (await self.session.execute(query)).all()
        }


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def _decimal(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))
