"""Domain errors leave every resolver through one field extension, put on every field once.

`DomainErrors` turns a DomainError raised by a resolver into what the client is promised
(app/api/errors.py): on a field whose type is a result union with UserError members (the
mutations), the member for its code; anywhere else (queries, nested fields, subscriptions, also
mid-stream), the coded GraphQL error. Other exceptions pass untouched, for MaskErrors to hide.

`Schema` attaches it through `get_fields`, Strawberry's hook for the fields a type publishes,
so no resolver carries its own try/except and a new field cannot forget it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from copy import copy
from typing import Any

import strawberry
from strawberry.extensions import FieldExtension
from strawberry.extensions.field_extension import (
    AsyncExtensionResolver,
    SyncExtensionResolver,
)
from strawberry.types.base import StrawberryObjectDefinition
from strawberry.types.field import StrawberryField
from strawberry.types.union import StrawberryUnion

from app.api.errors import UserError, to_graphql_error, user_error
from app.api.observe import count_user_error
from app.errors import DomainError
from app.log_context import security_event

# Refusals worth a security log line (app/log_context.py): a role or tenant boundary, a quota.
REFUSALS = {"FORBIDDEN": "forbidden", "QUOTA_EXCEEDED": "quota_exceeded"}


class DomainErrors(FieldExtension):
    """DomainError -> union member or coded GraphQL error, for one field.

    One instance per field: `apply` records, once at schema build, what the field returns.
    """

    members: frozenset[type] = frozenset()  # the UserError types the field's union holds
    streams = False

    def apply(self, field: StrawberryField) -> None:
        self.streams = field.is_subscription
        kind = field.type
        if isinstance(kind, StrawberryUnion):
            self.members = frozenset(
                t for t in kind.types if isinstance(t, type) and issubclass(t, UserError)
            )

    def resolve(
        self, next_: SyncExtensionResolver, source: Any, info: strawberry.Info, **kwargs: Any
    ) -> Any:
        try:
            return next_(source, info, **kwargs)
        except DomainError as exc:
            return self.answer(exc, info)

    async def resolve_async(
        self, next_: AsyncExtensionResolver, source: Any, info: strawberry.Info, **kwargs: Any
    ) -> Any:
        if self.streams:  # the resolver is an async generator: its body runs when iterated
            return coded_stream(next_(source, info, **kwargs))  # type: ignore[arg-type]
        try:
            return await next_(source, info, **kwargs)
        except DomainError as exc:
            return self.answer(exc, info)

    def answer(self, exc: DomainError, info: strawberry.Info) -> UserError:
        """The union member for the error's code; a code the union has no member for is a
        coded GraphQL error (Strawberry would otherwise answer with the first member of the
        same shape: a NOT_FOUND typed ForbiddenError)."""
        if exc.code in REFUSALS:
            principal = getattr(info.context, "principal_", None)
            tenant_id = str(principal.tenant_id) if principal is not None else None
            security_event(REFUSALS[exc.code], exc.message, tenant_id=tenant_id)
        member = user_error(exc) if self.members else None
        if member is None or type(member) not in self.members:
            raise to_graphql_error(exc) from exc
        count_user_error(info, exc.code)  # a coded GraphQL error is counted with the result
        return member


async def coded_stream(events: AsyncGenerator[Any, None]) -> AsyncIterator[Any]:
    """The subscription's events; a DomainError, before the first or between two, ends the
    stream with the coded error. Closing this closes the resolver's generator at once (its
    bus subscription with it), not when the garbage collector gets to it."""
    async with aclosing(events):
        try:
            async for event in events:
                yield event
        except DomainError as exc:
            raise to_graphql_error(exc) from exc


def with_domain_errors(field: StrawberryField) -> StrawberryField:
    """A copy of field with its own DomainErrors outermost (the declared field stays as it is,
    so building a second schema does not stack a second extension)."""
    handled = copy(field)
    handled.extensions.append(DomainErrors())
    return handled


class Schema(strawberry.Schema):
    """strawberry.Schema with DomainErrors on every field that has a resolver (a plain
    attribute cannot raise one; leaving those alone keeps Strawberry's fast path for them)."""

    def get_fields(self, type_definition: StrawberryObjectDefinition) -> list[StrawberryField]:
        return [
            with_domain_errors(field) if field.base_resolver is not None else field
            for field in super().get_fields(type_definition)
        ]
