"""One row per AI call (or cache hit, or baseline fallback): tokens, cost, latency, outcome."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, ForeignKey, Index, Numeric, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, utcnow


class AiUsage(Base):
    __tablename__ = "ai_usage"
    __table_args__ = (
        Index("ix_ai_usage_tenant_at", "tenant_id", "at"),
        # Every tenant's usage in a window: the tenant comparison (0015).
        Index("ix_ai_usage_at", "at", postgresql_include=["tenant_id", "cost_usd"]),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    execution_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("executions.id", ondelete="SET NULL"), index=True
    )
    step_id: Mapped[str | None] = mapped_column(String(100))
    task: Mapped[str] = mapped_column(String(40))
    provider: Mapped[str] = mapped_column(String(40))
    model: Mapped[str] = mapped_column(String(100))
    input_tokens: Mapped[int] = mapped_column(default=0)
    output_tokens: Mapped[int] = mapped_column(default=0)
    cost_usd: Mapped[Decimal] = mapped_column(Numeric(14, 6), default=Decimal(0))
    saved_usd: Mapped[Decimal] = mapped_column(Numeric(14, 6), default=Decimal(0))
    latency_ms: Mapped[int] = mapped_column(default=0)
    cached: Mapped[bool] = mapped_column(default=False)
    fallback_reason: Mapped[str | None] = mapped_column(String(40))
    outcome: Mapped[str] = mapped_column(String(20))
    at: Mapped[datetime] = mapped_column(default=utcnow)
