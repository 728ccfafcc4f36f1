"""SQL of the SLA report (app/analytics/sla.py): a tenant's runs created in a window, judged
against the duration target in force for each (app/sla/repository.py: override, else the
run's version's block), grouped per template; and the page of runs that breached.

Index use (checked with EXPLAIN on 1M executions, docs/analytics.md "SLAs"): the tenant's
runs in the window come from ix_executions_tenant_created (all templates) or
ix_executions_tenant_template_created (one template; also the breached page, read backwards
in (created_at, id) order); the versions (by primary key, hashed: a template has few) and the
tenant's overrides (primary key) are joined to them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Float, Select, cast, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Execution, TemplateSla, TemplateVersion
from app.models.states import TERMINAL, Status
from app.sla.repository import join_targets, max_duration_in_force

_TERMINAL = sorted(s.value for s in TERMINAL)


@dataclass(frozen=True)
class RunStats:
    template_id: uuid.UUID
    runs: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    measured: int = 0  # runs with a duration target that ended, or are open past it
    breached: int = 0  # of those, over the target


def _seconds_so_far(now: datetime) -> ColumnElement[Any]:
    """Creation to the end (or to `now` while open), in seconds."""
    end = func.coalesce(Execution.finished_at, now)
    return cast(func.extract("epoch", end - Execution.created_at), Float)


def _breached(now: datetime) -> ColumnElement[bool]:
    target = max_duration_in_force()
    return target.is_not(None) & (_seconds_so_far(now) > target)


def run_stats_query(
    tenant_id: uuid.UUID,
    since: datetime,
    until: datetime,
    now: datetime,
    template_id: uuid.UUID | None,
) -> Select[Any]:
    """SlaReportRepository.run_stats' statement (bench/sla.py EXPLAINs it)."""
    target = max_duration_in_force()
    ended = Execution.status.in_(_TERMINAL)
    measured = target.is_not(None) & (ended | (_seconds_so_far(now) > target))

    def count(condition: ColumnElement[bool]) -> Any:
        return func.count().filter(condition)

    query = join_targets(
        select(
            Execution.template_id,
            func.count(),
            count(Execution.status == Status.COMPLETED.value),
            count(Execution.status == Status.FAILED.value),
            count(Execution.status == Status.CANCELLED.value),
            count(measured),
            count(_breached(now)),
        )
    ).where(
        Execution.tenant_id == tenant_id,
        Execution.created_at >= since,
        Execution.created_at < until,
    )
    if template_id is not None:
        query = query.where(Execution.template_id == template_id)
    else:
        has_target = TemplateSla.tenant_id.is_not(None) | TemplateVersion.sla.is_not(None)
        query = query.having(func.bool_or(has_target))
    return query.group_by(Execution.template_id)


class SlaReportRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def run_stats(
        self,
        tenant_id: uuid.UUID,
        since: datetime,
        until: datetime,
        now: datetime,
        template_id: uuid.UUID | None,
    ) -> list[RunStats]:
        """Per template with runs in [since, until): counts and duration verdicts. Without
        `template_id`, only templates with a target in force for some run (an override, or a
        version with an `sla` block)."""
        query = run_stats_query(tenant_id, since, until, now, template_id)
        return [RunStats(*row) for row in await self.session.execute(query)]

    async def breached_runs(
        self,
        tenant_id: uuid.UUID,
        template_id: uuid.UUID,
        since: datetime,
        until: datetime,
        now: datetime,
        *,
        before: tuple[datetime, uuid.UUID] | None,
        limit: int,
    ) -> list[Execution]:
        """The runs of [since, until) over their duration target (ended, or open past it),
        newest first, after the keyset position `before`."""
        query = join_targets(select(Execution)).where(
            Execution.tenant_id == tenant_id,
            Execution.template_id == template_id,
            Execution.created_at >= since,
            Execution.created_at < until,
            _breached(now),
        )
        if before is not None:
            query = query.where(tuple_(Execution.created_at, Execution.id) < before)
        query = query.order_by(Execution.created_at.desc(), Execution.id.desc()).limit(limit)
        return list(await self.session.scalars(query))
