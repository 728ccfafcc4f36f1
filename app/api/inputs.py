"""What the API accepts as input text and times, for every operation (HTTP and socket).

- No NUL character (U+0000), lone surrogate (U+D800-U+DFFF), NaN or Infinity enters a
  resolver, in a variable or a literal of the document: PostgreSQL's text and jsonb cannot
  store them (asyncpg raised deep inside a resolver, and the caller saw a masked "Unexpected
  error."). Such an operation is refused with one VALIDATION_FAILED error before it runs.
- `DateTime` is UTC: a time given without an offset is read as UTC (comparing a naive time
  with the stored aware ones raised a TypeError, again a masked error).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import strawberry
from graphql import BREAK, GraphQLError, StringValueNode, Visitor, visit
from strawberry.extensions import SchemaExtension
from strawberry.schema.types.base_scalars import wrap_parser

from app.jsonschemas import shape_problem, text_problem

# Variables are checked for NUL and NaN at any depth (the walk is iterative); the limits on
# nesting are each field's own (MAX_JSON_DEPTH for params and specs), with their messages.
_VARIABLES_DEPTH = 1_000_000


class _TextFinder(Visitor):
    """The first string literal PostgreSQL could not store, and why."""

    reason: str | None = None

    def enter_string_value(self, node: StringValueNode, *_: object) -> object:
        self.reason = text_problem(node.value)
        return BREAK if self.reason else None


class RefuseUnstorableInput(SchemaExtension):
    """Refuses an operation whose variables or string literals hold NUL, NaN or Infinity."""

    def on_validate(self) -> Iterator[None]:
        execution = self.execution_context
        if not execution.pre_execution_errors:
            reason = shape_problem(execution.variables or {}, _VARIABLES_DEPTH)
            document = execution.graphql_document
            if reason is None and document is not None:
                finder = _TextFinder()
                visit(document, finder)
                reason = finder.reason
            if reason is not None:
                execution.pre_execution_errors = [
                    GraphQLError(
                        f"the operation's input {reason}",
                        extensions={"code": "VALIDATION_FAILED"},
                    )
                ]
        yield


def _parse_utc(value: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


UtcDateTime = strawberry.scalar(
    dt.datetime,
    name="DateTime",
    description="Date with time (isoformat)",
    serialize=dt.datetime.isoformat,
    parse_value=wrap_parser(_parse_utc, "DateTime"),
)
