"""Impact rules: which template and window a tenant may ask about, and the two groups' stats."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.analytics.repository import GroupStats, ImpactRepository
from app.errors import ValidationFailed
from app.models import Template
from app.templates.service import TemplateService

MAX_SPAN = timedelta(days=366)


@dataclass(frozen=True)
class TemplateImpactReport:
    template: Template
    since: datetime
    until: datetime
    enhanced: GroupStats
    baseline: GroupStats


def checked_window(since: datetime, until: datetime) -> tuple[datetime, datetime]:
    """[since, until) with naive times read as UTC; VALIDATION_FAILED unless since < until
    and the span is at most MAX_SPAN."""
    since, until = (t if t.tzinfo else t.replace(tzinfo=UTC) for t in (since, until))
    if until <= since:
        raise ValidationFailed(
            "`to` must be after `from`", details=[{"path": "$.to", "message": "not after from"}]
        )
    if until - since > MAX_SPAN:
        raise ValidationFailed(
            f"the window may span at most {MAX_SPAN.days} days",
            details=[{"path": "$.to", "message": f"more than {MAX_SPAN.days} days after from"}],
        )
    return since, until


class ImpactService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.repo = ImpactRepository(session)

    async def template_impact(
        self, tenant_id: uuid.UUID, template_id: uuid.UUID, since: datetime, until: datetime
    ) -> TemplateImpactReport:
        """The tenant's runs of a template it can read, created in [since, until): enhanced
        (AI applied at least once) against baseline. Another tenant's runs never count."""
        since, until = checked_window(since, until)
        template = await TemplateService(self.session).get(tenant_id, template_id)
        groups = await self.repo.template_groups(tenant_id, template.id, since, until)
        return TemplateImpactReport(
            template=template,
            since=since,
            until=until,
            enhanced=groups.get(True, GroupStats()),
            baseline=groups.get(False, GroupStats()),
        )
