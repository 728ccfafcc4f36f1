"""Template types and queries: `templates` (connection) and `template(id, name)`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry
from strawberry.scalars import JSON

from app.api.context import Context
from app.api.errors import graphql_errors
from app.api.relay import Connection, Node, from_global_id, to_global_id
from app.errors import NotFound
from app.models import Template as TemplateModel
from app.templates.schemas import TemplateSpec
from app.templates.service import TemplateService


@strawberry.type
class TemplateStep:
    id: str
    activity: str
    title: str | None


@strawberry.type
class Template(Node):
    name: str
    title: str
    description: str
    tags: list[str]
    latest_version: int
    created_at: datetime
    updated_at: datetime
    pk: strawberry.Private[Any]

    @classmethod
    def from_model(cls, m: TemplateModel) -> Template:
        return cls(
            id=to_global_id("Template", m.id),
            name=m.name,
            title=m.title,
            description=m.description,
            tags=list(m.tags),
            latest_version=m.latest_version,
            created_at=m.created_at,
            updated_at=m.updated_at,
            pk=m.id,
        )

    async def _spec(self, info: strawberry.Info[Context, None]) -> dict[str, Any]:
        version = await info.context.loaders.latest_versions.load(self.pk)
        return version.spec if version is not None else {}

    @strawberry.field(description="Steps of the latest published version, in run order.")
    async def steps(self, info: strawberry.Info[Context, None]) -> list[TemplateStep]:
        spec = await self._spec(info)
        return [
            TemplateStep(id=s["id"], activity=s["activity"], title=s.get("title"))
            for s in spec.get("steps", [])
        ]

    @strawberry.field(description="Params that pass validation, to try the template; null if none.")
    async def example_params(self, info: strawberry.Info[Context, None]) -> JSON | None:
        return (await self._spec(info)).get("example_params")

    @strawberry.field(
        description="JSON Schema (draft 2020-12) that startExecution params must match."
    )
    async def parameters_schema(self, info: strawberry.Info[Context, None]) -> JSON:
        spec = await self._spec(info)
        return spec.get(
            "parameters",
            TemplateSpec.model_fields["parameters"].get_default(call_default_factory=True),
        )


TemplateConnection = Connection[Template]


@strawberry.type
class TemplateQuery:
    @strawberry.field(
        description="Templates visible to the caller: its own and the public catalog."
    )
    async def templates(
        self, info: strawberry.Info[Context, None], first: int | None = 20, after: str | None = None
    ) -> Connection[Template]:
        with graphql_errors():
            principal = info.context.principal()
            async with info.context.session() as s:
                page = await TemplateService(s).list_page(principal.tenant_id, first, after)
        return Connection.build(
            [Template.from_model(t) for t in page.items],
            page.cursors,
            page.has_next,
            after is not None,
        )

    @strawberry.field(description="One template by global id or by name.")
    async def template(
        self,
        info: strawberry.Info[Context, None],
        id: strawberry.ID | None = None,
        name: str | None = None,
    ) -> Template:
        with graphql_errors():
            principal = info.context.principal()
            pk = from_global_id(id, "Template")[1] if id is not None else None
            async with info.context.session() as s:
                template = await TemplateService(s).resolve(
                    principal.tenant_id, template_id=pk, name=name
                )
        return Template.from_model(template)


async def load_template_node(info: strawberry.Info[Context, None], pk: Any) -> Template:
    template = await info.context.loaders.templates.load(pk)
    if template is None:
        raise NotFound("template not found")
    return Template.from_model(template)
