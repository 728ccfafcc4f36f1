"""Template queries: `templates` (search, filters, orderings), `template` and `validateTemplate`."""

from __future__ import annotations

from typing import Any

import strawberry
from strawberry.scalars import JSON

from app.api.context import Context
from app.api.errors import Problem
from app.api.relay import Connection, from_global_id
from app.api.templates.types import Template, TemplateOrder, TemplateVisibility
from app.errors import NotFound
from app.templates.search import TemplateFilter
from app.templates.service import TemplateService
from app.tenants.plugin_access import PluginAccessService


@strawberry.type
class TemplateValidation:
    valid: bool
    problems: list[Problem]


@strawberry.type
class TemplateQuery:
    @strawberry.field(
        description=(
            "Templates the caller can read: its own, those shared with it and the public "
            "catalog. `search` is full text over name, title, tags and description (web "
            'search syntax: words, "quoted phrases", or, -not); `tags` must all be present. '
            "orderBy defaults to RELEVANCE with a search, else NAME; POPULARITY counts "
            "executions started in the last 30 days by every tenant; CREATED is newest first."
        )
    )
    async def templates(
        self,
        info: strawberry.Info[Context, None],
        search: str | None = None,
        tags: list[str] | None = None,
        category: str | None = None,
        visibility: TemplateVisibility | None = None,
        order_by: TemplateOrder | None = None,
        first: int | None = 20,
        after: str | None = None,
    ) -> Connection[Template]:
        principal = info.context.principal()
        criteria = TemplateFilter.build(
            search=search,
            tags=tags,
            category=category,
            visibility=visibility.value if visibility else None,
            order=order_by.value if order_by else None,
        )
        async with info.context.session() as s:
            page = await TemplateService(s).search_page(principal.tenant_id, criteria, first, after)
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
        principal = info.context.principal()
        pk = from_global_id(id, "Template")[1] if id is not None else None
        async with info.context.session() as s:
            template = await TemplateService(s).resolve(
                principal.tenant_id, template_id=pk, name=name
            )
        return Template.from_model(template)

    @strawberry.field(description="Check a template spec without saving it: every problem.")
    async def validate_template(
        self, info: strawberry.Info[Context, None], spec: JSON
    ) -> TemplateValidation:
        principal = info.context.principal()
        settings = info.context.deps.settings
        async with info.context.session() as s:
            plugins = await PluginAccessService(s).of(principal.tenant_id, settings)
        problems = await TemplateService.problems_of(
            spec, settings, tenant_id=principal.tenant_id, plugins=plugins
        )
        return TemplateValidation(
            valid=not problems,
            problems=[Problem(path=p["path"], message=p["message"]) for p in problems],
        )


async def load_template_node(info: strawberry.Info[Context, None], pk: Any) -> Template:
    template = await info.context.loaders.templates.load(pk)
    if template is None:
        raise NotFound("template not found")
    return Template.from_model(template)
