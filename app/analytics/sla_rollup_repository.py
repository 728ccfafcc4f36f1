"""SQL of the SLA daily rollup (app/models/sla_rollup.py): its rebuild from the executions,
the (tenant, template) pairs whose rows were judged against a target no longer in force, and
what the report reads of it (app/analytics/sla_rollup.py decides which days come from where).

A row's figures are those of its runs that had ended when it was built, judged against the
target in force then (`target`, the same SQL as the rows path: max_duration_in_force). The
report reads a row only while that target is the one in force now, so a row never needs the
override's history.

Every rebuild also records, per (tenant, template, version), the targets its rows were judged
against (`sla_rollup_targets`); the refresh compares that small table, not the whole rollup,
with the targets in force to find the pairs to rebuild (`stale`), so its cost does not grow
with the days rolled up. A pair rebuilt whole starts its record afresh."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, case, delete, exists, func, insert, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.analytics.plans import plan_for_values
from app.analytics.rollup_repository import day_start, save_rollup_state
from app.analytics.sla_repository import (
    ENDED,
    RunStats,
    created_day,
    has_target,
    seconds_so_far,
)
from app.models import (
    Execution,
    SlaRollup,
    SlaRollupState,
    SlaRollupTarget,
    TemplateSla,
    TemplateVersion,
)
from app.models.states import Status
from app.sla.repository import join_targets, max_duration_in_force


@dataclass(frozen=True)
class RolledDay:
    """One template's rolled-up figures for one day, and whether every row of it was judged
    against the target in force now (`in_force`); else the day is read from the rows."""

    day: date
    in_force: bool
    stats: RunStats


def _join_rollup_targets(query: Any, r: Any = SlaRollup) -> Any:
    """`query` over SlaRollup (or SlaRollupTarget) with its version and the tenant's override
    joined, for the target in force now."""
    return query.join(TemplateVersion, TemplateVersion.id == r.template_version_id).outerjoin(
        TemplateSla,
        and_(TemplateSla.tenant_id == r.tenant_id, TemplateSla.template_id == r.template_id),
    )


def _current(r: Any = SlaRollup) -> Any:
    return r.target.is_not_distinct_from(max_duration_in_force())


class SlaRollupRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def state(self) -> SlaRollupState | None:
        return await self.session.get(SlaRollupState, 1)

    async def custom_plans(self) -> None:
        """Plan every later statement of this transaction for its values: asyncpg prepares
        statements, and after five runs PostgreSQL may switch to a generic plan that cannot
        see which statuses, days or template are asked for (bench/sla.py: the open runs' count
        went from 30 ms to 300-500 ms on its 6th run on a connection)."""
        await plan_for_values(self.session, jit=True)

    async def save_state(self, complete_until: date, refreshed_from: datetime) -> None:
        await save_rollup_state(self.session, SlaRollupState, complete_until, refreshed_from)

    async def rebuild(
        self,
        first: date | None,
        end: date,
        built_at: datetime,
        *,
        tenant_id: uuid.UUID | None = None,
        template_id: uuid.UUID | None = None,
    ) -> int:
        """Rebuild the days [first, end) (first None: every day before `end`) of one tenant
        (or all), of one template (or all): a delete and one INSERT ... SELECT. Returns the
        rows written."""
        r = SlaRollup
        where = [r.day < end]
        runs = [Execution.created_at < day_start(end), Execution.status.in_(ENDED)]
        if first is not None:
            where.append(r.day >= first)
            runs.append(Execution.created_at >= day_start(first))
        if tenant_id is not None:
            where.append(r.tenant_id == tenant_id)
            runs.append(Execution.tenant_id == tenant_id)
        if template_id is not None:
            where.append(r.template_id == template_id)
            runs.append(Execution.template_id == template_id)
        await self.session.execute(delete(r).where(*where))
        if first is None:  # every day of the scope: its record starts afresh
            await self._forget_targets(tenant_id, template_id)
        rows = self._rows(runs, built_at)
        columns = [c.name for c in r.__table__.columns]
        result = await self.session.execute(insert(r).from_select(columns, rows))
        await self._record_targets(where)
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def _forget_targets(
        self, tenant_id: uuid.UUID | None, template_id: uuid.UUID | None
    ) -> None:
        t = SlaRollupTarget
        where = []
        if tenant_id is not None:
            where.append(t.tenant_id == tenant_id)
        if template_id is not None:
            where.append(t.template_id == template_id)
        await self.session.execute(delete(t).where(*where))

    async def _record_targets(self, where: list[Any]) -> None:
        """Add the targets of the rollup rows matching `where` to sla_rollup_targets."""
        r, t = SlaRollup, SlaRollupTarget
        keys = (r.tenant_id, r.template_id, r.template_version_id, r.target)
        columns = ["tenant_id", "template_id", "template_version_id", "target"]
        used = select(*keys).where(*where).distinct()
        await self.session.execute(pg_insert(t).from_select(columns, used).on_conflict_do_nothing())

    async def record_all_targets(self) -> bool:
        """Once, when sla_rollup_targets is empty and sla_rollup is not (after migration
        0025): record every row's target. Returns whether it did."""
        if await self.session.scalar(select(exists().select_from(SlaRollupTarget))):
            return False
        if not await self.session.scalar(select(exists().select_from(SlaRollup))):
            return False
        await self._record_targets([])
        return True

    @staticmethod
    def _rows(where: list[Any], built_at: datetime) -> Any:
        """The rollup rows of the ended runs matching `where`, in the table's column order.
        An ended run's duration does not depend on `built_at` (it has its finished_at)."""
        target = max_duration_in_force()
        day = created_day()
        over = target.is_not(None) & (seconds_so_far(built_at) > target)
        keys = (Execution.tenant_id, day, Execution.template_id, Execution.template_version_id)
        return (
            join_targets(
                select(
                    *keys,
                    func.min(target),
                    func.count(),
                    func.count().filter(Execution.status == Status.COMPLETED.value),
                    func.count().filter(Execution.status == Status.FAILED.value),
                    func.count().filter(Execution.status == Status.CANCELLED.value),
                    func.count().filter(over),
                )
            )
            .where(*where)
            .group_by(*keys)
        )

    async def analyze(self) -> None:
        """Fresh statistics after the first fill: until autovacuum gets to it, the planner
        would take the filled table for an empty one."""
        await self.session.execute(text("ANALYZE sla_rollup"))

    async def stale(self) -> list[tuple[uuid.UUID, uuid.UUID]]:
        """(tenant, template) pairs with rows judged against a target no longer in force (an
        override set, changed or cleared since): the refresh rebuilds them. Reads the recorded
        targets (one row per tenant, template and version), not the rollup."""
        t = SlaRollupTarget
        query = (
            _join_rollup_targets(select(t.tenant_id, t.template_id), t)
            .where(~_current(t))
            .distinct()
        )
        return [(tenant, template) for tenant, template in await self.session.execute(query)]

    async def days(
        self, tenant_id: uuid.UUID, first: date, end: date, template_id: uuid.UUID | None
    ) -> list[tuple[uuid.UUID, RolledDay]]:
        """Per template and day of [first, end) of the tenant: the rolled-up figures, and
        whether all of them were judged against the target in force now."""
        r = SlaRollup
        measured = case((r.target.is_not(None), r.ended), else_=0)
        query = _join_rollup_targets(
            select(
                r.template_id,
                r.day,
                func.bool_and(_current()),
                func.sum(r.ended),
                func.sum(r.completed),
                func.sum(r.failed),
                func.sum(r.cancelled),
                func.sum(measured),
                func.sum(r.breached),
                func.bool_or(has_target()),
            )
        ).where(r.tenant_id == tenant_id, r.day >= first, r.day < end)
        if template_id is not None:
            query = query.where(r.template_id == template_id)
        query = query.group_by(r.template_id, r.day)
        found = []
        for (
            template,
            day,
            in_force,
            ended,
            completed,
            failed,
            cancelled,
            measured,
            over,
            target,
        ) in await self.session.execute(query):
            stats = RunStats(
                template,
                int(ended),
                int(completed),
                int(failed),
                int(cancelled),
                int(measured),
                int(over),
                bool(target),
            )
            found.append((template, RolledDay(day, bool(in_force), stats)))
        return found

    async def changed(
        self,
        tenant_id: uuid.UUID,
        since: datetime,
        first: date,
        end: date,
        template_id: uuid.UUID | None,
    ) -> set[tuple[uuid.UUID, date]]:
        """(template, day) of the tenant's runs created in the days [first, end) and changed
        at or after `since`: the rollup may not hold their change yet
        (ix_executions_tenant_updated)."""
        day = created_day()
        query = (
            select(Execution.template_id, day)
            .where(
                Execution.tenant_id == tenant_id,
                Execution.updated_at >= since,
                Execution.created_at >= day_start(first),
                Execution.created_at < day_start(end),
            )
            .distinct()
        )
        if template_id is not None:
            query = query.where(Execution.template_id == template_id)
        return {(t, d) for t, d in await self.session.execute(query)}
