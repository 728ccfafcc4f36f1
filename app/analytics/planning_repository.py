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
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Uuid, column, func, select, text, true, values
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import AiUsage, Execution, Tenant
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

    async def template_run_costs(
        self,
        template_ids: list[uuid.UUID],
        tier: str,
        caller: uuid.UUID,
        since: datetime,
        sample: int,
    ) -> dict[uuid.UUID, TemplateRuns]:
        """Per template: AI cost per COMPLETED run since `since`, over its latest `sample`
        runs by tenants now on `tier`, for every run of the sample and for the caller's own,
        with how the other tenants' runs are spread (whether they may count is the service's
        call). Templates without such runs are absent. One statement for all: each
        template's latest runs come from a LATERAL walk of (template_id, created_at) that
        stops at `sample`, and only those runs' AI usage is summed."""
        wanted = values(column("template_id", Uuid), name="wanted").data(
            [(t,) for t in template_ids]
        )
        latest = (
            select(Execution.id, Execution.tenant_id)
            .join(Tenant, Tenant.id == Execution.tenant_id)
            .where(
                Execution.template_id == wanted.c.template_id,
                Execution.created_at >= since,
                Execution.status == "COMPLETED",
                Tenant.tier == tier,
            )
            .order_by(Execution.created_at.desc())
            .limit(sample)
            .lateral("latest")
        )
        cost = (
            select(func.coalesce(func.sum(AiUsage.cost_usd), 0))
            .where(AiUsage.execution_id == latest.c.id, AiUsage.tenant_id == latest.c.tenant_id)
            .scalar_subquery()
        )
        runs = (
            select(wanted.c.template_id, latest.c.tenant_id, cost.label("cost"))
            .select_from(wanted)
            .join(latest, true())
            .cte("runs")
        )
        per_tenant = (
            select(runs.c.template_id, runs.c.tenant_id, func.count().label("n"))
            .where(runs.c.tenant_id != caller)
            .group_by(runs.c.template_id, runs.c.tenant_id)
            .subquery("per_tenant")
        )
        others = (
            select(
                per_tenant.c.template_id,
                func.count().label("tenants"),
                func.sum(per_tenant.c.n).label("runs"),
                func.max(per_tenant.c.n).label("top"),
            )
            .group_by(per_tenant.c.template_id)
            .subquery("others")
        )
        own = runs.c.tenant_id == caller
        query = (
            select(
                runs.c.template_id,
                func.count(),
                func.percentile_cont(0.5).within_group(runs.c.cost),
                func.percentile_cont(0.95).within_group(runs.c.cost),
                func.count().filter(own),
                func.percentile_cont(0.5).within_group(runs.c.cost).filter(own),
                func.percentile_cont(0.95).within_group(runs.c.cost).filter(own),
                func.max(others.c.tenants),
                func.max(others.c.runs),
                func.max(others.c.top),
            )
            .outerjoin(others, others.c.template_id == runs.c.template_id)
            .group_by(runs.c.template_id)
        )
        return {
            r[0]: TemplateRuns(
                every=RunCosts(int(r[1]), _decimal(r[2]), _decimal(r[3])),
                own=RunCosts(int(r[4]), _decimal(r[5]), _decimal(r[6])),
                other_tenants=int(r[7] or 0),
                other_runs=int(r[8] or 0),
                top_other_runs=int(r[9] or 0),
            )
            for r in (await self.session.execute(query)).all()
        }


def _decimal(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))
