"""SLA rules a caller meets: a tenant admin's override of a template's targets (set, clear),
and the report over a window (`slaReport`): per template, runs judged against the duration
target in force for each, the success rate against the minimum, and the runs that breached.

What is in force and how breaches are found and notified is app/sla's; this module is the
GraphQL edge's service (visibility, roles, windows, bounds)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError as PydanticValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.analytics.service import MAX_SPAN, checked_window
from app.analytics.sla_repository import RunStats
from app.analytics.sla_rollup import SlaFigures
from app.errors import Forbidden, ValidationFailed
from app.models import Execution, Template, TemplateSla
from app.models.base import utcnow
from app.pagination import Page, check_first, decode_cursor, keyset_page
from app.sla.repository import SlaRepository
from app.sla.service import Target, check_target_cap, in_force
from app.sla.spec import SlaSpec
from app.templates.repository import TemplateRepository
from app.templates.service import TemplateService
from app.tenants.service import Principal

# Templates in one report (by name); a tenant with more asks per template (templateId).
MAX_REPORT_TEMPLATES = 100
# As every analytics window: whole days come from the SLA rollup (app/analytics/sla_rollup.py;
# bench/sla.py measures 366 days at 1M runs of one tenant).
MAX_REPORT_SPAN = MAX_SPAN
MAX_RATE_BREACHES = 50


@dataclass(frozen=True)
class TemplateSlaReport:
    template: Template
    target: Target | None  # in force now: the override, else the latest version's block
    stats: RunStats
    since: datetime
    until: datetime
    now: datetime

    @property
    def attainment(self) -> float | None:
        s = self.stats
        return (s.measured - s.breached) / s.measured if s.measured else None

    @property
    def success_rate(self) -> float | None:
        finished = self.stats.completed + self.stats.failed
        return self.stats.completed / finished if finished else None

    @property
    def success_rate_met(self) -> bool | None:
        minimum = self.target.sla.min_success_rate if self.target else None
        rate, finished = self.success_rate, self.stats.completed + self.stats.failed
        if minimum is None or rate is None or self.target is None:
            return None
        if finished < self.target.sla.min_runs:
            return None
        return rate >= minimum


def checked_sla(data: dict[str, Any]) -> SlaSpec:
    """An override's targets, bounded as a spec's `sla` block is; VALIDATION_FAILED with every
    problem otherwise."""
    try:
        return SlaSpec.model_validate(data)
    except PydanticValidationError as exc:
        details = [
            {"path": "$" + "".join(f".{p}" for p in e["loc"]), "message": e["msg"]}
            for e in exc.errors()
        ]
        raise ValidationFailed(f"invalid sla ({len(details)} problems)", details=details) from exc


def _admin_only(principal: Principal) -> None:
    if principal.role != "admin":
        raise Forbidden("only admins set SLA targets")


class SlaReportService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.figures = SlaFigures(session)
        self.sla = SlaRepository(session)

    async def set_override(
        self, principal: Principal, template_id: uuid.UUID, sla: SlaSpec
    ) -> tuple[Template, TemplateSla]:
        """The tenant's targets for a template it can read; they replace the version's."""
        _admin_only(principal)
        template = await TemplateService(self.session).get(principal.tenant_id, template_id)
        await check_target_cap(self.session, principal.tenant_id, template.id)
        row = await self.sla.put_override(
            {
                "tenant_id": principal.tenant_id,
                "template_id": template.id,
                **sla.model_dump(),
                "updated_at": utcnow(),
                "updated_by": principal.actor,
            }
        )
        return template, row

    async def clear_override(
        self, principal: Principal, template_id: uuid.UUID
    ) -> tuple[Template, Target | None]:
        """Remove the tenant's override: the versions' targets apply again (returned: the
        latest version's, or None)."""
        _admin_only(principal)
        template = await TemplateService(self.session).get(principal.tenant_id, template_id)
        await self.sla.delete_override(principal.tenant_id, template.id)
        latest = await self.sla.latest_version_slas([template.id])
        return template, in_force(None, latest.get(template.id))

    async def target_now(self, tenant_id: uuid.UUID, template_id: uuid.UUID) -> Target | None:
        latest = await self.sla.latest_version_slas([template_id])
        return in_force(await self.sla.override(tenant_id, template_id), latest.get(template_id))

    async def report(
        self,
        tenant_id: uuid.UUID,
        since: datetime,
        until: datetime,
        template_id: uuid.UUID | None = None,
    ) -> list[TemplateSlaReport]:
        """Per template with a target in force (or the one asked for, which the tenant must be
        able to read), the tenant's runs created in [since, until); at most
        MAX_REPORT_TEMPLATES, by name. Another tenant's runs never count."""
        since, until = checked_window(since, until, MAX_REPORT_SPAN)
        now = utcnow()
        if template_id is not None:
            await TemplateService(self.session).get(tenant_id, template_id)
        stats = {
            s.template_id: s
            for s in await self.figures.run_stats(tenant_id, since, until, now, template_id)
        }
        overrides = {o.template_id: o for o in await self.sla.overrides(tenant_id)}
        wanted = [template_id] if template_id is not None else [*stats, *overrides]
        ids = list(dict.fromkeys(wanted))
        # Only what the tenant can read now: its runs and overrides of a template whose share
        # was revoked (or that went private) must not show it, nor its versions' specs.
        visible = await TemplateRepository(self.session).get_many_visible(tenant_id, ids)
        latest = await self.sla.latest_version_slas(list(visible))
        templates = sorted(visible.values(), key=lambda t: (t.name, t.id))
        return [
            TemplateSlaReport(
                template=t,
                target=in_force(overrides.get(t.id), latest.get(t.id)),
                stats=stats.get(t.id, RunStats(t.id)),
                since=since,
                until=until,
                now=now,
            )
            for t in templates[:MAX_REPORT_TEMPLATES]
        ]

    async def breached_runs(
        self, tenant_id: uuid.UUID, report: TemplateSlaReport, first: int | None, after: str | None
    ) -> Page[Execution]:
        """A page of the report's runs over their duration target, newest first."""
        limit = check_first(first)
        cursor = decode_cursor(after, "datetime", "uuid")
        before = (datetime.fromisoformat(cursor[0]), uuid.UUID(cursor[1])) if cursor else None
        rows = await self.figures.breached_runs(
            tenant_id,
            report.template.id,
            report.since,
            report.until,
            report.now,
            before=before,
            limit=limit + 1,
        )
        return keyset_page(rows, limit, key=lambda e: [e.created_at.isoformat(), str(e.id)])

    async def rate_breaches(self, tenant_id: uuid.UUID, report: TemplateSlaReport) -> list[Any]:
        """Success-rate breaches overlapping the window, newest first (MAX_RATE_BREACHES)."""
        return await self.sla.rate_breaches(
            tenant_id, report.template.id, report.since, report.until, MAX_RATE_BREACHES
        )
