"""Tenants and their API keys (only a hash of each key is stored)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, Timestamps, UUIDPk

TIERS = ("free", "pro", "premium", "enterprise")
ROLES = ("viewer", "operator", "admin")


class Tenant(UUIDPk, Timestamps, Base):
    __tablename__ = "tenants"
    __table_args__ = (CheckConstraint(f"tier IN {TIERS}", name="tier"),)

    name: Mapped[str] = mapped_column(String(100), unique=True)
    tier: Mapped[str] = mapped_column(String(20))


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
