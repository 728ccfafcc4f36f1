"""Per-tenant plugin switches set by the platform operator (`setTenantPlugin`): a row says
whether one plugin is enabled for one tenant; a plugin without a row follows
PLUGINS_DEFAULT_TENANTS ("all" or "none")."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, utcnow


class TenantPlugin(Base):
    __tablename__ = "tenant_plugins"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    plugin: Mapped[str] = mapped_column(String(40), primary_key=True)
    enabled: Mapped[bool]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(120))
