"""SQL for templates and their versions. Visibility rules are expressed here as filters."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import ColumnElement, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Template, TemplateVersion


def visible_to(tenant_id: uuid.UUID) -> ColumnElement[bool]:
    return or_(Template.tenant_id == tenant_id, Template.visibility == "PUBLIC")


class TemplateRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get_visible(self, tenant_id: uuid.UUID, template_id: uuid.UUID) -> Template | None:
        return await self.session.scalar(
            select(Template).where(Template.id == template_id, visible_to(tenant_id))
        )

    async def get_many_visible(
        self, tenant_id: uuid.UUID, ids: list[uuid.UUID]
    ) -> dict[uuid.UUID, Template]:
        rows = await self.session.scalars(
            select(Template).where(Template.id.in_(ids), visible_to(tenant_id))
        )
        return {t.id: t for t in rows}

    async def by_name_visible(self, tenant_id: uuid.UUID, name: str) -> Template | None:
        # The tenant's own template wins over a public one of the same name.
        return await self.session.scalar(
            select(Template)
            .where(Template.name == name, visible_to(tenant_id))
            .order_by(Template.tenant_id.is_(None))
            .limit(1)
        )

    async def by_owner_name(self, tenant_id: uuid.UUID | None, name: str) -> Template | None:
        owner = (
            Template.tenant_id.is_(None) if tenant_id is None else Template.tenant_id == tenant_id
        )
        return await self.session.scalar(select(Template).where(owner, Template.name == name))

    async def list_visible(
        self, tenant_id: uuid.UUID, limit: int, after: list[Any] | None
    ) -> list[Template]:
        query = select(Template).where(visible_to(tenant_id))
        if after is not None:
            query = query.where(
                tuple_(Template.name, Template.id) > (after[0], uuid.UUID(after[1]))
            )
        rows = await self.session.scalars(query.order_by(Template.name, Template.id).limit(limit))
        return list(rows)

    async def add(self, template: Template) -> Template:
        self.session.add(template)
        await self.session.flush()
        return template

    async def add_version(self, version: TemplateVersion) -> TemplateVersion:
        self.session.add(version)
        await self.session.flush()
        return version

    async def version(self, template_id: uuid.UUID, number: int) -> TemplateVersion | None:
        return await self.session.scalar(
            select(TemplateVersion).where(
                TemplateVersion.template_id == template_id, TemplateVersion.version == number
            )
        )

    async def versions_by_ids(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, TemplateVersion]:
        rows = await self.session.scalars(
            select(TemplateVersion).where(TemplateVersion.id.in_(ids))
        )
        return {v.id: v for v in rows}

    async def latest_versions(
        self, template_ids: list[uuid.UUID]
    ) -> dict[uuid.UUID, TemplateVersion]:
        """Latest PUBLISHED version of each template."""
        rows = await self.session.scalars(
            select(TemplateVersion)
            .where(
                TemplateVersion.template_id.in_(template_ids),
                TemplateVersion.status == "PUBLISHED",
            )
            .order_by(TemplateVersion.template_id, TemplateVersion.version.desc())
            .distinct(TemplateVersion.template_id)
        )
        return {v.template_id: v for v in rows}
