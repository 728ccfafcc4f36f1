"""Outbound webhooks (app/webhooks): a tenant's endpoints and the log of what was sent to them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, Timestamps, UUIDPk

DELIVERY_STATUSES: tuple[str, ...] = ("PENDING", "DELIVERED", "FAILED")


class Webhook(UUIDPk, Timestamps, Base):
    """An endpoint that receives the tenant's notifications of `events`, signed with `secret`.
    `last_seq` is the dispatcher's cursor in the tenant's notification log."""

    __tablename__ = "webhooks"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[list[str]] = mapped_column(ARRAY(String(40)))
    # `whsec_<base64>` sealed with WEBHOOK_SECRET_KEY (app/webhooks/secret_box.py): never
    # returned by the API after creation (docs/webhooks.md).
    secret: Mapped[str] = mapped_column(String(300))
    enabled: Mapped[bool] = mapped_column(default=True)
    # Why the service disabled it (410 Gone), or None.
    disabled_reason: Mapped[str | None] = mapped_column(String(200))
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)


class WebhookDelivery(UUIDPk, Timestamps, Base):
    """One notification sent (or being sent) to one webhook, with its attempts' outcome.
    Automatic deliveries are unique per (webhook, seq); a redelivery is a row of its own."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        CheckConstraint(f"status IN {DELIVERY_STATUSES}", name="status"),
        Index(
            "uq_webhook_deliveries_webhook_seq",
            "webhook_id",
            "seq",
            unique=True,
            postgresql_where=text("redelivery_of IS NULL"),
        ),
        # Listing a webhook's log, newest first.
        Index("ix_webhook_deliveries_webhook_created", "webhook_id", "created_at", "id"),
        # The dispatcher's claim of rows whose workflow has not been started (per tenant).
        Index(
            "ix_webhook_deliveries_unstarted",
            "tenant_id",
            "created_at",
            "id",
            postgresql_where=text("started_at IS NULL"),
        ),
        # A tenant's deletion cascades here.
        Index("ix_webhook_deliveries_tenant_id", "tenant_id"),
        # The retention purge of finished rows (migration 0013).
        Index(
            "ix_webhook_deliveries_finished",
            "created_at",
            postgresql_where=text("status <> 'PENDING'"),
        ),
        Index(
            "ix_webhook_deliveries_redelivery_of",
            "redelivery_of",
            postgresql_where=text("redelivery_of IS NOT NULL"),
        ),
        # The sweep of stalled PENDING rows.
        Index(
            "ix_webhook_deliveries_pending",
            "created_at",
            postgresql_where=text("status = 'PENDING'"),
        ),
    )

    webhook_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(BigInteger)
    event_type: Mapped[str] = mapped_column(String(40))
    # The signed body, fixed when the row is made: every attempt sends the same bytes.
    payload: Mapped[dict[str, Any]]
    redelivery_of: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="SET NULL")
    )
    status: Mapped[str] = mapped_column(String(20), default="PENDING")
    attempts: Mapped[int] = mapped_column(default=0)
    status_code: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(String(300))
    started_at: Mapped[datetime | None]  # its workflow was started
    last_attempt_at: Mapped[datetime | None]
    next_attempt_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
