"""SQL for execution statistics: executions created in a window, grouped by a key (UTC day,
ISO week, template, status, tenant tier), with the same figures for each group's previous
period, in one statement.

The two periods are one `UNION ALL` of two index range scans over `executions` (tenant,
created_at): the current rows keyed as they are, the previous period's rows keyed as the
current bucket they precede (a DAY row of yesterday counts as the previous period of today's
bucket, a TEMPLATE row of the window before as the same template's). Each run's AI usage is
summed once in a grouped subquery joined by execution id (a hash join: one pass over the
tenant's usage since the previous period began, not one probe per run). Durations are
start-to-finish seconds of finished runs; `percentile_cont` with an array of fractions sorts
each group once for p50, p95 and p99, and skips runs without a duration (not finished).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    Select,
    String,
    and_,
    case,
    cast,
    func,
    literal,
    select,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from app.analytics.repository import FINISHED
from app.models import AiUsage, Execution, Template, Tenant

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


class StatsRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def figures(self, scope: StatsScope) -> dict[tuple[str, Any], Figures]:
        """{(period, key): Figures}, period "current" or "previous"; a key without runs in a
        period is absent. Keys: the bucket's start (DAY, WEEK: the UTC calendar day or ISO
        week, Monday 00:00 UTC), the template id, the status or the tier."""
        shift = scope.shift
        runs = union_all(
            self._runs(scope, "current", scope.since, scope.until, timedelta(0)),
            self._runs(scope, "previous", scope.since - shift, scope.until - shift, shift),
        ).subquery("runs")
        usage = self._usage(scope, scope.since - shift).subquery("usage")
        query = (
            select(
                runs.c.period,
                runs.c.key,
                func.count().label("total"),
                *(
                    func.count().filter(runs.c.status == s).label(s.lower())
                    for s in ("COMPLETED", "FAILED", "CANCELLED")
                ),
                func.percentile_cont(literal(list(PERCENTILES), ARRAY(Float)))
                .within_group(runs.c.seconds)
                .label("pct"),
                func.coalesce(func.sum(usage.c.cost), 0).label("cost"),
                func.count().filter(usage.c.ai).label("ai"),
            )
            .select_from(runs.outerjoin(usage, usage.c.execution_id == runs.c.id))
            .group_by(runs.c.period, runs.c.key)
        )
        out = {}
        for r in (await self.session.execute(query)).all():
            p50, p95, p99 = r.pct if r.pct is not None else (None, None, None)
            out[(r.period, r.key)] = Figures(
                total=int(r.total),
                completed=int(r.completed),
                failed=int(r.failed),
                cancelled=int(r.cancelled),
                p50_seconds=p50,
                p95_seconds=p95,
                p99_seconds=p99,
                ai_cost_usd=Decimal(r.cost),
                ai_enhanced=int(r.ai),
            )
        return out

    async def template_names(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
        if not ids:
            return {}
        rows = await self.session.execute(
            select(Template.id, Template.name).where(Template.id.in_(ids))
        )
        return {r.id: r.name for r in rows}

    async def tier_of(self, tenant_id: uuid.UUID) -> str | None:
        return await self.session.scalar(select(Tenant.tier).where(Tenant.id == tenant_id))

    def _runs(
        self, scope: StatsScope, period: str, lo: datetime, hi: datetime, shift: timedelta
    ) -> Select[Any]:
        seconds = case(
            (
                Execution.status.in_(FINISHED),
                func.extract("epoch", Execution.finished_at - Execution.started_at),
            )
        )
        query = select(
            literal(period, String).label("period"),
            self._key(scope, shift).label("key"),
            Execution.id,
            Execution.status,
            seconds.label("seconds"),
        ).where(*self._matching(scope), Execution.created_at >= lo, Execution.created_at < hi)
        if scope.group_by == "TIER":
            query = query.join(Tenant, Tenant.id == Execution.tenant_id)
        return query

    @staticmethod
    def _key(scope: StatsScope, shift: timedelta) -> ColumnElement[Any]:
        if scope.group_by in CALENDAR:
            unit = CALENDAR[scope.group_by][0]
            return func.date_trunc(unit, Execution.created_at + shift, "UTC")
        if scope.group_by == "TEMPLATE":
            return cast(Execution.template_id, String)
        if scope.group_by == "STATUS":
            return cast(Execution.status, String)
        return cast(Tenant.tier, String)

    @staticmethod
    def _matching(scope: StatsScope) -> list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = []
        if scope.tenant_id is not None:
            where.append(Execution.tenant_id == scope.tenant_id)
        if scope.statuses is not None:
            where.append(Execution.status.in_(scope.statuses))
        if scope.template_ids is not None:
            where.append(Execution.template_id.in_(scope.template_ids))
        if scope.params_contains is not None:
            where.append(Execution.params.contains(scope.params_contains))
        return where

    @staticmethod
    def _usage(scope: StatsScope, since: datetime) -> Select[Any]:
        """Each run's AI cost, and whether a model answered one of its calls (not the
        baseline, not a fallback). Usage is recorded after its run was created, so rows before
        the earliest period's start cannot belong to a run counted here."""
        where = [AiUsage.execution_id.is_not(None), AiUsage.at >= since]
        if scope.tenant_id is not None:
            where.append(AiUsage.tenant_id == scope.tenant_id)
        answered = and_(AiUsage.provider != "baseline", AiUsage.fallback_reason.is_(None))
        return (
            select(
                AiUsage.execution_id,
                func.sum(AiUsage.cost_usd).label("cost"),
                func.bool_or(answered).label("ai"),
            )
            .where(*where)
            .group_by(AiUsage.execution_id)
        )
