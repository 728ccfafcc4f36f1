"""Tenants, their API keys and the platform operator's credentials (only a hash of each key is
stored), and tenants' daily email counts."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import CheckConstraint, ForeignKey, String, Text, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, Timestamps, UUIDPk
from app.tiers import TIERS

ROLES = ("viewer", "operator", "admin")


class Tenant(UUIDPk, Timestamps, Base):
    __tablename__ = "tenants"
    __table_args__ = (CheckConstraint(f"tier IN {TIERS}", name="tier"),)

    name: Mapped[str] = mapped_column(String(100), unique=True)
    tier: Mapped[str] = mapped_column(String(20))
    # Addresses `email.send` may use as `from` besides SMTP_FROM (lower-case addr-specs). Only a
    # platform operator sets them (`wfs tenant verify-sender`), after checking the tenant owns them.
    verified_senders: Mapped[list[str]] = mapped_column(
        ARRAY(String(320)), default=list, server_default=text("'{}'")
    )
    # Set by the platform operator: the tenant's credentials stop authenticating (its running
    # executions keep running; nothing new starts through the API).
    suspended_at: Mapped[datetime | None]


class ApiKey(UUIDPk, Timestamps, Base):
    __tablename__ = "api_keys"
    __table_args__ = (CheckConstraint(f"role IN {ROLES}", name="role"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(20))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(20))
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]  # None: until revoked
    # Who made it (audit): Principal.actor (through the API: "key:<key id>" or
    # "sub:<token subject>"), "cli" or "platform:<name>".
    created_by: Mapped[str | None] = mapped_column(String(120))


class PlatformKey(UUIDPk, Timestamps, Base):
    """A platform operator's credential (`wfsp_<prefix>_<secret>`, made by `wfs platform key
    create`): it manages tenants through the API and belongs to no tenant."""

    __tablename__ = "platform_keys"

    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(20))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


class TenantEmailDay(Base):
    """Messages `email.send` counted for a tenant on one UTC day (its daily quota's counter).

    One row per tenant and day, incremented under its row lock, so concurrent sends (a fan-out)
    never pass the quota together; `TenantEmailCharge` says which sends were counted."""

    __tablename__ = "tenant_email_days"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[date] = mapped_column(primary_key=True)
    sent: Mapped[int] = mapped_column(default=0)


class TenantEmailCharge(Base):
    """One send counted against a tenant's daily email quota, by the send's idempotency key:
    a retried attempt of the same send finds its charge and is not counted again."""

    __tablename__ = "tenant_email_charges"

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    day: Mapped[date]
