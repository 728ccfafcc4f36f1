"""SQL for executions and their events."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import AiUsage, Execution, ExecutionEvent


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
        *,
        status: str | None,
        limit: int,
        after: list[Any] | None,
    ) -> list[Execution]:
        query = select(Execution).where(Execution.tenant_id == tenant_id)
        if status is not None:
            query = query.where(Execution.status == status)
        if after is not None:
            at, last_id = datetime.fromisoformat(after[0]), uuid.UUID(after[1])
            query = query.where(tuple_(Execution.created_at, Execution.id) < (at, last_id))
        query = query.order_by(Execution.created_at.desc(), Execution.id.desc()).limit(limit)
        return list(await self.session.scalars(query))

    async def typical_duration(self, template_id: uuid.UUID, limit: int = 50) -> float | None:
        """Median seconds from start to finish of the template's recent completed runs."""
        recent = (
            select((func.extract("epoch", Execution.finished_at - Execution.started_at)).label("d"))
            .where(
                Execution.template_id == template_id,
                Execution.status == "COMPLETED",
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

    async def ai_cost(self, execution_id: uuid.UUID) -> Decimal:
        """What the execution's AI calls have cost so far (every call, hit and fallback)."""
        total = await self.session.scalar(
            select(func.coalesce(func.sum(AiUsage.cost_usd), 0)).where(
                AiUsage.execution_id == execution_id
            )
        )
        return Decimal(total or 0)

    async def add_event(self, event: ExecutionEvent) -> ExecutionEvent:
        self.session.add(event)
        await self.session.flush()
        return event

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
