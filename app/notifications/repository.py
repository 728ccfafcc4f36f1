"""All SQL of the notification log: the numbered insert, reads after a seq, history pages,
retention."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, literal, select, tuple_
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import DateTime, String, Uuid

from app.models import Notification, NotificationCounter


class NotificationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(
        self,
        tenant_id: uuid.UUID,
        type: str,
        execution_id: uuid.UUID | None,
        data: dict[str, Any],
        at: datetime,
    ) -> int:
        """Append a notification with the tenant's next seq, in one statement; returns the seq.

        The counter's upsert takes its row lock, held until this transaction ends: the next
        writer of the tenant waits for it, so seqs become visible in order and without gaps."""
        counter = (
            insert(NotificationCounter)
            .values(tenant_id=tenant_id, last_seq=1)
            .on_conflict_do_update(
                index_elements=["tenant_id"],
                set_={"last_seq": NotificationCounter.last_seq + 1},
            )
            .returning(NotificationCounter.last_seq)
            .cte("counter")
        )
        row = select(
            literal(tenant_id, Uuid),
            counter.c.last_seq,
            literal(type, String),
            literal(execution_id, Uuid),
            literal(data, JSONB),
            literal(at, DateTime(timezone=True)),
        )
        statement = (
            insert(Notification)
            .from_select(["tenant_id", "seq", "type", "execution_id", "data", "created_at"], row)
            .returning(Notification.seq)
        )
        seq = await self.session.scalar(statement)
        assert seq is not None
        return int(seq)

    async def head(self, tenant_id: uuid.UUID) -> int:
        """The tenant's last committed seq (0 before its first notification)."""
        last = await self.session.scalar(
            select(NotificationCounter.last_seq).where(NotificationCounter.tenant_id == tenant_id)
        )
        return int(last or 0)

    async def after(
        self,
        tenant_id: uuid.UUID,
        after_seq: int,
        types: Sequence[str] | None,
        limit: int,
    ) -> list[Notification]:
        """The tenant's notifications with seq > after_seq (of `types`, if given), oldest first."""
        query = (
            select(Notification)
            .where(Notification.tenant_id == tenant_id, Notification.seq > after_seq)
            .order_by(Notification.seq)
            .limit(limit)
        )
        if types is not None:
            query = query.where(Notification.type.in_(types))
        return list(await self.session.scalars(query))

    async def before(
        self,
        tenant_id: uuid.UUID,
        before_seq: int | None,
        types: Sequence[str] | None,
        limit: int,
    ) -> list[Notification]:
        """The tenant's notifications with seq < before_seq (all when None), newest first."""
        query = (
            select(Notification)
            .where(Notification.tenant_id == tenant_id)
            .order_by(Notification.seq.desc())
            .limit(limit)
        )
        if before_seq is not None:
            query = query.where(Notification.seq < before_seq)
        if types is not None:
            query = query.where(Notification.type.in_(types))
        return list(await self.session.scalars(query))

    async def delete_older_than(self, cutoff: datetime, limit: int) -> int:
        """Delete up to `limit` notifications created before `cutoff`; returns how many.
        The counters stay, so a tenant's seqs never restart."""
        oldest = (
            select(Notification.tenant_id, Notification.seq)
            .where(Notification.created_at < cutoff)
            .limit(limit)
        )
        result = await self.session.execute(
            delete(Notification).where(tuple_(Notification.tenant_id, Notification.seq).in_(oldest))
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
