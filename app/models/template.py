"""Templates (named, owned by a tenant or by the platform) and their immutable versions."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, Timestamps, UUIDPk, utcnow

VISIBILITIES = ("PRIVATE", "SHARED", "PUBLIC")
VERSION_STATUSES = ("PUBLISHED", "DEPRECATED")


class Template(UUIDPk, Timestamps, Base):
    __tablename__ = "templates"
    __table_args__ = (
        # tenant_id NULL is the platform (the public catalog); names are unique per owner.
        UniqueConstraint("tenant_id", "name", postgresql_nulls_not_distinct=True),
        CheckConstraint(f"visibility IN {VISIBILITIES}", name="visibility"),
    )

    tenant_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[list[str]] = mapped_column(ARRAY(String(50)), default=list)
    visibility: Mapped[str] = mapped_column(String(10), default="PRIVATE")
    latest_version: Mapped[int] = mapped_column(default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class TemplateVersion(UUIDPk, Timestamps, Base):
    __tablename__ = "template_versions"
    __table_args__ = (
        UniqueConstraint("template_id", "version"),
        CheckConstraint(f"status IN {VERSION_STATUSES}", name="status"),
    )

    template_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("templates.id", ondelete="CASCADE"))
    version: Mapped[int]
    status: Mapped[str] = mapped_column(String(12), default="PUBLISHED")
    spec: Mapped[dict[str, Any]]
