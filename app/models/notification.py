"""A tenant's durable notification log (app/notifications) and its per-tenant sequence counter."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, utcnow

NOTIFICATION_TYPES: tuple[str, ...] = (
    "EXECUTION_COMPLETED",
    "EXECUTION_FAILED",
    "EXECUTION_CANCELLED",
    "BUDGET_THRESHOLD",
    "BUDGET_EXHAUSTED",
    "PUBLISHED",
    "SLA_BREACH",
)


class Notification(Base):
    """One notification: (tenant_id, seq) is its identity and its order."""

    __tablename__ = "notifications"
    __table_args__ = (
        CheckConstraint(f"type IN {NOTIFICATION_TYPES}", name="type"),
        # Retention deletes by age across tenants.
        Index("ix_notifications_created_at", "created_at"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    type: Mapped[str] = mapped_column(String(30))
    # No foreign key: the log outlives nothing it must not, and an insert checks nothing more.
    execution_id: Mapped[uuid.UUID | None]
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class NotificationCounter(Base):
    """The last seq handed out per tenant; its row lock orders the tenant's writers."""

    __tablename__ = "notification_counters"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
