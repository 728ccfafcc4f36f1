"""SQL for executions and their events."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import String, cast, func, literal, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from app.models import Execution, ExecutionEvent, Template, TemplateVersion, Tenant
from app.models.states import OPEN, EventType, Status

# states.is_queued and states.holds_slot as SQL.
QUEUED = (Execution.status == Status.PENDING.value) & Execution.run_id.is_(None)
STARTED = Execution.status.in_([s.value for s in OPEN]) | (
    (Execution.status == Status.PENDING.value) & Execution.run_id.is_not(None)
)


@dataclass(frozen=True)
class ExecutionCriteria:
    """Which of a tenant's executions a list, count or bulk cancel is about; None matches
    any. `created_from` is inclusive, `created_before` exclusive."""

    statuses: tuple[str, ...] | None = None
    template_ids: tuple[uuid.UUID, ...] | None = None
    created_from: datetime | None = None
    created_before: datetime | None = None
    params_contains: dict[str, Any] | None = None


@dataclass(frozen=True)
class OpenExecution:
    """What the reconciler needs to ask Temporal about an execution and to page on, and what
    the row looked like then (run, last event, last change): a verdict about it holds only
    while the row is still that."""

    id: uuid.UUID
    workflow_id: str
    run_id: str | None
    created_at: datetime
    last_seq: int
    updated_at: datetime


class ExecutionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, execution: Execution) -> Execution:
        self.session.add(execution)
        await self.session.flush()
        return execution

    async def get_for_tenant(
        self, tenant_id: uuid.UUID, execution_id: uuid.UUID
    ) -> Execution | None:
        return await self.session.scalar(
            select(Execution).where(Execution.id == execution_id, Execution.tenant_id == tenant_id)
        )

    async def get_many_for_tenant(
        self, tenant_id: uuid.UUID, ids: list[uuid.UUID]
    ) -> dict[uuid.UUID, Execution]:
        rows = await self.session.scalars(
            select(Execution).where(Execution.id.in_(ids), Execution.tenant_id == tenant_id)
        )
        return {e.id: e for e in rows}

    async def lock(self, execution_id: uuid.UUID) -> Execution | None:
        return await self.session.scalar(
            select(Execution)
            .where(Execution.id == execution_id)
            # FOR NO KEY UPDATE: serialises writers of this row but, unlike FOR UPDATE, does
            # not block inserts that reference it (ai_usage, events) while it is held.
            .with_for_update(key_share=True)
            # The row may already be in this session (read before locking): refresh it, or
            # last_seq would be stale and two writers could take the same seq.
            .execution_options(populate_existing=True)
        )

    async def by_idempotency_key(self, tenant_id: uuid.UUID, key: str) -> Execution | None:
        return await self.session.scalar(
            select(Execution).where(
                Execution.tenant_id == tenant_id, Execution.idempotency_key == key
            )
        )

    async def list_for_tenant(
        self,
        tenant_id: uuid.UUID,
        criteria: ExecutionCriteria,
        *,
        limit: int,
        cursor: list[Any] | None,
        forward: bool = True,
    ) -> list[Execution]:
        """Up to `limit` matching executions past the cursor, newest first when `forward`,
        oldest first when not (the caller reverses a backward page)."""
        query = select(Execution).where(*self._matching(tenant_id, criteria))
        if cursor is not None:
            key = tuple_(Execution.created_at, Execution.id)
            at = (datetime.fromisoformat(cursor[0]), uuid.UUID(cursor[1]))
            query = query.where(key < at if forward else key > at)
        order = (Execution.created_at, Execution.id)
        query = query.order_by(*(c.desc() if forward else c.asc() for c in order)).limit(limit)
        return list(await self.session.scalars(query))

    async def any_beyond(
        self, tenant_id: uuid.UUID, criteria: ExecutionCriteria, cursor: list[Any], *, newer: bool
    ) -> bool:
        """Whether a matching execution sits at the cursor or on its `newer` (or older) side:
        the other direction's page info, one index probe."""
        key = tuple_(Execution.created_at, Execution.id)
        at = (datetime.fromisoformat(cursor[0]), uuid.UUID(cursor[1]))
        query = (
            select(Execution.id)
            .where(*self._matching(tenant_id, criteria), key >= at if newer else key <= at)
            .limit(1)
        )
        return await self.session.scalar(query) is not None

    async def count_for_tenant(
        self, tenant_id: uuid.UUID, criteria: ExecutionCriteria, *, cap: int
    ) -> int:
        """How many executions match, counted up to `cap` (a count past it returns cap + 1,
        so the caller knows there are more without reading them all)."""
        capped = (
            select(literal(1)).where(*self._matching(tenant_id, criteria)).limit(cap + 1)
        ).subquery()
        return int(await self.session.scalar(select(func.count()).select_from(capped)) or 0)

    async def template_ids_named(self, tenant_id: uuid.UUID, name: str) -> tuple[uuid.UUID, ...]:
        """The templates with this name that the tenant's executions can run: its own, the
        platform's, and other publishers' shared or public ones (not their private ones, of
        which every tenant may have one by this name). The filter then names ids, which the
        planner has statistics for: a name in a subquery is guessed common, and a rare
        template's page walked all of a tenant's rows."""
        rows = await self.session.scalars(
            select(Template.id).where(
                Template.name == name,
                (Template.tenant_id == tenant_id)
                | Template.tenant_id.is_(None)
                | (Template.visibility != "PRIVATE"),
            )
        )
        return tuple(rows)

    @staticmethod
    def _matching(tenant_id: uuid.UUID, criteria: ExecutionCriteria) -> list[Any]:
        """The WHERE clauses of a filter: the tenant's executions, always."""
        where: list[Any] = [Execution.tenant_id == tenant_id]
        if criteria.statuses is not None:
            where.append(Execution.status.in_(criteria.statuses))
        if criteria.template_ids is not None:
            where.append(Execution.template_id.in_(criteria.template_ids))
        if criteria.created_from is not None:
            where.append(Execution.created_at >= criteria.created_from)
        if criteria.created_before is not None:
            where.append(Execution.created_at < criteria.created_before)
        if criteria.params_contains is not None:
            where.append(Execution.params.contains(criteria.params_contains))
        return where

    async def typical_duration(self, template_id: uuid.UUID, limit: int = 50) -> float | None:
        """Median seconds from start to finish of the template's recent completed runs."""
        recent = (
            select((func.extract("epoch", Execution.finished_at - Execution.started_at)).label("d"))
            .where(
                Execution.template_id == template_id,
                Execution.status == Status.COMPLETED.value,
                Execution.started_at.is_not(None),
            )
            .order_by(Execution.finished_at.desc())
            .limit(limit)
            .subquery()
        )
        value = await self.session.scalar(
            select(func.percentile_cont(0.5).within_group(recent.c.d))
        )
        return float(value) if value is not None else None

    async def event_by_key(self, execution_id: uuid.UUID, key: str) -> ExecutionEvent | None:
        return await self.session.scalar(
            select(ExecutionEvent).where(
                ExecutionEvent.execution_id == execution_id, ExecutionEvent.key == key
            )
        )

    async def event_keys(self, execution_id: uuid.UUID) -> set[str]:
        """Keys of every event recorded for the execution (replay after a restore skips them)."""
        rows = await self.session.scalars(
            select(ExecutionEvent.key).where(ExecutionEvent.execution_id == execution_id)
        )
        return set(rows)

    async def version_id(self, template_id: uuid.UUID, version: int) -> uuid.UUID | None:
        return await self.session.scalar(
            select(TemplateVersion.id).where(
                TemplateVersion.template_id == template_id, TemplateVersion.version == version
            )
        )

    async def add_event_once(
        self, execution_id: uuid.UUID, *, with_ai_cost: bool, **values: Any
    ) -> ExecutionEvent | None:
        """Insert the event unless one with its key exists (None then), in one statement.
        The payload gets `cost_usd`: what the execution's AI calls have cost so far, read in
        the same statement (every event carries it, so a live view shows it grow) from the
        run's row, where the ai_usage trigger keeps the sum (migration 0022): one key lookup,
        where summing ai_usage read every call of a run (one per recipient in a campaign)
        for each of its events."""
        cost = (
            select(func.coalesce(Execution.ai_cost_usd, 0))
            .where(Execution.id == execution_id)
            .scalar_subquery()
            if with_ai_cost
            else literal(0)
        )
        payload = cast(values.pop("payload"), JSONB).op("||")(
            func.jsonb_build_object("cost_usd", cast(cost, String))
        )
        statement = (
            insert(ExecutionEvent)
            .values(execution_id=execution_id, payload=payload, **values)
            .on_conflict_do_nothing(index_elements=["execution_id", "key"])
            .returning(ExecutionEvent)
        )
        return await self.session.scalar(statement)

    async def events_after(
        self, execution_id: uuid.UUID, after_seq: int, limit: int = 500
    ) -> list[ExecutionEvent]:
        rows = await self.session.scalars(
            select(ExecutionEvent)
            .where(ExecutionEvent.execution_id == execution_id, ExecutionEvent.seq > after_seq)
            .order_by(ExecutionEvent.seq)
            .limit(limit)
        )
        return list(rows)

    async def retry_count(self, execution_id: uuid.UUID) -> int:
        """How many times the execution was retried (its RETRIED events)."""
        count = await self.session.scalar(
            select(func.count()).where(
                ExecutionEvent.execution_id == execution_id,
                ExecutionEvent.type == EventType.RETRIED.value,
            )
        )
        return int(count or 0)

    async def step_outcomes(self, execution_id: uuid.UUID) -> list[ExecutionEvent]:
        """STEP_COMPLETED and STEP_COMPENSATED events in the order they happened (a step
        compensated in one run and completed again in the next is kept)."""
        rows = await self.session.scalars(
            select(ExecutionEvent)
            .where(
                ExecutionEvent.execution_id == execution_id,
                ExecutionEvent.type.in_(
                    (EventType.STEP_COMPLETED.value, EventType.STEP_COMPENSATED.value)
                ),
                ExecutionEvent.step_id.is_not(None),
            )
            .order_by(ExecutionEvent.seq)
        )
        return list(rows)

    async def active_ids(
        self, tenant_id: uuid.UUID, criteria: ExecutionCriteria
    ) -> list[uuid.UUID]:
        """The tenant's executions matching the filter (bulk cancel; its statuses say which
        are active): queued ones (PENDING, no workflow) first, so cancelling the running ones
        cannot admit them meanwhile; then oldest first."""
        query = select(Execution.id).where(*self._matching(tenant_id, criteria))
        query = query.order_by(QUEUED.desc(), Execution.created_at)
        return list(await self.session.scalars(query))

    async def open_quiet_since(
        self,
        quiet_since: datetime,
        *,
        after: tuple[datetime, uuid.UUID] | None,
        limit: int,
    ) -> list[OpenExecution]:
        """Executions with a started workflow (RUNNING, PAUSED, or PENDING with a run id)
        unchanged since `quiet_since`, in (created_at, id) order after `after`."""
        query = select(
            Execution.id,
            Execution.workflow_id,
            Execution.run_id,
            Execution.created_at,
            Execution.last_seq,
            Execution.updated_at,
        ).where(STARTED, Execution.updated_at < quiet_since)
        if after is not None:
            query = query.where(tuple_(Execution.created_at, Execution.id) > after)
        query = query.order_by(Execution.created_at, Execution.id).limit(limit)
        return [OpenExecution(*row) for row in await self.session.execute(query)]

    async def set_run_id(
        self,
        execution: Execution,
        run_id: str | None,
        *,
        claimed: str | None,
        tier: str | None = None,
    ) -> bool:
        """Replace admission's claim on an execution by the run it started, by None (released:
        queued again) or by another marker, in one statement, whatever its status (the
        workflow may have recorded STARTED, even its end, already); with `tier`, record the
        tier the run was started at too. False when the claim is no longer there. The object
        follows quietly (no second write at the next flush)."""
        values: dict[str, Any] = {"run_id": run_id}
        if tier is not None:
            values["tier"] = tier
        result = await self.session.execute(
            update(Execution)
            .where(
                Execution.id == execution.id,
                Execution.run_id.is_(None) if claimed is None else Execution.run_id == claimed,
            )
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        changed = bool(result.rowcount)  # type: ignore[attr-defined]
        if changed:
            for name, value in values.items():
                set_committed_value(execution, name, value)
        return changed

    async def run_id_of(self, execution_id: uuid.UUID) -> str | None:
        return await self.session.scalar(
            select(Execution.run_id).where(Execution.id == execution_id)
        )

    async def tenant_tier(self, tenant_id: uuid.UUID) -> str | None:
        return await self.session.scalar(select(Tenant.tier).where(Tenant.id == tenant_id))

    async def launch_facts(self, execution: Execution) -> tuple[Tenant, Template, TemplateVersion]:
        """What starting one of the execution's runs needs, in one statement."""
        row = (
            await self.session.execute(
                select(Tenant, Template, TemplateVersion)
                .select_from(Tenant)
                .join(Template, Template.id == execution.template_id)
                .join(TemplateVersion, TemplateVersion.id == execution.template_version_id)
                .where(Tenant.id == execution.tenant_id)
            )
        ).one()
        return row[0], row[1], row[2]

    async def lock_tenant_admission(self, tenant_id: uuid.UUID) -> None:
        """Take the tenant's admission lock until the transaction ends: counting, starting,
        queueing and cancelling queued executions of one tenant are serialised by it."""
        await self.session.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"admission:{tenant_id}"}
        )

    async def started_count(self, tenant_id: uuid.UUID) -> int:
        """Started and not finished: RUNNING, PAUSED, or PENDING with a workflow started."""
        count = await self.session.scalar(
            select(func.count()).where(Execution.tenant_id == tenant_id, STARTED)
        )
        return int(count or 0)

    async def queued(self, tenant_id: uuid.UUID, limit: int) -> list[Execution]:
        """The tenant's executions waiting to start (PENDING, no workflow), oldest first."""
        rows = await self.session.scalars(
            select(Execution)
            .where(Execution.tenant_id == tenant_id, QUEUED)
            .order_by(Execution.created_at, Execution.id)
            .limit(limit)
        )
        return list(rows)

    async def queued_ahead(self, execution: Execution) -> int:
        """Executions of the same tenant that wait to start and arrived before this one."""
        count = await self.session.scalar(
            select(func.count()).where(
                Execution.tenant_id == execution.tenant_id,
                QUEUED,
                Execution.created_at < execution.created_at,
            )
        )
        return int(count or 0)

    async def tenants_with_queue(self) -> list[uuid.UUID]:
        rows = await self.session.scalars(select(Execution.tenant_id).where(QUEUED).distinct())
        return list(rows)
