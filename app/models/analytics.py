"""The daily rollup of executions that executionStats reads for whole UTC days (bench/analytics.py
measured why: reading a tenant's million rows per question does not answer within 500 ms).

One row per tenant, UTC day of creation, template (and ALL_TEMPLATES), status, duration
bucket and recorded tier (migration 0019): how many runs,
how many of them a model answered (AI-enhanced), their AI cost. A duration bucket k holds runs
whose start-to-finish seconds s satisfy DURATION_RATIO**k <= s < DURATION_RATIO**(k+1);
NO_DURATION holds runs that have none (not finished, or never started). Percentiles are read
from these buckets (app/analytics/stats_repository.py says how), so they hold within the
bucket's width: percentiles of days do not add up, counts in buckets do.
`analytics_rollup_state` (one row) says until when the rollup is complete and when it was
last refreshed (app/analytics/rollup_repository.py).
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import BigInteger, ForeignKey, Numeric, SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base

DURATION_RATIO = 1.1
NO_DURATION = -32768  # smallint sentinel: a key column cannot be NULL
# The rows of all templates together (a day's runs by status and bucket): what a question not
# about templates reads, 7x fewer rows with the 7 standard templates in bench/analytics.py.
ALL_TEMPLATES = uuid.UUID(int=0)
# execution_rollup.tier of runs that recorded none (a key column cannot be NULL).
UNKNOWN_TIER = ""


class ExecutionRollup(Base):
    __tablename__ = "execution_rollup"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[date] = mapped_column(primary_key=True)
    template_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    status: Mapped[str] = mapped_column(String(10), primary_key=True)
    duration_bucket: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    runs: Mapped[int]
    ai_runs: Mapped[int]
    ai_cost_usd: Mapped[Decimal] = mapped_column(Numeric(18, 6))
    # The tier the runs recorded (executions.tier); UNKNOWN_TIER for runs created before
    # migration 0019, which readers count at the tenant's current tier, as they do the rows.
    tier: Mapped[str] = mapped_column(String(20), primary_key=True, default="")


class RollupState(Base):
    __tablename__ = "analytics_rollup_state"

    id: Mapped[int] = mapped_column(primary_key=True)  # always 1
    # Days before this are in the rollup; later executions are read from their rows.
    complete_until: Mapped[date]
    # When the last refresh began: executions changed since are rolled up again next time.
    refreshed_from: Mapped[datetime]
    # The moment template_cost_estimates describes (alembic 0027): the start of the last
    # refresh that recomputed them or found them current; a chunk of a catch-up leaves it
    # (the last chunk recomputes them). NULL: never computed.
    estimates_from: Mapped[datetime | None]


class StepUsageRollup(Base):
    """Resource usage of a tenant's runs of a template created on one UTC day, per step
    (app/analytics/usage_repository.py says what each figure is); templateResourceUsage reads
    whole days from here. Refreshed with execution_rollup, by the same days."""

    __tablename__ = "step_usage_rollup"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[date] = mapped_column(primary_key=True)
    template_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    step_id: Mapped[str] = mapped_column(String(120), primary_key=True)
    activity: Mapped[str | None] = mapped_column(String(100))
    first_seq: Mapped[int] = mapped_column(default=0)  # to list steps in the order they ran
    attempts: Mapped[int] = mapped_column(default=0)
    retries: Mapped[int] = mapped_column(default=0)
    completed: Mapped[int] = mapped_column(default=0)
    recorded: Mapped[int] = mapped_column(default=0)
    active_seconds: Mapped[float] = mapped_column(default=0.0)
    bytes_written: Mapped[int] = mapped_column(BigInteger, default=0)
    emails_sent: Mapped[int] = mapped_column(BigInteger, default=0)
    http_calls: Mapped[int] = mapped_column(BigInteger, default=0)
    ai_calls: Mapped[int] = mapped_column(default=0)
    ai_input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    ai_output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    ai_cost_usd: Mapped[Decimal] = mapped_column(Numeric(18, 6), default=Decimal(0))


class StepAttempt(Base):
    """The highest attempt Temporal made of a step's activity (a fan-out item's as
    `step[i]`), written by the activity when it runs again (attempt 2 and later), so the
    first attempt costs nothing. Resource usage counts the retries from it; executions that
    ran before it existed have none recorded."""

    __tablename__ = "step_attempts"

    execution_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("executions.id", ondelete="CASCADE"), primary_key=True
    )
    step_id: Mapped[str] = mapped_column(String(120), primary_key=True)
    attempts: Mapped[int]


# template_cost_estimates.tenant_id of a (template, tier)'s whole sample.
ALL_TENANTS = uuid.UUID(int=0)


class TemplateCostEstimate(Base):
    """What Template.costEstimate reads (app/analytics/forecast.py has the rules): per
    template and tier, the AI cost per run over the sample (the latest COMPLETED runs of the
    last 90 days by runs of that tier), as percentiles over the whole sample (tenant_id
    ALL_TENANTS) and over each tenant's own runs in it (one row per tenant of the sample).
    Replaced as a whole by the analytics rollup refresh; `analytics_rollup_state.
    estimates_from` is the moment it describes."""

    __tablename__ = "template_cost_estimates"

    template_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("templates.id", ondelete="CASCADE"), primary_key=True
    )
    tier: Mapped[str] = mapped_column(String(20), primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    runs: Mapped[int]
    # percentile_cont's double precision, as the estimate has always been computed.
    p50_usd: Mapped[float | None]
    p95_usd: Mapped[float | None]
