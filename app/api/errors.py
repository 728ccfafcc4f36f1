"""How domain errors reach clients: the UserError types and the two conversions.

Mutations return them as members of a result union (`UserError` implementations). Queries and
subscriptions raise them as GraphQL errors whose `extensions.code` is the stable code. Which of
the two a resolver's error becomes is decided once per field (app/api/extensions.py).
Anything unexpected is masked by MaskErrors; limiter and validation errors are not.
Every coded message leaves through `public_message`: an UNAVAILABLE error says what could not be
done, never why (the why is another system's text: hosts, ports, RPC details); that is logged.
"""

from __future__ import annotations

import strawberry
import structlog
from graphql import GraphQLError

from app.errors import DomainError

log = structlog.get_logger(__name__)


@strawberry.type
class Problem:
    path: str
    message: str


@strawberry.interface(description="An expected failure the client can act on.")
class UserError:
    code: str
    message: str


@strawberry.type
class ValidationError(UserError):
    problems: list[Problem]


@strawberry.type
class NotFoundError(UserError):
    pass


@strawberry.type
class ForbiddenError(UserError):
    pass


@strawberry.type
class ConflictError(UserError):
    pass


@strawberry.type
class QuotaExceededError(UserError):
    pass


@strawberry.type
class UnavailableError(UserError):
    pass


_TYPES: dict[str, type[UserError]] = {
    "NOT_FOUND": NotFoundError,
    "FORBIDDEN": ForbiddenError,
    "CONFLICT": ConflictError,
    "QUOTA_EXCEEDED": QuotaExceededError,
    "UNAVAILABLE": UnavailableError,
}


def public_message(exc: DomainError) -> str:
    """The part of exc's message a tenant may read.

    Services word UNAVAILABLE as "<what failed>: <the other system's error>" (Temporal's RPC
    message names internal hosts and ports); only <what failed> leaves the service. So an
    UNAVAILABLE message of our own never uses ": " (a hint after it would be cut off).
    """
    if exc.code != "UNAVAILABLE":
        return exc.message
    what, _, why = exc.message.partition(": ")
    if why:
        log.warning("api.unavailable", message=exc.message)
    return what


def user_error(exc: DomainError) -> UserError | None:
    """exc as a result-union member; None for a code no UserError type stands for
    (UNAUTHENTICATED, RATE_LIMITED), which is raised as a coded error instead."""
    if exc.code == "VALIDATION_FAILED":
        problems = [Problem(path=p.get("path", "$"), message=p["message"]) for p in exc.details]
        return ValidationError(code=exc.code, message=exc.message, problems=problems)
    cls = _TYPES.get(exc.code)
    if cls is None:
        return None
    return cls(code=exc.code, message=public_message(exc))


def to_graphql_error(exc: DomainError) -> GraphQLError:
    extensions: dict[str, object] = {"code": exc.code}
    if exc.details:
        extensions["problems"] = exc.details
    return GraphQLError(public_message(exc), extensions=extensions)


def should_mask(error: GraphQLError) -> bool:
    """Mask only unexpected resolver exceptions; keep coded, validation and limiter errors."""
    original = error.original_error
    return original is not None and not isinstance(original, GraphQLError)
