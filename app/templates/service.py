"""Template rules for reading and running: visibility, resolution by id, bare or qualified
name, the version a new execution runs (pinned to the accepted one for another publisher's
template), param migration between versions, search, and publishing platform templates
(`wfs seed`). Authoring by tenants is in app/templates/lifecycle.py; the platform's review and
tenants' acceptances in app/templates/review.py."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Conflict, Forbidden, NotFound, ValidationFailed
from app.models import Template, TemplateVersion
from app.models.base import utcnow
from app.pagination import Page, check_first
from app.settings import Settings
from app.templates.catalog import (
    PLATFORM_PUBLISHER,
    Relation,
    needs_acceptance,
    offered_number,
    relation,
    split_qualified,
)
from app.templates.lifecycle import (
    catalog_fields,
    migrate_params,
    shows_public_version,
    validated_spec,
)
from app.templates.repository import TemplateRepository
from app.templates.schemas import (
    TemplateSpec,
    bounded,
    check_params_limits,
    param_problems,
    validation_deadline,
)
from app.templates.search import SearchCursor, TemplateFilter
from app.tenants.plugin_access import PluginAccess

log = structlog.get_logger(__name__)

# POPULARITY and runCount30d: executions started in this window, by every tenant.
POPULARITY_WINDOW = timedelta(days=30)


def popularity_since() -> datetime:
    return utcnow() - POPULARITY_WINDOW


_SPECS: dict[uuid.UUID, TemplateSpec] = {}
_SPECS_KEPT = 512


def spec_of(version: TemplateVersion) -> TemplateSpec:
    """The version's spec, parsed once per process: a published version's spec never changes
    (a change is a new version), and every start and admission of it needs it parsed.
    Bounded: the oldest parsed version is forgotten first. Callers must not modify it."""
    spec = _SPECS.get(version.id)
    if spec is None:
        if len(_SPECS) >= _SPECS_KEPT:
            _SPECS.pop(next(iter(_SPECS)))
        spec = _SPECS[version.id] = TemplateSpec.model_validate(version.spec)
    return spec


class TemplateService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.repo = TemplateRepository(session)

    async def get(self, tenant_id: uuid.UUID, template_id: uuid.UUID) -> Template:
        template = await self.repo.get_visible(tenant_id, template_id)
        if template is None:
            raise NotFound("template not found")
        return template

    async def resolve(
        self, tenant_id: uuid.UUID, *, template_id: uuid.UUID | None, name: str | None
    ) -> Template:
        """By id; by qualified name `publisher/name` (any template the tenant can read,
        `workflow-service/...` for the platform's); or by bare name, which reaches only the
        tenant's own template, one shared with it (those its admin accepted first) and the
        platform's: another tenant's PUBLIC template is never reached by a bare name."""
        if (template_id is None) == (name is None):
            raise ValidationFailed("give exactly one of templateId or templateName")
        if template_id is not None:
            return await self.get(tenant_id, template_id)
        assert name is not None
        publisher, bare = split_qualified(name)
        if publisher is not None:
            return await self._by_qualified_name(tenant_id, publisher, bare, name)
        found = await self.repo.by_bare_name(tenant_id, name)
        if not found:
            raise NotFound(f"template {name!r} not found")
        (first, rank), rest = found[0], found[1:]
        # Own and platform names are unique per owner: only shares of one rank can tie.
        if rest and rest[0][1] == rank:
            raise Conflict(
                f"several templates named {name!r} are shared with you: use templateId or "
                f"a qualified name (publisher/{name})"
            )
        return first

    async def _by_qualified_name(
        self, tenant_id: uuid.UUID, publisher: str, bare: str, name: str
    ) -> Template:
        if publisher == PLATFORM_PUBLISHER.name:
            owner_id = None
        else:
            tenant = (await self.repo.tenants_by_name([publisher])).get(publisher)
            if tenant is None:
                raise NotFound(f"template {name!r} not found")
            owner_id = tenant.id
        template = await self.repo.by_owner_name(owner_id, bare)
        if template is None or await self.repo.get_visible(tenant_id, template.id) is None:
            raise NotFound(f"template {name!r} not found")
        return template

    async def latest_version(self, template: Template) -> tuple[TemplateVersion, TemplateSpec]:
        """The latest version that is not deprecated (what the owner's executions run)."""
        version = (await self.repo.latest_versions([template.id])).get(template.id)
        if version is None:
            if template.latest_version > 0:
                raise Conflict(
                    f"every version of template {template.name!r} is deprecated: "
                    "nothing new can start on it"
                )
            raise Conflict(f"template {template.name!r} has no published version")
        return version, spec_of(version)

    async def offered_version(
        self, tenant_id: uuid.UUID, template: Template
    ) -> TemplateVersion | None:
        """The version a tenant sees (and accepts, for another publisher's template): the
        approved public version of another tenant's PUBLIC template, else the latest version
        that is not deprecated. None when there is none."""
        number = offered_number(tenant_id, template)
        found = await self.repo.offered_versions([(template.id, number)])
        return found.get((template.id, number))

    async def version_to_run(
        self, tenant_id: uuid.UUID, template: Template, label: str
    ) -> tuple[TemplateVersion, TemplateSpec]:
        """The version a new execution of the tenant runs. Its own and the platform's
        templates: the latest not deprecated. Another publisher's (shared or public): the
        version the tenant's admin accepted, pinned, whatever is newer; nothing before an
        admin accepted one. `label` names the template in messages (the name it was asked by).
        """
        if not needs_acceptance(tenant_id, template):
            return await self.latest_version(template)
        acceptance = await self.repo.acceptance(tenant_id, template.id)
        if acceptance is None:
            offered = await self.offered_version(tenant_id, template)
            if offered is None:
                raise Conflict(f"template {label!r} has no version you can run")
            owner = await self.repo.tenant(template.tenant_id) if template.tenant_id else None
            publisher = f"another tenant ({owner.name})" if owner else "another tenant"
            raise Forbidden(
                f"template {label!r} is published by {publisher}: an admin of your tenant "
                f"must accept version {offered.version} (acceptTemplate) before it can run; "
                "its capabilities say what it does"
            )
        version = await self.repo.version(template.id, acceptance.version)
        if version is not None and relation(tenant_id, template) is Relation.PUBLIC:
            # Others may run only approved versions of a public template (accepted while it
            # was shared is not enough).
            version = version if version.review_status == "APPROVED" else None
        if version is None or version.status != "PUBLISHED":
            offered = await self.offered_version(tenant_id, template)
            newer = f": accept version {offered.version}" if offered is not None else ""
            raise Conflict(
                f"version {acceptance.version} of template {label!r}, the one your tenant "
                f"accepted, can no longer start{newer}"
            )
        return version, spec_of(version)

    async def ensure_rerunnable(
        self, tenant_id: uuid.UUID, template_id: uuid.UUID, version_id: uuid.UUID
    ) -> None:
        """A retry of the tenant's execution of that template version runs it again in the
        tenant's context. For another publisher's template that is allowed only while a new
        start could run the same version: the template still visible to the tenant, the
        version the one its admin accepted and still startable (version_to_run's rules: not
        deprecated, approved if public), with the errors a start gets. The tenant's own and
        the platform's templates retry as before (no acceptance involved)."""
        template = await self.repo.get_visible(tenant_id, template_id)
        if template is None:
            raise NotFound("template not found")  # as a start by id: hidden or withdrawn
        if not needs_acceptance(tenant_id, template):
            return
        version, _ = await self.version_to_run(tenant_id, template, template.name)
        if version.id != version_id:
            ran = await self.repo.versions_by_ids([version_id])
            number = ran[version_id].version if version_id in ran else "?"
            raise Conflict(
                f"this execution ran version {number} of template {template.name!r}; your "
                f"tenant now accepts version {version.version}: start a new execution instead"
            )

    async def prepare_params(
        self,
        template: Template,
        version: TemplateVersion,
        params: dict[str, Any],
        params_version: int | None,
        settings: Settings | None = None,
        *,
        tenant_id: uuid.UUID | None = None,
    ) -> dict[str, Any]:
        """Params to run `version` with. params_version K says they were written for version
        K: the param_migration of versions K+1..N apply in order. Without it, params that do
        not validate are tried as params of N-1, N-2, ... 1; the first migration that validates
        wins. Raises ValidationFailed with every problem (the original ones if none fits).

        Params are tenant input: their size and depth are capped (`settings`), and every
        check runs off the event loop within validation_timeout_seconds, all tries together,
        within the fair share of the validation pool of `tenant_id` (who starts)."""
        bound: dict[str, Any] = {
            "deadline": validation_deadline(settings),
            "settings": settings,
            "tenant": tenant_id,
        }
        schema = version.spec.get("parameters", {"type": "object"})
        target = version.version
        if params_version is not None:
            if not 1 <= params_version <= target:
                raise ValidationFailed(
                    f"paramsVersion must be between 1 and {target}",
                    details=[
                        {"path": "$.paramsVersion", "message": f"no version {params_version}"}
                    ],
                )
            migrations = await self.repo.param_migrations(template.id, params_version, target)
            migrated, problems = await bounded(
                _migrated_problems, schema, params, migrations, settings, **bound
            )
            if problems:
                raise ValidationFailed(
                    f"params of version {params_version} do not match version {target}'s "
                    f"parameters after migration ({len(problems)} problems)",
                    details=problems,
                )
            return migrated
        problems = await bounded(_checked_param_problems, schema, params, settings, **bound)
        if not problems:
            return params
        migrations = await self.repo.param_migrations(template.id, 0, target) if target > 1 else []
        fitting = await bounded(_first_fitting, schema, params, migrations, target, **bound)
        if fitting is not None:
            older, migrated = fitting
            log.info(
                "template.params_migrated",
                template=template.name,
                from_version=older,
                to_version=target,
            )
            return migrated
        raise ValidationFailed(
            f"params do not match the template's parameters ({len(problems)} problems)",
            details=problems,
        )

    @staticmethod
    def _migrate(
        params: dict[str, Any], migrations: list[tuple[int, dict[str, Any] | None]]
    ) -> dict[str, Any]:
        for _, migration in migrations:
            params = migrate_params(params, migration)
        return params

    async def search_page(
        self, tenant_id: uuid.UUID, criteria: TemplateFilter, first: int | None, after: str | None
    ) -> Page[Template]:
        limit = check_first(first)
        cursor = SearchCursor.decode(after, criteria.order)
        rows = await self.repo.search(
            tenant_id, criteria, since=popularity_since(), limit=limit + 1, after=cursor
        )
        items = rows[:limit]
        return Page(
            items=[t for t, _, _ in items],
            cursors=[SearchCursor(criteria.order, k, t.id, v).encode() for t, k, v in items],
            has_next=len(rows) > limit,
        )

    @staticmethod
    async def problems_of(
        spec_data: Any,
        settings: Settings | None = None,
        *,
        tenant_id: uuid.UUID | None = None,
        plugins: PluginAccess | None = None,
    ) -> list[dict[str, str]]:
        """Every problem of a spec (empty when it is valid), checked off the event loop within
        the fair share of `tenant_id` (who asks), with the plugins it may use (`plugins`;
        None: any loaded one)."""
        try:
            await validated_spec(spec_data, settings, tenant=tenant_id, plugins=plugins)
        except ValidationFailed as exc:
            return [{"path": p.get("path", "$"), "message": p["message"]} for p in exc.details]
        return []

    async def publish(
        self,
        spec_data: dict[str, Any],
        *,
        tenant_id: uuid.UUID | None,
        visibility: str,
        settings: Settings | None = None,
    ) -> tuple[Template, TemplateVersion, bool]:
        """Create or update a template and publish a new version if the spec changed, in one
        go (the standard templates, fixtures). Tenants author through TemplateAuthoring.

        Returns (template, latest version, whether a new version was published).
        """
        spec = await validated_spec(spec_data, settings)
        stored = spec.model_dump(mode="json")
        template = await self.repo.by_owner_name(tenant_id, spec.name)
        if template is None:
            template = Template(
                tenant_id=tenant_id, name=spec.name, visibility=visibility, latest_version=0
            )
            catalog_fields(template, spec)
            await self.repo.add(template)
        else:
            current = await self.repo.version(template.id, template.latest_version)
            if current is not None and current.spec == stored:
                return template, current, False
        template.latest_version += 1
        if not shows_public_version(template):  # a listed version's text stays (review)
            catalog_fields(template, spec)
        # A tenant's template keeps a draft to edit next; the platform's are not edited.
        template.draft_spec = None if tenant_id is None else {**stored, "param_migration": None}
        version = await self.repo.add_version(
            TemplateVersion(template_id=template.id, version=template.latest_version, spec=stored)
        )
        return template, version, True


def _checked_param_problems(
    schema: dict[str, Any], params: Any, settings: Settings | None
) -> list[dict[str, str]]:
    """The caps first (nothing recursive has read the params yet), then the schema."""
    check_params_limits(params, settings)
    return param_problems(schema, params)


def _migrated_problems(
    schema: dict[str, Any],
    params: dict[str, Any],
    migrations: list[tuple[int, dict[str, Any] | None]],
    settings: Settings | None,
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The caps, then the params migrated in order and what keeps them from validating."""
    check_params_limits(params, settings)
    migrated = TemplateService._migrate(params, migrations)
    return migrated, param_problems(schema, migrated)


def _first_fitting(
    schema: dict[str, Any],
    params: dict[str, Any],
    migrations: list[tuple[int, dict[str, Any] | None]],
    target: int,
) -> tuple[int, dict[str, Any]] | None:
    """Params taken as written for version target-1, target-2, ... 1 and migrated: the first
    (version, migrated params) that validates, or None."""
    for older in range(target - 1, 0, -1):
        steps = [(n, m) for n, m in migrations if n > older]
        if not any(m for _, m in steps):
            continue
        migrated = TemplateService._migrate(params, steps)
        if not param_problems(schema, migrated):
            return older, migrated
    return None
