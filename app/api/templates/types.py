"""The Template node and what hangs off it: publisher, capabilities, versions and their review,
diffs, steps, enhancement points."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated, Any, cast

import strawberry
from strawberry.scalars import JSON

from app.api.context import Context
from app.api.forecasts import CostEstimate, cost_estimate
from app.api.relay import Node, to_global_id
from app.api.viewer import Tier
from app.models import Template as TemplateModel
from app.models import TemplateVersion as VersionModel
from app.templates.catalog import (
    PLATFORM_PUBLISHER,
    Capabilities,
    Relation,
    capabilities_of,
    needs_acceptance,
    offered_number,
    relation,
)
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


@strawberry.enum(description="The platform operator's review of a version offered to everyone.")
class TemplateReviewStatus(enum.Enum):
    PENDING = "PENDING"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"


@strawberry.type(
    description="Who published a template: the platform (`workflow-service`, verified) or a "
    "tenant (by its name, never verified)."
)
class TemplatePublisher:
    name: str
    verified: bool


@strawberry.type(
    description="What a version does with the tenant that runs it: its files, mail relay, "
    "AI budget and the hosts it calls (compensations included). Read it before accepting "
    "another publisher's template."
)
class TemplateCapabilities:
    activities: list[str] = strawberry.field(description="Every activity its steps run.")
    sends_mail: bool
    reads_files: bool
    writes_files: bool
    calls_hosts: list[str] = strawberry.field(
        description='Hosts of its http.request steps; "*" where an expression or an AI '
        "enhancement point may choose the host."
    )
    uses_ai: bool = strawberry.field(description="AI steps or enhancement points (AI budget).")

    @classmethod
    def from_domain(cls, c: Capabilities) -> TemplateCapabilities:
        return cls(
            activities=c.activities,
            sends_mail=c.sends_mail,
            reads_files=c.reads_files,
            writes_files=c.writes_files,
            calls_hosts=c.calls_hosts,
            uses_ai=c.uses_ai,
        )


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
    review_status: TemplateReviewStatus | None = strawberry.field(
        description="The platform's review of this version for the public catalog (null: "
        "never submitted); only for the owner tenant, null for everyone else."
    )
    review_note: str | None = strawberry.field(
        description="Why the review rejected it; only for the owner tenant."
    )
    reviewed_at: datetime | None = strawberry.field(description="Only for the owner tenant.")
    published_by: str | None = strawberry.field(
        description="Who published it: `key:<API key id>` or `sub:<token subject>` (an "
        "identity provider's user); only for the owner tenant, null for everyone else and for "
        "the platform's templates."
    )

    @strawberry.field(description="What this version does with the tenant that runs it.")
    def capabilities(self) -> TemplateCapabilities:
        return TemplateCapabilities.from_domain(capabilities_of(cast(dict[str, Any], self.spec)))

    @classmethod
    def from_model(cls, m: VersionModel, *, owner: bool) -> TemplateVersion:
        review = m.review_status if owner else None
        return cls(
            version=m.version,
            status=TemplateVersionStatus(m.status),
            created_at=m.created_at,
            published_at=m.created_at,
            deprecated_at=m.deprecated_at,
            spec=cast(JSON, m.spec),
            review_status=TemplateReviewStatus(review) if review else None,
            review_note=m.review_note if owner else None,
            reviewed_at=m.reviewed_at if owner else None,
            published_by=m.published_by if owner else None,
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
            created_at=m.created_at,
            updated_at=m.updated_at,
            model=m,
        )

    def _relation(self, info: strawberry.Info[Context, None]) -> Relation:
        return relation(info.context.principal().tenant_id, self.model)

    async def _offered(self, info: strawberry.Info[Context, None]) -> VersionModel | None:
        number = offered_number(info.context.principal().tenant_id, self.model)
        return await info.context.loaders.offered_versions.load((self.model.id, number))

    async def _spec(self, info: strawberry.Info[Context, None]) -> dict[str, Any]:
        version = await self._offered(info)
        return version.spec if version is not None else {}

    async def _visible_rows(self, info: strawberry.Info[Context, None]) -> list[VersionModel]:
        """The versions the caller may see: of another tenant's PUBLIC template, only those
        the platform approved (the others were never offered to it)."""
        rows = await info.context.loaders.template_versions.load(self.model.id)
        if self._relation(info) is Relation.PUBLIC:
            rows = [v for v in rows if v.review_status == "APPROVED"]
        return rows

    async def _versions(self, info: strawberry.Info[Context, None]) -> list[TemplateVersion]:
        owner = self._relation(info) is Relation.OWN
        return [TemplateVersion.from_model(v, owner=owner) for v in await self._visible_rows(info)]

    @strawberry.field(
        description="The highest published version you may see (0 before the first publish), "
        "deprecated or not; of another tenant's PUBLIC template, its publicVersion."
    )
    def latest_version(self, info: strawberry.Info[Context, None]) -> int:
        if self._relation(info) is Relation.PUBLIC:
            return self.model.public_version or 0
        return self.model.latest_version

    @strawberry.field(description="Who published it; only the platform's templates are verified.")
    async def publisher(self, info: strawberry.Info[Context, None]) -> TemplatePublisher:
        if self.model.tenant_id is None:
            return TemplatePublisher(
                name=PLATFORM_PUBLISHER.name, verified=PLATFORM_PUBLISHER.verified
            )
        tenant = await info.context.loaders.tenants.load(self.model.tenant_id)
        assert tenant is not None  # a template is deleted with its tenant
        return TemplatePublisher(name=tenant.name, verified=False)

    @strawberry.field(
        description="`publisher/name`: reaches this template from any tenant that can read it "
        "(templateName), where a bare name reaches only your own, shared and platform templates."
    )
    async def qualified_name(self, info: strawberry.Info[Context, None]) -> str:
        return f"{(await self.publisher(info)).name}/{self.model.name}"

    @strawberry.field(
        description="The version offered to you: the latest one not deprecated; for another "
        "tenant's PUBLIC template, its approved public version. Your own and the platform's "
        "templates start on it; another publisher's start on acceptedVersion. Null when there "
        "is none."
    )
    async def current_version(self, info: strawberry.Info[Context, None]) -> int | None:
        version = await self._offered(info)
        return version.version if version is not None else None

    @strawberry.field(
        description="The version others see in the public catalog: the newest one the "
        "platform operator approved; null until then and once the template is no longer PUBLIC."
    )
    def public_version(self) -> int | None:
        return self.model.public_version if self.model.tenant_id is not None else None

    @strawberry.field(
        description="For another publisher's template (shared with you or public): the version "
        "your tenant's admin accepted, which your executions run, pinned; null before any "
        "acceptance and for your own and the platform's templates (they need none)."
    )
    async def accepted_version(self, info: strawberry.Info[Context, None]) -> int | None:
        if not needs_acceptance(info.context.principal().tenant_id, self.model):
            return None
        return await info.context.loaders.accepted_versions.load(self.model.id)

    @strawberry.field(
        description="What the version offered to you (currentVersion) does with the tenant "
        "that runs it; `version(number) { capabilities }` for another version."
    )
    async def capabilities(self, info: strawberry.Info[Context, None]) -> TemplateCapabilities:
        return TemplateCapabilities.from_domain(capabilities_of(await self._spec(info)))

    @strawberry.field(
        description="Every published version you may see, oldest first (of another tenant's "
        "PUBLIC template: the approved ones)."
    )
    async def versions(self, info: strawberry.Info[Context, None]) -> list[TemplateVersion]:
        return await self._versions(info)

    @strawberry.field(description="One version you may see; null if there is no such version.")
    async def version(
        self, info: strawberry.Info[Context, None], number: int
    ) -> TemplateVersion | None:
        return next((v for v in await self._versions(info) if v.version == number), None)

    @strawberry.field(description="What changed from one published version to another.")
    async def diff(
        self,
        info: strawberry.Info[Context, None],
        from_: Annotated[int, strawberry.argument(name="from")],
        to: int,
    ) -> TemplateDiff:
        rows = await self._visible_rows(info)
        return TemplateDiff.from_domain(diff_versions(rows, from_, to))

    @strawberry.field(
        description="The spec being edited (the next version once published); only for the "
        "owner tenant's admins, null for everyone else."
    )
    def draft(self, info: strawberry.Info[Context, None]) -> JSON | None:
        if not can_author(info.context.principal(), self.model):
            return None
        return cast(JSON | None, self.model.draft_spec)

    @strawberry.field(
        description="Who created it: `key:<API key id>` or `sub:<token subject>` (an identity "
        "provider's user); only for the owner tenant, null for everyone else and for the "
        "platform's templates."
    )
    def created_by(self, info: strawberry.Info[Context, None]) -> str | None:
        return self.model.created_by if owns(info.context.principal(), self.model) else None

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

    @strawberry.field(description="Steps of currentVersion, in run order.")
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

    @strawberry.field(description="AI enhancement points of currentVersion.")
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

    @strawberry.field(
        description="AI cost of one completed run at `tier` (default: yours), from recorded "
        "runs; show it before a start. Percentiles are null below 5 runs."
    )
    async def cost_estimate(
        self, info: strawberry.Info[Context, None], tier: Tier | None = None
    ) -> CostEstimate:
        return await cost_estimate(info, self.model.id, tier)
