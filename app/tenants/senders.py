"""Verified email senders: the `from` addresses a tenant's `email.send` steps may use.

Besides SMTP_FROM, a tenant sends only from addresses a platform operator verified for it
(`wfs tenant verify-sender TENANT ADDRESS [--remove]`), after checking out of band that the
tenant owns them. Tenants cannot add any themselves: a sender is the identity recipients and
spam filters trust, and a tenant that could pick any `from` could phish as anyone.
Addresses are compared as lower-case addr-specs; the display name is free.
"""

from __future__ import annotations

import uuid
from email import policy

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import NotFound, ValidationFailed
from app.models import Tenant
from app.tenants.repository import TenantRepository

log = structlog.get_logger(__name__)


def sender_key(address: str) -> str | None:
    """The lower-case addr-spec of one email address (`Ada <ada@x.org>` -> `ada@x.org`), or
    None when `address` is not exactly one address."""
    if "\r" in address or "\n" in address:
        return None
    try:
        header = policy.default.header_factory("from", address)
        found = header.addresses  # type: ignore[attr-defined]
    except Exception:  # the parser raises IndexError and friends on some garbage
        return None
    if len(found) != 1 or not found[0].username or not found[0].domain:
        return None
    return str(found[0].addr_spec).lower()


async def _tenant(session: AsyncSession, ref: str) -> Tenant:
    repo = TenantRepository(session)
    try:
        tenant = await repo.get(uuid.UUID(ref))
    except ValueError:
        tenant = await repo.by_name(ref)
    if tenant is None:
        raise NotFound(f"tenant {ref!r} not found")
    return tenant


async def set_verified_sender(
    session: AsyncSession, tenant_ref: str, address: str, *, remove: bool = False
) -> tuple[Tenant, list[str]]:
    """Add (or remove) `address` among the verified senders of the tenant named (or with the
    id) `tenant_ref`; returns the tenant and its senders now. Flushes; the caller commits."""
    key = sender_key(address)
    if key is None:
        raise ValidationFailed(f"{address!r} is not one email address")
    tenant = await _tenant(session, tenant_ref)
    current = list(tenant.verified_senders or [])
    if remove:
        senders = [s for s in current if s != key]
    else:
        senders = current if key in current else [*current, key]
    tenant.verified_senders = senders
    await session.flush()
    log.info(
        "tenant.sender_removed" if remove else "tenant.sender_verified",
        tenant_id=str(tenant.id),
        sender=key,
    )
    return tenant, senders
