"""All SQL of the webhooks: endpoints, the dispatcher's cursor and the delivery log."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.models import NotificationCounter, Webhook, WebhookDelivery


class WebhookRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, webhook: Webhook) -> Webhook:
        self.session.add(webhook)
        await self.session.flush()
        return webhook

    async def lock_tenant(self, tenant_id: uuid.UUID) -> None:
        """Serialise the tenant's webhook creations until commit, so that concurrent ones
        count one at a time (a transaction-scoped advisory lock: nothing else waits on it)."""
        await self.session.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"webhooks:{tenant_id}"}
        )

    async def count(self, tenant_id: uuid.UUID) -> int:
        query = select(func.count()).select_from(Webhook).where(Webhook.tenant_id == tenant_id)
        return int(await self.session.scalar(query) or 0)

    async def get(self, tenant_id: uuid.UUID, webhook_id: uuid.UUID) -> Webhook | None:
        return await self.session.scalar(
            select(Webhook).where(Webhook.id == webhook_id, Webhook.tenant_id == tenant_id)
        )

    async def page(
        self, tenant_id: uuid.UUID, after: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> list[Webhook]:
        """The tenant's webhooks, oldest first, after the (created_at, id) keyset position."""
        query = (
            select(Webhook)
            .where(Webhook.tenant_id == tenant_id)
            .order_by(Webhook.created_at, Webhook.id)
            .limit(limit)
        )
        if after is not None:
            query = query.where(tuple_(Webhook.created_at, Webhook.id) > after)
        return list(await self.session.scalars(query))

    async def delete(self, webhook: Webhook) -> None:
        await self.session.delete(webhook)
        await self.session.flush()

    async def behind_ids(self) -> list[uuid.UUID]:
        """Enabled webhooks whose tenant's log has gone past their cursor: one query, so an
        idle round costs the same with 10 webhooks or 10,000."""
        return list(
            await self.session.scalars(
                select(Webhook.id)
                .join(NotificationCounter, NotificationCounter.tenant_id == Webhook.tenant_id)
                .where(Webhook.enabled.is_(True), NotificationCounter.last_seq > Webhook.last_seq)
                .order_by(Webhook.id)
            )
        )

    async def lock_enabled(self, webhook_id: uuid.UUID) -> Webhook | None:
        """The webhook, row-locked for its dispatch, unless it is disabled, gone or being
        dispatched by another worker right now (SKIP LOCKED: that worker advances it)."""
        return await self.session.scalar(
            select(Webhook)
            .where(Webhook.id == webhook_id, Webhook.enabled.is_(True))
            .with_for_update(skip_locked=True)
        )

    async def add_deliveries(self, rows: list[dict[str, Any]]) -> list[uuid.UUID]:
        """Insert automatic deliveries in one statement, skipping (webhook, seq) pairs that
        have one; the ids of those added."""
        if not rows:
            return []
        statement = (
            insert(WebhookDelivery)
            .values([{"id": uuid.uuid4(), **row} for row in rows])
            .on_conflict_do_nothing(
                index_elements=["webhook_id", "seq"],
                index_where=WebhookDelivery.redelivery_of.is_(None),
            )
            .returning(WebhookDelivery.id)
        )
        return list(await self.session.scalars(statement))

    async def add_redelivery(self, delivery: WebhookDelivery) -> WebhookDelivery:
        original = delivery.redelivery_of or delivery.id
        row = WebhookDelivery(
            id=uuid.uuid4(),
            webhook_id=delivery.webhook_id,
            tenant_id=delivery.tenant_id,
            seq=delivery.seq,
            event_type=delivery.event_type,
            payload=delivery.payload,
            redelivery_of=original,
            status="PENDING",
            attempts=0,
        )
        self.session.add(row)
        await self.session.flush()
        return row

    async def delivery(
        self, tenant_id: uuid.UUID | None, delivery_id: uuid.UUID
    ) -> WebhookDelivery | None:
        """A delivery (of `tenant_id`'s, unless None)."""
        query = select(WebhookDelivery).where(WebhookDelivery.id == delivery_id)
        if tenant_id is not None:
            query = query.where(WebhookDelivery.tenant_id == tenant_id)
        return await self.session.scalar(query)

    async def lock_delivery(self, delivery_id: uuid.UUID) -> WebhookDelivery | None:
        return await self.session.scalar(
            select(WebhookDelivery).where(WebhookDelivery.id == delivery_id).with_for_update()
        )

    async def deliveries(
        self, webhook_id: uuid.UUID, before: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> list[WebhookDelivery]:
        """A webhook's deliveries, newest first, before the (created_at, id) position."""
        query = (
            select(WebhookDelivery)
            .where(WebhookDelivery.webhook_id == webhook_id)
            .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
            .limit(limit)
        )
        if before is not None:
            query = query.where(tuple_(WebhookDelivery.created_at, WebhookDelivery.id) < before)
        return list(await self.session.scalars(query))

    async def claim_unstarted(self, limit: int) -> list[WebhookDelivery]:
        """Up to `limit` deliveries whose workflow has not been started, row-locked until
        commit; rows another worker holds are skipped (SKIP LOCKED), so two workers never
        claim the same row. Tenants take turns: each tenant's oldest row first, then each
        one's second, ..., so one tenant's backlog does not hold back another's delivery."""
        rank = (
            func.row_number()
            .over(
                partition_by=WebhookDelivery.tenant_id,
                order_by=(WebhookDelivery.created_at, WebhookDelivery.id),
            )
            .label("rank")
        )
        ranked = (
            select(WebhookDelivery.id, rank).where(WebhookDelivery.started_at.is_(None)).subquery()
        )
        return list(
            await self.session.scalars(
                select(WebhookDelivery)
                .join(ranked, ranked.c.id == WebhookDelivery.id)
                .where(WebhookDelivery.started_at.is_(None))
                .order_by(ranked.c.rank, WebhookDelivery.created_at, WebhookDelivery.id)
                .limit(limit)
                .with_for_update(of=WebhookDelivery, skip_locked=True)
            )
        )

    async def mark_started(self, delivery_ids: list[uuid.UUID], at: datetime) -> None:
        if delivery_ids:
            await self.session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id.in_(delivery_ids))
                .values(started_at=at)
            )

    async def fail_pending(self, delivery_id: uuid.UUID, error: str) -> bool:
        """End a delivery FAILED with `error`, unless it already ended; True when it did."""
        done = await self.session.scalar(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == "PENDING")
            .values(status="FAILED", error=error, next_attempt_at=None)
            .returning(WebhookDelivery.id)
        )
        return done is not None

    async def stalled(self, before: datetime, limit: int) -> list[WebhookDelivery]:
        """Started deliveries still PENDING whose last sign of life (start, or the due time of
        their next attempt) is older than `before`: their workflow may have ended without
        recording an outcome."""
        last_seen = func.coalesce(WebhookDelivery.next_attempt_at, WebhookDelivery.started_at)
        return list(
            await self.session.scalars(
                select(WebhookDelivery)
                .where(
                    WebhookDelivery.status == "PENDING",
                    WebhookDelivery.started_at.is_not(None),
                    last_seen < before,
                )
                .order_by(WebhookDelivery.created_at)
                .limit(limit)
            )
        )

    async def delete_finished_before(self, cutoff: datetime, limit: int) -> int:
        """Delete up to `limit` DELIVERED or FAILED deliveries created before `cutoff`;
        returns how many. An original goes only once no redelivery points to it: deleting it
        first would turn its redeliveries into automatic rows, two of which break the unique
        (webhook, seq) index."""
        redelivery = aliased(WebhookDelivery)
        oldest = (
            select(WebhookDelivery.id)
            .where(
                WebhookDelivery.status != "PENDING",
                WebhookDelivery.created_at < cutoff,
                ~select(redelivery.id)
                .where(redelivery.redelivery_of == WebhookDelivery.id)
                .exists(),
            )
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        result = await self.session.execute(
            delete(WebhookDelivery).where(WebhookDelivery.id.in_(oldest))
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
