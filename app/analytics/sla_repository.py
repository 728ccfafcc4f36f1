"""SQL of the SLA report (app/analytics/sla.py) over execution rows: a tenant's runs created
in some spans of time, judged against the duration target in force for each
(app/sla/repository.py: override, else the run's version's block), grouped per template (and
day, for the runs still open); and the page of runs that breached. The whole UTC days the SLA
rollup holds are read from it instead (app/analytics/sla_rollup.py says which).

Index use (checked with EXPLAIN on 1M executions, docs/analytics.md "SLAs"): the tenant's
runs in a span come from ix_executions_tenant_created (all templates) or
ix_executions_tenant_template_created (one template; also the breached page, read backwards
in (created_at, id) order); its open runs from ix_executions_tenant_status_created; the
versions (by primary key, hashed: a template has few) and the tenant's overrides (primary
key) are joined to them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields
from datetime import date, datetime
from typing import Any

from sqlalchemy import ColumnElement, Date, Float, Select, cast, func, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Execution, TemplateSla, TemplateVersion
from app.models.states import TERMINAL, Status
from app.sla.repository import join_targets, max_duration_in_force

ENDED = sorted(s.value for s in TERMINAL)
NOT_ENDED = sorted(s.value for s in Status if s not in TERMINAL)


@dataclass(frozen=True)
class RunStats:
    template_id: uuid.UUID
    runs: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    measured: int = 0  # runs with a duration target that ended, or are open past it
    breached: int = 0  # of those, over the target
    has_target: bool = False  # some run had a target in force (override or version block)

    def __add__(self, other: RunStats) -> RunStats:
        summed = {
            f.name: getattr(self, f.name) + getattr(other, f.name)
            for f in fields(self)
            if f.name not in ("template_id", "has_target")
        }
        return RunStats(self.template_id, **summed, has_target=self.has_target or other.has_target)


@dataclass(frozen=True)
class Span:
    """Runs created in [lo, hi), of one template (None: every template)."""

    lo: datetime
    hi: datetime
    template_id: uuid.UUID | None = None


def created_day() -> ColumnElement[date]:
    """A run's UTC day of creation (the rollups' day)."""
    return cast(func.timezone("UTC", Execution.created_at), Date)


def seconds_so_far(now: datetime) -> ColumnElement[Any]:
    """Creation to the end (or to `now` while open), in seconds."""
    end = func.coalesce(Execution.finished_at, now)
    return cast(func.extract("epoch", end - Execution.created_at), Float)


def breached(now: datetime) -> ColumnElement[bool]:
    target = max_duration_in_force()
    return target.is_not(None) & (seconds_so_far(now) > target)


def has_target() -> ColumnElement[bool]:
    return TemplateSla.tenant_id.is_not(None) | TemplateVersion.sla.is_not(None)


def _in_spans(spans: list[Span]) -> ColumnElement[bool]:
    arms = []
    for span in spans:
        arm = (Execution.created_at >= span.lo) & (Execution.created_at < span.hi)
        if span.template_id is not None:
            arm = arm & (Execution.template_id == span.template_id)
        arms.append(arm)
    return or_(*arms)


def _figures(now: datetime) -> list[Any]:
    """RunStats' figures after template_id, as aggregates over joined runs."""
    target = max_duration_in_force()
    measured = target.is_not(None) & (Execution.status.in_(ENDED) | (seconds_so_far(now) > target))

    def count(condition: ColumnElement[bool]) -> Any:
        return func.count().filter(condition)

    return [
        func.count(),
        count(Execution.status == Status.COMPLETED.value),
        count(Execution.status == Status.FAILED.value),
        count(Execution.status == Status.CANCELLED.value),
        count(measured),
        count(breached(now)),
        func.coalesce(func.bool_or(has_target()), False),
    ]


def run_stats_query(tenant_id: uuid.UUID, spans: list[Span], now: datetime) -> Select[Any]:
    """SlaReportRepository.run_stats' statement (bench/sla.py EXPLAINs it)."""
    query = join_targets(select(Execution.template_id, *_figures(now))).where(
        Execution.tenant_id == tenant_id, _in_spans(spans)
    )
    return query.group_by(Execution.template_id)


class SlaReportRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def run_stats(
        self, tenant_id: uuid.UUID, spans: list[Span], now: datetime
    ) -> list[RunStats]:
        """Per template with runs in the spans: counts and duration verdicts."""
        if not spans:
            return []
        query = run_stats_query(tenant_id, spans, now)
        return [RunStats(*row) for row in await self.session.execute(query)]

    async def open_run_stats(
        self,
        tenant_id: uuid.UUID,
        span: Span,
        now: datetime,
    ) -> list[tuple[date, RunStats]]:
        """Per template and UTC day, the runs of the span not ended yet (what the rollup
        does not hold): ix_executions_tenant_status_created, one range per open status."""
        day = created_day()
        query = (
            join_targets(select(day, Execution.template_id, *_figures(now)))
            .where(
                Execution.tenant_id == tenant_id,
                Execution.status.in_(NOT_ENDED),
                _in_spans([span]),
            )
            .group_by(day, Execution.template_id)
        )
        return [(row[0], RunStats(*row[1:])) for row in await self.session.execute(query)]

    async def breached_runs(
        self,
        tenant_id: uuid.UUID,
        template_id: uuid.UUID,
        spans: list[Span],
        now: datetime,
        *,
        before: tuple[datetime, uuid.UUID] | None,
        limit: int,
        open_only: bool = False,
    ) -> list[Execution]:
        """The runs of the spans over their duration target (ended, or open past it), newest
        first, after the keyset position `before` (only the open ones: `open_only`)."""
        query = join_targets(select(Execution)).where(
            Execution.tenant_id == tenant_id,
            Execution.template_id == template_id,
            _in_spans(spans),
            breached(now),
        )
        if open_only:
            query = query.where(Execution.status.in_(NOT_ENDED))
        if before is not None:
            query = query.where(tuple_(Execution.created_at, Execution.id) < before)
        query = query.order_by(Execution.created_at.desc(), Execution.id.desc()).limit(limit)
        return list(await self.session.scalars(query))
