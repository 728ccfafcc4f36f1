"""One row per AI call (or cache hit, or baseline fallback): tokens, cost, latency, outcome,
and a keyed fingerprint of the input (which inputs recur, for aiRecommendations)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, ForeignKey, Index, Numeric, String, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, utcnow


class AiUsage(Base):
    __tablename__ = "ai_usage"
    __table_args__ = (
        Index("ix_ai_usage_tenant_at", "tenant_id", "at"),
        # aiRecommendations' recurrence scan (0015): a tenant's paid calls with a fingerprint,
        # each input's calls side by side in time order.
        Index(
            "ix_ai_usage_repeats",
            "tenant_id",
            "task",
            "model",
            "input_hash",
            "at",
            postgresql_where=text("input_hash IS NOT NULL AND NOT cached"),
        ),
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
    # Keyed fingerprint of the normalised input (app/ai/input_hash.py), never the text; null for
    # calls decided before the input was looked at (AI off, tier) and rows older than 0015.
    input_hash: Mapped[str | None] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(default=utcnow)
