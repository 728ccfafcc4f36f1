"""The SLA daily rollup that `slaReport` reads for whole UTC days (docs/analytics.md, "SLAs":
reading a year of a tenant's runs took about 1 s of PostgreSQL time at 1M executions).

One row per tenant, UTC day of creation, template and version, over the runs that had ENDED
when the row was built: how many, per outcome, and how many went over `target`, the duration
target in force for them at that moment (the override, else the version's block; NULL: none).
A row is only read while its `target` equals the target in force now and no run of its
(tenant, template, day) changed since the last refresh; any other day, the runs still open and
the partial days at the window's edges are read from the executions
(app/analytics/sla_rollup_repository.py). `sla_rollup_state` (one row) says until when the
rollup is complete and when it was last refreshed. `sla_rollup_targets` records which targets
the rows of each (tenant, template, version) were judged against, so that the refresh finds
the rows to rebuild after an override changed without reading the whole rollup.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import BigInteger, ForeignKey, Index
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


class SlaRollupTarget(Base):
    """One target (NULL: none) that rows of sla_rollup of a (tenant, template, version) were
    judged against: a small table (tenants x templates x versions, one target each once the
    rollup is in step), compared with the targets in force at each refresh instead of the
    whole rollup. It may hold a target no row has any more (a day rebuilt since): that only
    makes a refresh rebuild the pair once, which records its targets afresh."""

    __tablename__ = "sla_rollup_targets"
    __table_args__ = (
        Index(
            "ux_sla_rollup_targets",
            "tenant_id",
            "template_id",
            "template_version_id",
            "target",
            unique=True,
            postgresql_nulls_not_distinct=True,
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    template_id: Mapped[uuid.UUID]
    template_version_id: Mapped[uuid.UUID]
    target: Mapped[float | None]
