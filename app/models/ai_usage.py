"""One row per AI call (or cache hit, or baseline fallback): tokens, cost, latency, outcome,
a keyed fingerprint of the input, the attempts behind it and, for a repeated input, the time
since it was last paid for;
and the per-day rollup of those rows that aiRecommendations reads (kept by a trigger, 0017)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Date,
    FetchedValue,
    ForeignKey,
    Index,
    Numeric,
    SmallInteger,
    String,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, utcnow

# Gap buckets of ai_usage_repeats_daily, seconds: bucket k holds repeats whose gap is at most
# REPEAT_GAP_BOUNDS[k] (and more than the bound before), the last bucket the longer ones. The
# ai_usage_daily_add trigger (alembic 0017) spells the same list: change both together.
REPEAT_GAP_BOUNDS: tuple[int, ...] = (
    *(300, 600, 900, 1800, 3600, 7200, 21600, 43200),
    *(86400, 172800, 604800, 1209600, 2592000),
)


class AiUsage(Base):
    __tablename__ = "ai_usage"
    __table_args__ = (
        Index("ix_ai_usage_tenant_at", "tenant_id", "at"),
        # Every tenant's usage in a window: the tenant comparison (0015).
        Index("ix_ai_usage_at", "at", postgresql_include=["tenant_id", "cost_usd"]),
        # The previous paid, validated call of an input (AiRepository.add_usage).
        Index(
            "ix_ai_usage_repeats",
            "tenant_id",
            "task",
            "model",
            "input_hash",
            "at",
            postgresql_where=text("input_hash IS NOT NULL AND NOT cached AND outcome = 'OK'"),
        ),
        # aiRecommendations' repeat count: a tenant's repeats in a window, index only.
        Index(
            "ix_ai_usage_repeat_gaps",
            "tenant_id",
            "at",
            postgresql_include=["task", "repeat_gap_seconds", "cost_usd"],
            postgresql_where=text("repeat_gap_seconds IS NOT NULL"),
        ),
    )

    # repeat_gap_seconds may be a SQL expression of the INSERT (AiRepository.add_usage): marked
    # as fetched, RETURNING brings its value back (sqlalchemy would otherwise expire it, and a
    # lazy load after the flush fails under asyncio).
    __mapper_args__ = {"eager_defaults": True}

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
    # calls decided before the input was looked at (AI off, tier) and rows older than 0017.
    input_hash: Mapped[str | None] = mapped_column(String(64))
    # A paid, validated call with a fingerprint: seconds since the previous such call of the same
    # task, model and input (set by AiRepository.add_usage); null for the first one and the rest.
    repeat_gap_seconds: Mapped[int | None] = mapped_column(server_default=FetchedValue())
    at: Mapped[datetime] = mapped_column(default=utcnow)
    # Each candidate tried or skipped: [{provider, model, kind, message}] (app/ai/attempts.py),
    # sanitised, never prompt text; null when there were none (0020).
    attempts: Mapped[list[dict[str, str]] | None] = mapped_column(JSONB)


class AiUsageDaily(Base):
    """ai_usage summed per tenant, UTC day, task, provider and model. Written only by the
    ai_usage_daily_add trigger (alembic 0017), which adds every inserted ai_usage row."""

    __tablename__ = "ai_usage_daily"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    task: Mapped[str] = mapped_column(String(40), primary_key=True)
    provider: Mapped[str] = mapped_column(String(40), primary_key=True)
    model: Mapped[str] = mapped_column(String(100), primary_key=True)
    calls: Mapped[int] = mapped_column(BigInteger)  # every row
    passed: Mapped[int] = mapped_column(BigInteger)  # a model's output validated (OK, not cached)
    invalid: Mapped[int] = mapped_column(BigInteger)  # a model paid, INVALID_OUTPUT
    paid: Mapped[int] = mapped_column(BigInteger)  # a model answered (not cached, not baseline)
    budget_fallbacks: Mapped[int] = mapped_column(BigInteger)  # fallback BUDGET
    paid_cost_usd: Mapped[Decimal] = mapped_column(Numeric(18, 6))  # of the `paid` ones
    cost_usd: Mapped[Decimal] = mapped_column(Numeric(18, 6))  # of every row


class AiUsageRepeatsDaily(Base):
    """Repeats (ai_usage rows with repeat_gap_seconds) per tenant, UTC day, task and gap bucket
    (REPEAT_GAP_BOUNDS). Written only by the ai_usage_daily_add trigger (alembic 0017)."""

    __tablename__ = "ai_usage_repeats_daily"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    task: Mapped[str] = mapped_column(String(40), primary_key=True)
    bucket: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    repeats: Mapped[int] = mapped_column(BigInteger)
    cost_usd: Mapped[Decimal] = mapped_column(Numeric(18, 6))
