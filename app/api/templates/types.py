"""The Template node and what hangs off it: versions, diffs, steps, enhancement points."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated, Any, cast

import strawberry
from strawberry.scalars import JSON

from app.api.context import Context
from app.api.errors import graphql_errors
from app.api.relay import Node, to_global_id
from app.models import Template as TemplateModel
from app.models import TemplateVersion as VersionModel
from app.templates.checks import resolved_needs
from app.templates.lifecycle import SpecDiff, can_author, diff_versions, owns, unified_off_loop
from app.templates.schemas import TemplateSpec


@strawberry.enum
class TemplateVisibility(enum.Enum):
    PRIVATE = "PRIVATE"
    SHARED = "SHARED"
    PUBLIC = "PUBLIC"


@strawberry.enum
class TemplateVersionStatus(enum.Enum):
    PUBLISHED = "PUBLISHED"
    DEPRECATED = "DEPRECATED"


@strawberry.enum(description="How `templates` is sorted; RELEVANCE needs a search.")
class TemplateOrder(enum.Enum):
    RELEVANCE = "RELEVANCE"
    NAME = "NAME"
    POPULARITY = "POPULARITY"
    CREATED = "CREATED"


@strawberry.type
class TemplateStep:
    id: str
    activity: str
    title: str | None
    needs: list[str] = strawberry.field(
        description="Steps this one waits for (a step without `needs` waits for the one before)."
    )


@strawberry.type(description="A step an AI task may improve from a tier up, and its non-AI path.")
class EnhancementPoint:
    step_id: str
    task: str
    min_tier: str
    fallback: str


@strawberry.type(description="A published version; its spec never changes.")
class TemplateVersion:
    version: int
    status: TemplateVersionStatus
    created_at: datetime
    published_at: datetime
    deprecated_at: datetime | None
    spec: JSON

    @classmethod
    def from_model(cls, m: VersionModel) -> TemplateVersion:
        return cls(
            version=m.version,
            status=TemplateVersionStatus(m.status),
            created_at=m.created_at,
            published_at=m.created_at,
            deprecated_at=m.deprecated_at,
            spec=cast(JSON, m.spec),
        )


@strawberry.type
class StepChange:
    step_id: str
    fields: list[str] = strawberry.field(description="Keys of the step that differ.")


@strawberry.type(description="What changed between two versions of a template.")
class TemplateDiff:
    from_version: int
    to_version: int
    added_steps: list[str]
    removed_steps: list[str]
    changed_steps: list[StepChange]
    changed_fields: list[str] = strawberry.field(
        description="Top-level spec fields other than steps that differ; `steps (order)` "
        "when the kept steps were reordered."
    )
    domain: strawberry.Private[SpecDiff]

    @strawberry.field(description="Unified diff of the two specs as JSON.")
    async def unified(self, info: strawberry.Info[Context, None]) -> str:
        # The only costly part, so computed only when asked for, off the event loop, in the
        # asking tenant's share of the validation pool.
        with graphql_errors():
            return await unified_off_loop(
                self.domain, info.context.deps.settings, tenant=info.context.principal().tenant_id
            )

    @classmethod
    def from_domain(cls, d: SpecDiff) -> TemplateDiff:
        return cls(
            from_version=d.from_version,
            to_version=d.to_version,
            added_steps=d.added_steps,
            removed_steps=d.removed_steps,
            changed_steps=[StepChange(step_id=c.step_id, fields=c.fields) for c in d.changed_steps],
            changed_fields=d.changed_fields,
            domain=d,
        )


@strawberry.type
class Template(Node):
    name: str
    title: str
    description: str
    tags: list[str]
    category: str | None
    visibility: TemplateVisibility
    latest_version: int = strawberry.field(
        description="The highest published version (0 before the first publish), deprecated or not."
    )
    created_at: datetime
    updated_at: datetime
    model: strawberry.Private[TemplateModel]

    @classmethod
    def from_model(cls, m: TemplateModel) -> Template:
        return cls(
            id=to_global_id("Template", m.id),
            name=m.name,
            title=m.title,
            description=m.description,
            tags=list(m.tags),
            category=m.category,
            visibility=TemplateVisibility(m.visibility),
            latest_version=m.latest_version,
            created_at=m.created_at,
            updated_at=m.updated_at,
            model=m,
        )

    async def _spec(self, info: strawberry.Info[Context, None]) -> dict[str, Any]:
        version = await info.context.loaders.latest_versions.load(self.model.id)
        return version.spec if version is not None else {}

    @strawberry.field(
        description="The version startExecution runs: the latest one not deprecated; "
        "null when there is none."
    )
    async def current_version(self, info: strawberry.Info[Context, None]) -> int | None:
        version = await info.context.loaders.latest_versions.load(self.model.id)
        return version.version if version is not None else None

    @strawberry.field(description="Every published version, oldest first.")
    async def versions(self, info: strawberry.Info[Context, None]) -> list[TemplateVersion]:
        rows = await info.context.loaders.template_versions.load(self.model.id)
        return [TemplateVersion.from_model(v) for v in rows]

    @strawberry.field(description="One published version; null if there is no such version.")
    async def version(
        self, info: strawberry.Info[Context, None], number: int
    ) -> TemplateVersion | None:
        rows = await info.context.loaders.template_versions.load(self.model.id)
        return next((TemplateVersion.from_model(v) for v in rows if v.version == number), None)

    @strawberry.field(description="What changed from one published version to another.")
    async def diff(
        self,
        info: strawberry.Info[Context, None],
        from_: Annotated[int, strawberry.argument(name="from")],
        to: int,
    ) -> TemplateDiff:
        rows = await info.context.loaders.template_versions.load(self.model.id)
        with graphql_errors():
            return TemplateDiff.from_domain(diff_versions(rows, from_, to))

    @strawberry.field(
        description="The spec being edited (the next version once published); only for the "
        "owner tenant's admins, null for everyone else."
    )
    def draft(self, info: strawberry.Info[Context, None]) -> JSON | None:
        if not can_author(info.context.principal(), self.model):
            return None
        return cast(JSON | None, self.model.draft_spec)

    @strawberry.field(description="Whether the caller's tenant owns this template.")
    def owned_by_viewer(self, info: strawberry.Info[Context, None]) -> bool:
        return owns(info.context.principal(), self.model)

    @strawberry.field(
        description="Names of the tenants it is shared with; only for the owner tenant, "
        "null for everyone else."
    )
    async def shared_with(self, info: strawberry.Info[Context, None]) -> list[str] | None:
        if not owns(info.context.principal(), self.model):
            return None
        return await info.context.loaders.template_shares.load(self.model.id)

    @strawberry.field(
        name="runCount30d",
        description="Executions started in the last 30 days, by every tenant.",
    )
    async def run_count_30d(self, info: strawberry.Info[Context, None]) -> int:
        return await info.context.loaders.template_run_counts.load(self.model.id)

    @strawberry.field(description="Steps of the current version, in run order.")
    async def steps(self, info: strawberry.Info[Context, None]) -> list[TemplateStep]:
        spec = await self._spec(info)
        if not spec:
            return []
        parsed = TemplateSpec.model_validate(spec)
        needs = resolved_needs(parsed)
        return [
            TemplateStep(id=s.id, activity=s.activity, title=s.title, needs=needs[s.id])
            for s in parsed.steps
        ]

    @strawberry.field(description="AI enhancement points of the current version.")
    async def enhancement_points(
        self, info: strawberry.Info[Context, None]
    ) -> list[EnhancementPoint]:
        spec = await self._spec(info)
        return [
            EnhancementPoint(
                step_id=s["id"], task=e["task"], min_tier=e["min_tier"], fallback=e["fallback"]
            )
            for s in spec.get("steps", [])
            for e in s.get("enhancements", [])
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
