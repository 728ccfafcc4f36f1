"""What a step may do for its tenant: the tenant's tier and verified senders, and the daily
email counter that `email.send` charges.

Both need the database (`ctx.sessions`). A context without sessions (a tool or a test that
runs a step alone) gets the most restrictive answer: the lowest tier, no verified sender and
no counter (there is nothing to count in); the worker always passes sessions.

The daily counter is a row per tenant and UTC day (`tenant_email_days`), incremented only while
it is under the quota, under the row's lock: concurrent sends of a fan-out cannot pass the
quota together. Each send is counted once per idempotency key: the charge inserts a
`tenant_email_charges` row keyed by the send's key in the same transaction, so a retried
attempt of a send already counted (a transient SMTP failure, a crashed worker) is not counted
again.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

import structlog
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import SQLAlchemyError

from app.models import Tenant
from app.models.base import utcnow
from app.models.tenant import TenantEmailCharge, TenantEmailDay
from app.steps.base import StepContext, StepInputError, StepTransientError
from app.tiers import TIERS

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class TenantLimits:
    """The part of a tenant a step's limits depend on."""

    tier: str
    verified_senders: frozenset[str] = field(default_factory=frozenset)


def _tenant_uuid(ctx: StepContext) -> uuid.UUID:
    try:
        return uuid.UUID(ctx.tenant_id)
    except ValueError as exc:
        raise StepInputError(f"tenant {ctx.tenant_id!r} is unknown") from exc


async def tenant_limits(ctx: StepContext) -> TenantLimits:
    """The tenant's tier and verified senders (one query); the lowest tier without sessions."""
    if ctx.sessions is None:
        return TenantLimits(TIERS[0])
    tenant_id = _tenant_uuid(ctx)
    try:
        async with ctx.sessions() as session:
            row = (
                await session.execute(
                    select(Tenant.tier, Tenant.verified_senders).where(Tenant.id == tenant_id)
                )
            ).first()
    except (SQLAlchemyError, OSError) as exc:
        log.warning("step.tenant_lookup_failed", tenant_id=ctx.tenant_id, error=str(exc))
        raise StepTransientError("tenant settings are unavailable for now") from exc
    if row is None:
        raise StepInputError(f"tenant {ctx.tenant_id!r} is unknown")
    return TenantLimits(row.tier, frozenset(row.verified_senders or ()))


def next_utc_midnight(today: date) -> str:
    """When a daily counter for `today` resets, as ISO-8601 UTC."""
    reset = datetime.combine(today + timedelta(days=1), time(0), tzinfo=UTC)
    return reset.isoformat().replace("+00:00", "Z")


async def charge_email(ctx: StepContext, key: str, tier: str) -> None:
    """Count one message of the tenant today under idempotency `key`, or refuse it (permanent
    StepInputError naming the quota and when it resets) when the tenant's daily quota is used."""
    if ctx.sessions is None:
        return
    quota = ctx.settings.email_daily_quota.get(tier, 0)
    today = utcnow().date()
    tenant_id = _tenant_uuid(ctx)
    counted = (
        insert(TenantEmailCharge)
        .values(key=key, tenant_id=tenant_id, day=today)
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(TenantEmailCharge.key)
    )
    bump = (
        insert(TenantEmailDay)
        .values(tenant_id=tenant_id, day=today, sent=1)
        .on_conflict_do_update(
            index_elements=["tenant_id", "day"],
            set_={"sent": TenantEmailDay.sent + 1},
            where=TenantEmailDay.sent < quota,  # a full day stays full, under the row lock
        )
        .returning(TenantEmailDay.sent)
    )
    try:
        async with ctx.sessions() as session:
            if await session.scalar(counted) is None:
                return  # this send was counted by an earlier attempt
            sent = await session.scalar(bump) if quota > 0 else None
            if sent is None:
                await session.rollback()
                raise StepInputError(
                    f"daily email quota reached: the {tier} tier sends at most {quota} "
                    f"messages per UTC day; it resets at {next_utc_midnight(today)}"
                )
            await session.commit()
    except SQLAlchemyError as exc:
        log.warning("step.email_quota_failed", tenant_id=ctx.tenant_id, error=str(exc))
        raise StepTransientError("the email quota counter is unavailable for now") from exc
