"""Idempotency records of steps with outside effects (see app/steps/idempotency.py)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, utcnow


class StepIdempotency(Base):
    __tablename__ = "step_idempotency"

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    result: Mapped[Any]
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
