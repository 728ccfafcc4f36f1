"""Authoring templates: drafts, publishing immutable versions, deprecation, visibility and
sharing, with who may do what; plus the pure helpers of authoring (spec checks, catalog fields).
What changes between versions (param migration, diffs) is in app/templates/versions.py; its
names are importable from here too.

Who may do what (checked here and in TemplateService, never in resolvers):
- read: the owner tenant; the platform's templates once published; others' SHARED templates
  shared with the caller once published; others' PUBLIC templates once the platform operator
  approved a version (and then only the approved versions). Anything else is NOT_FOUND,
  exactly like an id that does not exist.
- run: as read, and the role is operator or admin (ExecutionService.start); another
  publisher's template only at the version an admin of the caller's tenant accepted
  (app/templates/review.py).
- author (create, edit the draft, publish, deprecate, set visibility) and share: admins of the
  owner tenant. Platform templates (tenant_id NULL) are read and run only. Asking for PUBLIC
  puts the latest version in the platform's review queue, as does publishing a new version of
  a PUBLIC template; no tenant template may be PUBLIC under a platform template's name.
Visibility comes first: a template the caller cannot read is NOT_FOUND whatever its role, like
an id that does not exist. Then the role, then ownership (FORBIDDEN, only for a template the
caller can already read). createTemplate has no template to look at: the role alone decides.
(startExecution checks the role before looking the template up, so a viewer gets FORBIDDEN for
any id, existing or not: that says nothing about the template either.)
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Conflict, Forbidden, NotFound, ValidationFailed
from app.models import Template, TemplateVersion
from app.models.base import utcnow
from app.models.template import VISIBILITIES
from app.settings import Settings
from app.sla.service import check_target_cap
from app.templates.repository import TemplateRepository
from app.templates.schemas import TemplateSpec, bounded, validate_spec, validation_deadline
from app.templates.versions import MAX_DIFF_CHANGES as MAX_DIFF_CHANGES
from app.templates.versions import MAX_DIFF_LINES as MAX_DIFF_LINES
from app.templates.versions import SpecDiff as SpecDiff
from app.templates.versions import StepChange as StepChange
from app.templates.versions import diff_specs as diff_specs
from app.templates.versions import diff_versions as diff_versions
from app.templates.versions import migrate_params as migrate_params
from app.templates.versions import same_content
from app.templates.versions import unified_diff as unified_diff
from app.templates.versions import unified_off_loop as unified_off_loop
from app.tenants.plugin_access import PluginAccess, PluginAccessService
from app.tenants.service import Principal

MAX_SHARE_NAMES = 50
MAX_TAG_CHARS = 50


# --- who may do what -------------------------------------------------------------------------


def owns(principal: Principal, template: Template) -> bool:
    return template.tenant_id is not None and template.tenant_id == principal.tenant_id


def can_author(principal: Principal, template: Template) -> bool:
    return principal.role == "admin" and owns(principal, template)


def ensure_author_role(principal: Principal) -> None:
    if principal.role != "admin":
        raise Forbidden("only admins can author or share templates")


async def ensure_not_platform_name(repo: TemplateRepository, name: str) -> None:
    """The public catalog has one template per verified name: a tenant's look-alike of a
    platform template is refused, so a bare name never meets two candidates in the catalog."""
    if await repo.by_owner_name(None, name) is not None:
        raise Conflict(
            f"{name!r} is the name of a platform template: a tenant template of that name "
            "cannot be PUBLIC (keep it PRIVATE or SHARED, or rename it)"
        )


def ensure_owner(principal: Principal, template: Template) -> None:
    if template.tenant_id is None:
        raise Forbidden("platform templates are read-only")
    if template.tenant_id != principal.tenant_id:
        raise Forbidden("only the owner tenant can change this template")


# --- pure lifecycle helpers ------------------------------------------------------------------


def checked_spec(
    data: Any, settings: Settings | None = None, plugins: PluginAccess | None = None
) -> TemplateSpec:
    """validate_spec, plus what the catalog columns need (tags of at most 50 characters)."""
    spec = validate_spec(data, settings, plugins)
    long_tags = [
        {"path": f"$.tags[{i}]", "message": f"at most {MAX_TAG_CHARS} characters"}
        for i, tag in enumerate(spec.tags)
        if len(tag) > MAX_TAG_CHARS
    ]
    if long_tags:
        raise ValidationFailed(
            f"invalid template spec ({len(long_tags)} problems)", details=long_tags
        )
    return spec


async def validated_spec(
    data: Any,
    settings: Settings | None = None,
    *,
    tenant: uuid.UUID | None = None,
    plugins: PluginAccess | None = None,
) -> TemplateSpec:
    """checked_spec off the event loop, within validation_timeout_seconds: a spec is tenant
    input, and its checks (JSON Schema, expressions) cost CPU in proportion to it. `tenant`
    (who sent it) gets its fair share of the validation pool; None is trusted (seeding).
    `plugins`: the plugins the tenant may use (None: any loaded one, for the platform)."""
    return await bounded(
        checked_spec,
        data,
        settings,
        plugins,
        deadline=validation_deadline(settings),
        settings=settings,
        tenant=tenant,
    )


def catalog_fields(template: Template, spec: TemplateSpec) -> None:
    """The catalog entry (and so the search vector) follows the spec being shown."""
    template.title = spec.title
    template.description = spec.description
    template.tags = spec.tags
    template.category = spec.category


def stored_catalog_fields(template: Template, spec: dict[str, Any]) -> None:
    """catalog_fields from a stored version's spec (model_dump'ed: every key is there)."""
    template.title = spec.get("title") or template.name
    template.description = spec.get("description") or ""
    template.tags = list(spec.get("tags") or [])
    template.category = spec.get("category")


def shows_public_version(template: Template) -> bool:
    """Whether the row's catalog entry (title, description, tags, category, and so the search
    vector, which every tenant reads and searches) is that of the approved public version
    rather than the latest one. It is while a tenant's template is PUBLIC with a version the
    operator approved: a new version's text waits for the same review as its steps (a PENDING
    or REJECTED version must not rename the listing, e.g. "Order Summary (official)").
    Without an approved version nobody else sees the row: it follows the latest version."""
    return (
        template.tenant_id is not None
        and template.visibility == "PUBLIC"
        and template.public_version is not None
    )


# --- authoring -------------------------------------------------------------------------------


class TemplateAuthoring:
    """Changes to a tenant's templates; the caller (the edge) commits. `settings` set the
    caps on specs (their defaults without)."""

    def __init__(self, session: AsyncSession, settings: Settings | None = None) -> None:
        self.session = session
        self.settings = settings
        self.repo = TemplateRepository(session)

    async def _plugins(self, principal: Principal) -> PluginAccess:
        return await PluginAccessService(self.session).of(principal.tenant_id, self.settings)

    async def create(
        self, principal: Principal, spec_data: Any, visibility: str = "PRIVATE"
    ) -> Template:
        ensure_author_role(principal)
        if visibility not in VISIBILITIES:
            raise ValidationFailed(f"unknown visibility {visibility!r}")
        spec = await validated_spec(
            spec_data,
            self.settings,
            tenant=principal.tenant_id,
            plugins=await self._plugins(principal),
        )
        if await self.repo.by_owner_name(principal.tenant_id, spec.name) is not None:
            raise Conflict(f"a template named {spec.name!r} already exists")
        if visibility == "PUBLIC":  # its first version goes to review when published
            await ensure_not_platform_name(self.repo, spec.name)
        template = Template(
            tenant_id=principal.tenant_id,
            name=spec.name,
            visibility=visibility,
            latest_version=0,
            draft_spec=spec.model_dump(mode="json"),
            created_by_key_id=principal.key_id,
            created_by=principal.actor,
        )
        catalog_fields(template, spec)
        try:
            return await self.repo.add(template)
        except IntegrityError as exc:  # lost a race with a create of the same name
            raise Conflict(f"a template named {spec.name!r} already exists") from exc

    async def update_draft(
        self, principal: Principal, template_id: uuid.UUID, spec_data: Any
    ) -> Template:
        template = await self._editable(principal, template_id)
        spec = await validated_spec(
            spec_data,
            self.settings,
            tenant=principal.tenant_id,
            plugins=await self._plugins(principal),
        )
        if spec.name != template.name:
            raise ValidationFailed(
                "a template cannot be renamed",
                details=[{"path": "$.name", "message": f"must stay {template.name!r}"}],
            )
        template.draft_spec = spec.model_dump(mode="json")
        if template.latest_version == 0:
            catalog_fields(template, spec)
        await self.session.flush()
        return template

    async def publish(self, principal: Principal, template_id: uuid.UUID) -> Template:
        """The draft becomes version N+1; the draft stays, minus its param_migration (which
        described N -> N+1 and would be wrong for the next version). A PUBLIC template's new
        version waits for the platform's review; others keep seeing public_version."""
        template = await self._editable(principal, template_id)
        if template.draft_spec is None:
            raise Conflict("the template has no draft to publish")
        # Checked again: activities may have changed since saving.
        spec = await validated_spec(
            template.draft_spec,
            self.settings,
            tenant=principal.tenant_id,
            plugins=await self._plugins(principal),
        )
        stored = spec.model_dump(mode="json")
        number = template.latest_version + 1
        if number == 1 and spec.param_migration is not None:
            raise ValidationFailed(
                "version 1 cannot have a param_migration",
                details=[
                    {
                        "path": "$.param_migration",
                        "message": "version 1 has no earlier version to migrate params from",
                    }
                ],
            )
        if spec.sla is not None and spec.sla.min_success_rate is not None:
            if template.tenant_id is not None:  # the platform's templates are not capped
                await check_target_cap(self.session, template.tenant_id, template.id)
        current = await self.repo.version(template.id, template.latest_version)
        if current is not None and current.status == "PUBLISHED":
            if same_content(current.spec, stored):
                raise Conflict(f"the draft has no changes since version {current.version}")
        await self.repo.add_version(
            TemplateVersion(
                template_id=template.id,
                version=number,
                spec=stored,
                published_by_key_id=principal.key_id,
                published_by=principal.actor,
                review_status="PENDING" if template.visibility == "PUBLIC" else None,
            )
        )
        template.latest_version = number
        template.draft_spec = {**stored, "param_migration": None}
        if not shows_public_version(template):  # else the new text waits for review too
            catalog_fields(template, spec)
        await self.session.flush()
        return template

    async def deprecate(
        self, principal: Principal, template_id: uuid.UUID, number: int
    ) -> Template:
        """No new executions start on that version; running ones finish on it. Idempotent."""
        template = await self._editable(principal, template_id)
        version = await self.repo.version(template.id, number)
        if version is None:
            raise NotFound(f"template has no version {number}")
        if version.status != "DEPRECATED":
            version.status, version.deprecated_at = "DEPRECATED", utcnow()
            template.updated_at = utcnow()
            await self.session.flush()
        return template

    async def set_visibility(
        self, principal: Principal, template_id: uuid.UUID, visibility: str
    ) -> Template:
        """PRIVATE also revokes every share: private means the owner only, no dormant grants.
        PUBLIC is a request: the latest version waits for the platform operator's review and
        others see the template once a version is approved. Leaving PUBLIC withdraws it from
        the catalog (public_version and pending requests are cleared)."""
        if visibility not in VISIBILITIES:
            raise ValidationFailed(f"unknown visibility {visibility!r}")
        template = await self._editable(principal, template_id)
        if visibility == "PUBLIC":
            await ensure_not_platform_name(self.repo, template.name)
            await self._submit_latest(template, again=template.visibility == "PUBLIC")
        elif template.visibility == "PUBLIC":
            template.public_version = None
            await self.repo.withdraw_reviews(template.id)
            # The listing showed the public version: back to the latest one's text.
            latest = await self.repo.version(template.id, template.latest_version)
            if latest is not None:
                stored_catalog_fields(template, latest.spec)
        if visibility == "PRIVATE":
            await self.repo.revoke(template.id, None)
        template.visibility = visibility
        template.updated_at = utcnow()
        await self.session.flush()
        await self.repo.drop_unseen_sla_overrides(template.id)
        return template

    async def _submit_latest(self, template: Template, *, again: bool) -> None:
        """Put the latest version in the review queue. `again` (already PUBLIC): only one
        that is not already pending or approved, i.e. a rejected one is submitted anew."""
        latest = await self.repo.version(template.id, template.latest_version)
        if latest is None or (again and latest.review_status in ("PENDING", "APPROVED")):
            return
        latest.review_status, latest.review_note, latest.reviewed_at = "PENDING", None, None

    async def share(
        self,
        principal: Principal,
        template_id: uuid.UUID,
        tenant_names: list[str],
        *,
        revoke: bool = False,
    ) -> Template:
        """Grant (or revoke) read and run to tenants by name. Granting on a PRIVATE template
        makes it SHARED; a PUBLIC one stays PUBLIC (its grants matter if it goes SHARED)."""
        template = await self._editable(principal, template_id)
        given = [n.strip() for n in tenant_names]
        names = list(dict.fromkeys(given))
        if not 1 <= len(names) <= MAX_SHARE_NAMES:
            raise ValidationFailed(f"give 1-{MAX_SHARE_NAMES} tenant names")
        tenants = await self.repo.tenants_by_name(names)
        problems = []
        for i, name in enumerate(given):
            tenant = tenants.get(name)
            if tenant is None:
                problems.append({"path": f"$.tenantNames[{i}]", "message": f"no tenant {name!r}"})
            elif tenant.id == principal.tenant_id:
                problems.append(
                    {"path": f"$.tenantNames[{i}]", "message": "the owner always has access"}
                )
        if problems:
            raise ValidationFailed(f"cannot share ({len(problems)} problems)", details=problems)
        ids = [tenants[n].id for n in names]
        if revoke:
            await self.repo.revoke(template.id, ids)
        else:
            await self.repo.grant(template.id, ids, principal.key_id, principal.actor)
            if template.visibility == "PRIVATE":
                template.visibility = "SHARED"
        template.updated_at = utcnow()
        await self.session.flush()
        if revoke:
            await self.repo.drop_unseen_sla_overrides(template.id)
        return template

    async def _editable(self, principal: Principal, template_id: uuid.UUID) -> Template:
        template = await self.repo.get_visible(principal.tenant_id, template_id, lock=True)
        if template is None:
            raise NotFound("template not found")
        ensure_author_role(principal)
        ensure_owner(principal, template)
        return template
