"""DomainErrors, the one field extension that turns domain errors into what clients are promised:
where the other API tests do not reach (a subscription failing between two events, a closed
subscription's resolver, a mutation refused before it starts), and that it is on every field."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from functools import partial
from typing import Annotated

import strawberry
from graphql import GraphQLObjectType
from strawberry.extensions import MaskErrors
from strawberry.schema.schema_converter import GraphQLCoreConverter

from app.api.errors import ForbiddenError, should_mask
from app.api.extensions import DomainErrors, Schema
from app.api.schema import build_schema
from app.errors import NotFound
from tests.support import GraphQLClient


@strawberry.type
class Query:
    ok: bool = True


def ticking_schema(after_first: Exception | None, finished: list[str]) -> Schema:
    """A subscription that yields 1, then raises after_first (or ticks on), noting when its
    generator is finished."""

    @strawberry.type
    class Subscription:
        @strawberry.subscription
        async def ticks(self) -> AsyncGenerator[int, None]:
            try:
                while True:
                    yield 1
                    if after_first is not None:
                        raise after_first
            finally:
                finished.append("finished")

    return Schema(
        query=Query,
        subscription=Subscription,
        extensions=[partial(MaskErrors, should_mask_error=should_mask)],
    )


async def test_a_domain_error_between_two_events_ends_the_stream_with_its_code() -> None:
    finished: list[str] = []
    schema = ticking_schema(NotFound("the execution is gone"), finished)
    stream = await schema.subscribe("subscription { ticks }")
    results = [result async for result in stream]  # type: ignore[union-attr]
    assert [r.data for r in results] == [{"ticks": 1}, None]
    errors = results[1].errors
    assert errors is not None
    assert [(e.message, e.extensions) for e in errors] == [
        ("the execution is gone", {"code": "NOT_FOUND"})
    ]
    assert finished == ["finished"]


async def test_an_unexpected_error_between_two_events_stays_masked() -> None:
    schema = ticking_schema(RuntimeError("internal detail"), [])
    stream = await schema.subscribe("subscription { ticks }")
    results = [result async for result in stream]  # type: ignore[union-attr]
    errors = results[-1].errors
    assert errors is not None
    assert [e.message for e in errors] == ["Unexpected error."]


async def test_closing_a_subscription_finishes_its_resolver_at_once() -> None:
    # The resolver holds a bus subscription: it must end when the client goes, not at the
    # next garbage collection.
    finished: list[str] = []
    stream = await ticking_schema(None, finished).subscribe("subscription { ticks }")
    first = await stream.__anext__()  # type: ignore[union-attr]
    assert first.data == {"ticks": 1}
    await stream.aclose()  # type: ignore[union-attr]
    assert finished == ["finished"]


def test_every_field_with_a_resolver_carries_the_extension_once() -> None:
    build_schema()  # a second build must not stack a second extension
    schema = build_schema()._schema
    counts: dict[str, int] = {}
    for graphql_type in schema.type_map.values():
        if not isinstance(graphql_type, GraphQLObjectType) or graphql_type.name.startswith("__"):
            continue
        for name, field in graphql_type.fields.items():
            definition = field.extensions.get(GraphQLCoreConverter.DEFINITION_BACKREF)
            if definition is not None and definition.base_resolver is not None:
                found = [e for e in definition.extensions if isinstance(e, DomainErrors)]
                counts[f"{graphql_type.name}.{name}"] = len(found)
    assert {"Query.viewer", "Mutation.startExecution", "Subscription.executionUpdates"} <= set(
        counts
    )
    assert {field for field, n in counts.items() if n != 1} == set()


async def test_a_mutation_without_a_key_is_refused_with_a_coded_error(server: str) -> None:
    body = await GraphQLClient(server, None).raw(
        "mutation { setBudget(limitUsd: null) { __typename ... on UserError { code } } }"
    )
    assert body["data"] is None
    assert [e["extensions"]["code"] for e in body["errors"]] == ["UNAUTHENTICATED"]


@strawberry.type
class Done:
    ok: bool = True


@strawberry.type
class Mutation:
    @strawberry.mutation
    def act(self) -> Annotated[Done | ForbiddenError, strawberry.union("ActResult")]:
        raise NotFound("no such thing")


async def test_a_code_the_mutation_union_has_no_member_for_is_a_coded_error() -> None:
    """Before, Strawberry matched the NotFoundError instance to the first member of the same
    shape: `__typename: "ForbiddenError"` with code NOT_FOUND."""
    schema = Schema(query=Query, mutation=Mutation)
    result = await schema.execute("mutation { act { __typename ... on UserError { code } } }")
    assert result.data is None
    assert result.errors is not None
    assert result.errors[0].extensions == {"code": "NOT_FOUND"}
    assert result.errors[0].message == "no such thing"
