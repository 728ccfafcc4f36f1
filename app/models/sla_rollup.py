"""The SLA daily rollup that `slaReport` reads for whole UTC days (docs/analytics.md, "SLAs":
reading a year of a tenant's runs took about 1 s of PostgreSQL time at 1M executions).

One row per tenant, UTC day of creation, template and version, over the runs that had ENDED
when the row was built: how many, per outcome, and how many went over `target`, the duration
target in force for them at that moment (the override, else the version's block; NULL: none).
A row is only read while its `target` equals the target in force now and no run of its
(tenant, template, day) changed since the last refresh; any other day, the runs still open and
the partial days at the window's edges are read from the executions
(app/analytics/sla_rollup_repository.py). `sla_rollup_state` (one row) says until when the
rollup is complete and when it was last refreshed.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import ForeignKey, Index
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class SlaRollup(Base):
    __tablename__ = "sla_rollup"
    __table_args__ = (
        # One template's days (the one-template report, the breaches page).
        Index("ix_sla_rollup_tenant_template_day", "tenant_id", "template_id", "day"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[date] = mapped_column(primary_key=True)
    template_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    template_version_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    target: Mapped[float | None]  # max_duration_seconds in force when built; NULL: none
    ended: Mapped[int]  # runs that had ended (COMPLETED, FAILED, CANCELLED)
    completed: Mapped[int]
    failed: Mapped[int]
    cancelled: Mapped[int]
    breached: Mapped[int]  # ended runs over `target` (creation to end)


class SlaRollupState(Base):
    __tablename__ = "sla_rollup_state"

    id: Mapped[int] = mapped_column(primary_key=True)  # always 1
    # Days before this are in sla_rollup.
    complete_until: Mapped[date]
    # When the last refresh began: runs changed since (less CHANGE_MARGIN) are read from rows.
    refreshed_from: Mapped[datetime]
