"""Trust in others' templates: the platform operator's review of what enters the public
catalog (`wfs template reviews/approve/reject`), and a tenant admin's acceptance of the exact
version of another publisher's template its executions will run (`acceptTemplate`).

The edge (CLI command or resolver) commits; these only flush.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Conflict, Forbidden, NotFound, ValidationFailed
from app.models import Template, TemplateVersion
from app.models.base import utcnow
from app.templates.catalog import Capabilities, capabilities_of, needs_acceptance
from app.templates.lifecycle import ensure_not_platform_name, stored_catalog_fields
from app.templates.repository import TemplateRepository
from app.templates.service import TemplateService
from app.tenants.service import Principal

log = structlog.get_logger(__name__)

MAX_REVIEW_NOTE_CHARS = 1000
MAX_PENDING_LISTED = 200


@dataclass(frozen=True)
class PendingReview:
    """A version waiting for the platform operator, with what it would let others run."""

    template_id: uuid.UUID
    publisher: str
    name: str
    version: int
    capabilities: Capabilities
    # The version's catalog text: what every tenant reads and searches once it is approved.
    title: str
    description: str
    tags: list[str]
    category: str | None


class CatalogReview:
    """The platform operator's decisions on tenants' PUBLIC templates. Only the operator's
    tools call this (the CLI, with the database's credentials): no tenant key reaches it."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.repo = TemplateRepository(session)

    async def pending(self, limit: int = MAX_PENDING_LISTED) -> list[PendingReview]:
        """Versions waiting for review, oldest first."""
        rows = await self.repo.pending_reviews(limit)
        return [
            PendingReview(
                t.id,
                publisher,
                t.name,
                v.version,
                capabilities_of(v.spec),
                title=str(v.spec.get("title") or ""),
                description=str(v.spec.get("description") or ""),
                tags=[str(tag) for tag in v.spec.get("tags") or []],
                category=v.spec.get("category"),
            )
            for v, t, publisher in rows
        ]

    async def approve(self, template_id: uuid.UUID, number: int) -> Template:
        """The version enters the public catalog: others see and may accept it (the newest
        approved version is the public one). Approving an approved version changes nothing."""
        template, version = await self._pending(template_id, number, allow_approved=True)
        if version.review_status == "APPROVED":
            return template
        await ensure_not_platform_name(self.repo, template.name)
        version.review_status, version.review_note = "APPROVED", None
        version.reviewed_at = utcnow()
        template.public_version = max(template.public_version or 0, number)
        # The listing every tenant reads and searches is the public version's text, reviewed
        # with its steps (the newest approved one: approving an older one changes nothing).
        public = (
            version
            if template.public_version == number
            else await self.repo.version(template.id, template.public_version)
        )
        if public is not None:
            stored_catalog_fields(template, public.spec)
        await self.session.flush()
        log.info("template.review_approved", template_id=str(template.id), version=number)
        return template

    async def reject(self, template_id: uuid.UUID, number: int, reason: str) -> Template:
        """The version stays out of the catalog; the owner reads the reason on the version."""
        reason = reason.strip()
        if not 1 <= len(reason) <= MAX_REVIEW_NOTE_CHARS:
            raise ValidationFailed(f"give a reason of 1-{MAX_REVIEW_NOTE_CHARS} characters")
        template, version = await self._pending(template_id, number, allow_approved=False)
        version.review_status, version.review_note = "REJECTED", reason
        version.reviewed_at = utcnow()
        await self.session.flush()
        log.info("template.review_rejected", template_id=str(template.id), version=number)
        return template

    async def _pending(
        self, template_id: uuid.UUID, number: int, *, allow_approved: bool
    ) -> tuple[Template, TemplateVersion]:
        template = await self.repo.get_for_review(template_id)
        if template is None:
            raise NotFound(f"no tenant template {template_id}")
        version = await self.repo.version(template.id, number)
        if version is None:
            raise NotFound(f"template {template.name!r} has no version {number}")
        if template.visibility != "PUBLIC":
            raise Conflict(f"template {template.name!r} is not PUBLIC: nothing to review")
        allowed = ("PENDING", "APPROVED") if allow_approved else ("PENDING",)
        if version.review_status not in allowed:
            state = (version.review_status or "not submitted").lower()
            raise Conflict(f"version {number} of {template.name!r} is {state}, not pending review")
        return template, version


class TemplateAcceptances:
    """A tenant admin's consent to run another publisher's template at one version."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.repo = TemplateRepository(session)
        self.templates = TemplateService(session)

    async def accept(self, principal: Principal, template_id: uuid.UUID, number: int) -> Template:
        """Accept the version offered to the tenant (latest published of a shared template,
        the approved public one of a public template); its executions then run it, pinned.
        Visibility first (NOT_FOUND), then the role (admins), then what may be accepted."""
        template = await self.templates.get(principal.tenant_id, template_id)
        if principal.role != "admin":
            raise Forbidden("only admins can accept another publisher's template")
        if not needs_acceptance(principal.tenant_id, template):
            raise Conflict("your own templates and the platform's run without acceptance")
        offered = await self.templates.offered_version(principal.tenant_id, template)
        if offered is None:
            raise Conflict(f"template {template.name!r} offers no version to accept")
        if number != offered.version:
            raise Conflict(
                f"version {number} of template {template.name!r} is not the one offered to "
                f"you: accept version {offered.version}"
            )
        await self.repo.accept(
            principal.tenant_id, template.id, number, principal.key_id, principal.actor
        )
        await self.session.flush()
        log.info(
            "template.accepted",
            template_id=str(template.id),
            tenant_id=str(principal.tenant_id),
            version=number,
        )
        return template
