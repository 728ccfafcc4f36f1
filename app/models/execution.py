"""Executions of a template version and their audit trail of numbered events."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, Timestamps, UUIDPk, utcnow
from app.models.states import HOLDS_SLOT_SQL, STATUSES, TERMINAL, Status

# Finished statuses, in the table's order, and as SQL spelled with constants: queries repeat it
# as it is, so the partial index below stays usable by every plan of a prepared statement (a
# generic plan cannot match bound parameters against an index predicate).
FINISHED: tuple[str, ...] = tuple(s.value for s in Status if s in TERMINAL)
FINISHED_SQL = f"status IN {FINISHED}"  # status IN ('COMPLETED', 'FAILED', 'CANCELLED')


class Execution(UUIDPk, Timestamps, Base):
    __tablename__ = "executions"
    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key"),
        CheckConstraint(f"status IN {STATUSES}", name="status"),
        Index("ix_executions_tenant_created", "tenant_id", "created_at", "id"),
        Index("ix_executions_tenant_status_created", "tenant_id", "status", "created_at", "id"),
        # Popularity (runs in the last 30 days per template).
        Index("ix_executions_template_created", "template_id", "created_at"),
        # Filtered lists (0010; bench/execution_filters.py): one template's runs of a tenant,
        # and paramsContains (`params @> ...`).
        Index(
            "ix_executions_tenant_template_created", "tenant_id", "template_id", "created_at", "id"
        ),
        Index(
            "ix_executions_params",
            "params",
            postgresql_using="gin",
            postgresql_ops={"params": "jsonb_path_ops"},
        ),
        # The operator's planning views read every tenant's runs of a window (0015).
        Index(
            "ix_executions_created",
            "created_at",
            postgresql_include=["tenant_id", "status", "started_at", "finished_at"],
        ),
        # Completions per hour, every tenant's (capacityPlan's measured peak; 0015).
        Index(
            "ix_executions_finished",
            "finished_at",
            postgresql_where=text(FINISHED_SQL),
        ),
        # The executions feed sweeps a tenant's recently changed executions.
        Index("ix_executions_tenant_updated", "tenant_id", "updated_at"),
        # The reconciler pages through executions whose workflow should be alive (few).
        Index(
            "ix_executions_started",
            "created_at",
            "id",
            postgresql_where=text(HOLDS_SLOT_SQL),
        ),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    template_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("templates.id"), index=True)
    template_version_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("template_versions.id"))
    params: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(10), default="PENDING")
    progress: Mapped[float] = mapped_column(default=0.0)
    current_step: Mapped[str | None] = mapped_column(String(100))
    result: Mapped[Any | None]
    error: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    workflow_id: Mapped[str] = mapped_column(String(200), unique=True)
    run_id: Mapped[str | None] = mapped_column(String(100))
    last_seq: Mapped[int] = mapped_column(default=0)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    # The tenant's tier when the execution was created, then when each of its runs was started
    # (admission may start a queued run after a tier change): what analytics group and
    # estimate by. NULL for executions created before migration 0019: readers fall back to the
    # tenant's current tier.
    tier: Mapped[str | None] = mapped_column(String(20))
    # The run's AI usage summed (migration 0022): the cost of its ai_usage rows, and how many of
    # them a model answered (not the baseline, not a fallback). NULL until its first usage row.
    # Kept by the ai_usage_add_to_run trigger on every ai_usage INSERT, never written here: the ORM
    # updates only the columns it changed, so a recorder holding a stale copy leaves them be.
    ai_cost_usd: Mapped[Decimal | None] = mapped_column(Numeric(18, 6))
    ai_answered_calls: Mapped[int | None]


class ExecutionEvent(Base):
    __tablename__ = "execution_events"
    __table_args__ = (
        UniqueConstraint("execution_id", "seq"),
        # Retried recording activities carry the same key, so an event is written once.
        UniqueConstraint("execution_id", "key"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    execution_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("executions.id", ondelete="CASCADE"))
    seq: Mapped[int]
    key: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(30))
    status: Mapped[str] = mapped_column(String(10))
    progress: Mapped[float]
    step_id: Mapped[str | None] = mapped_column(String(100))
    message: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    at: Mapped[datetime] = mapped_column(default=utcnow)
