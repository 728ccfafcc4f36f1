"""SLA tables (app/sla): a tenant's override of a template's targets, and the breaches found.

A breach row is also the dedupe of its notification: one DURATION row per execution (the
sweep of runs still open past their target and the recorder at the run's end insert with ON
CONFLICT DO NOTHING, and only the inserter notifies), and at most one open (ended_at NULL)
SUCCESS_RATE row per tenant and template (a rate below target notifies once when it crosses,
not every evaluation round; the row is closed when the rate recovers)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, utcnow

BREACH_KINDS = ("DURATION", "SUCCESS_RATE")


class TemplateSla(Base):
    """A tenant's targets for one template; they replace the version's `sla` block whole."""

    __tablename__ = "template_slas"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    template_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("templates.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    max_duration_seconds: Mapped[float | None]
    min_success_rate: Mapped[float | None]
    window_seconds: Mapped[int]
    min_runs: Mapped[int]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(120))  # Principal.actor


class SlaBreach(Base):
    __tablename__ = "sla_breaches"
    __table_args__ = (
        CheckConstraint(f"kind IN {BREACH_KINDS}", name="kind"),
        Index(
            "ux_sla_breaches_execution",
            "execution_id",
            unique=True,
            postgresql_where=text("kind = 'DURATION'"),
        ),
        Index(
            "ux_sla_breaches_open_rate",
            "tenant_id",
            "template_id",
            unique=True,
            postgresql_where=text("kind = 'SUCCESS_RATE' AND ended_at IS NULL"),
        ),
        Index("ix_sla_breaches_tenant_template_started", "tenant_id", "template_id", "started_at"),
        # For the executions FK's cascades (the unique one above is partial: unusable there).
        Index("ix_sla_breaches_execution_id", "execution_id"),
        # For the retention purge's oldest rows (app/sla/retention.py; migration 0024).
        Index("ix_sla_breaches_started_at", "started_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    template_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("templates.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20))
    execution_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("executions.id", ondelete="CASCADE")
    )
    observed: Mapped[float]  # seconds (DURATION) or the success rate (SUCCESS_RATE)
    target: Mapped[float]
    runs: Mapped[int | None]  # SUCCESS_RATE: finished runs the rate was computed over
    window_seconds: Mapped[int | None]
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None]  # SUCCESS_RATE: when the rate was back on target
