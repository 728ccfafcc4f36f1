"""Template mutations: create, edit the draft, publish, deprecate a version, visibility, sharing,
and accepting another publisher's template.

Each returns the template or a UserError (ValidationError, NotFoundError, ForbiddenError,
ConflictError). The rules are in TemplateAuthoring and TemplateAcceptances; these resolvers
own the transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated

import strawberry
from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.scalars import JSON

from app.api.context import Context
from app.api.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    ValidationError,
)
from app.api.relay import from_global_id
from app.api.templates.types import Template, TemplateVisibility
from app.models import Template as TemplateModel
from app.templates.lifecycle import TemplateAuthoring
from app.templates.review import TemplateAcceptances
from app.tenants.service import Principal

TemplateResult = Annotated[
    Template | ValidationError | NotFoundError | ForbiddenError | ConflictError,
    strawberry.union("TemplateResult"),
]
Change = Callable[[TemplateAuthoring, Principal], Awaitable[TemplateModel]]


@strawberry.input
class CreateTemplateInput:
    spec: JSON = strawberry.field(description="The draft: a template spec (validated).")
    visibility: TemplateVisibility = TemplateVisibility.PRIVATE


@strawberry.input
class UpdateTemplateDraftInput:
    template_id: strawberry.ID
    spec: JSON = strawberry.field(description="Replaces the draft; the name cannot change.")


@strawberry.input
class PublishTemplateInput:
    template_id: strawberry.ID


@strawberry.input
class DeprecateTemplateVersionInput:
    template_id: strawberry.ID
    version: int


@strawberry.input
class SetTemplateVisibilityInput:
    template_id: strawberry.ID
    visibility: TemplateVisibility = strawberry.field(
        description="PRIVATE also revokes every share. PUBLIC asks the platform to review the "
        "latest version; others see the template once a version is approved."
    )


@strawberry.input
class AcceptTemplateInput:
    template_id: strawberry.ID
    version: int = strawberry.field(
        description="The version offered to you (the template's currentVersion)."
    )


@strawberry.input
class ShareTemplateInput:
    template_id: strawberry.ID
    tenant_names: list[str]
    revoke: bool = strawberry.field(
        default=False, description="Revoke these tenants' access instead of granting it."
    )


def _pk(global_id: str) -> uuid.UUID:
    return from_global_id(global_id, "Template")[1]


async def _change(info: strawberry.Info[Context, None], change: Change) -> TemplateResult:
    return await _commit(
        info, lambda s, p: change(TemplateAuthoring(s, info.context.deps.settings), p)
    )


async def _commit(
    info: strawberry.Info[Context, None],
    change: Callable[[AsyncSession, Principal], Awaitable[TemplateModel]],
) -> TemplateResult:
    ctx = info.context
    principal = ctx.principal()
    async with ctx.session() as s:
        template = await change(s, principal)
        await s.commit()
    return Template.from_model(template)


@strawberry.type
class TemplateMutation:
    @strawberry.mutation(description="Create a template with a draft (no version yet); admins.")
    async def create_template(
        self, info: strawberry.Info[Context, None], input: CreateTemplateInput
    ) -> TemplateResult:
        return await _change(info, lambda a, p: a.create(p, input.spec, input.visibility.value))

    @strawberry.mutation(description="Replace the draft spec of a template the caller owns.")
    async def update_template_draft(
        self, info: strawberry.Info[Context, None], input: UpdateTemplateDraftInput
    ) -> TemplateResult:
        return await _change(
            info, lambda a, p: a.update_draft(p, _pk(input.template_id), input.spec)
        )

    @strawberry.mutation(
        description="Publish the draft as the next version (immutable); the draft stays as "
        "the starting point of the next edit."
    )
    async def publish_template(
        self, info: strawberry.Info[Context, None], input: PublishTemplateInput
    ) -> TemplateResult:
        return await _change(info, lambda a, p: a.publish(p, _pk(input.template_id)))

    @strawberry.mutation(
        description="No new executions start on this version; running ones finish on it."
    )
    async def deprecate_template_version(
        self, info: strawberry.Info[Context, None], input: DeprecateTemplateVersionInput
    ) -> TemplateResult:
        return await _change(
            info, lambda a, p: a.deprecate(p, _pk(input.template_id), input.version)
        )

    @strawberry.mutation(
        description="PRIVATE, SHARED (with the tenants it is shared with) or PUBLIC."
    )
    async def set_template_visibility(
        self, info: strawberry.Info[Context, None], input: SetTemplateVisibilityInput
    ) -> TemplateResult:
        return await _change(
            info,
            lambda a, p: a.set_visibility(p, _pk(input.template_id), input.visibility.value),
        )

    @strawberry.mutation(
        description="Let tenants (by name) read and run a template, or revoke that; sharing a "
        "PRIVATE template makes it SHARED."
    )
    async def share_template(
        self, info: strawberry.Info[Context, None], input: ShareTemplateInput
    ) -> TemplateResult:
        return await _change(
            info,
            lambda a, p: a.share(
                p, _pk(input.template_id), input.tenant_names, revoke=input.revoke
            ),
        )

    @strawberry.mutation(
        description="Consent to run another publisher's template (shared with you or public) at "
        "the version offered to you; admins. Your executions then run that version, pinned, "
        "until an admin accepts a newer one. Read its capabilities first."
    )
    async def accept_template(
        self, info: strawberry.Info[Context, None], input: AcceptTemplateInput
    ) -> TemplateResult:
        return await _commit(
            info,
            lambda s, p: TemplateAcceptances(s).accept(p, _pk(input.template_id), input.version),
        )
