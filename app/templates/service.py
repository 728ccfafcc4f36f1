"""Template rules: visibility, resolution by id or name, publishing versions."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import NotFound, ValidationFailed
from app.models import Template, TemplateVersion
from app.pagination import Page, check_first, decode_cursor, encode_cursor
from app.templates.repository import TemplateRepository
from app.templates.schemas import TemplateSpec, validate_spec


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
        if (template_id is None) == (name is None):
            raise ValidationFailed("give exactly one of templateId or templateName")
        if template_id is not None:
            return await self.get(tenant_id, template_id)
        assert name is not None
        template = await self.repo.by_name_visible(tenant_id, name)
        if template is None:
            raise NotFound(f"template {name!r} not found")
        return template

    async def latest_version(self, template: Template) -> tuple[TemplateVersion, TemplateSpec]:
        version = (await self.repo.latest_versions([template.id])).get(template.id)
        if version is None:
            raise ValidationFailed(f"template {template.name!r} has no published version")
        return version, TemplateSpec.model_validate(version.spec)

    async def list_page(
        self, tenant_id: uuid.UUID, first: int | None, after: str | None
    ) -> Page[Template]:
        limit = check_first(first)
        rows = await self.repo.list_visible(tenant_id, limit + 1, decode_cursor(after))
        items = rows[:limit]
        return Page(
            items=items,
            cursors=[encode_cursor([t.name, str(t.id)]) for t in items],
            has_next=len(rows) > limit,
        )

    async def publish(
        self, spec_data: dict[str, Any], *, tenant_id: uuid.UUID | None, visibility: str
    ) -> tuple[Template, TemplateVersion, bool]:
        """Create or update a template and publish a new version if the spec changed.

        Returns (template, latest version, whether a new version was published).
        """
        spec = validate_spec(spec_data)
        stored = spec.model_dump(mode="json")
        template = await self.repo.by_owner_name(tenant_id, spec.name)
        if template is None:
            template = await self.repo.add(
                Template(
                    tenant_id=tenant_id,
                    name=spec.name,
                    title=spec.title,
                    description=spec.description,
                    tags=spec.tags,
                    visibility=visibility,
                    latest_version=0,
                )
            )
        else:
            current = await self.repo.version(template.id, template.latest_version)
            if current is not None and current.spec == stored:
                return template, current, False
        template.latest_version += 1
        template.title, template.description, template.tags = (
            spec.title,
            spec.description,
            spec.tags,
        )
        version = await self.repo.add_version(
            TemplateVersion(template_id=template.id, version=template.latest_version, spec=stored)
        )
        return template, version, True
