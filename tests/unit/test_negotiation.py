"""Accept negotiation and request-error statuses of GraphQL over HTTP (app/api/negotiation.py);
tests/api/test_http_spec.py proves them over the real API, these cover the corners."""

from __future__ import annotations

from typing import Any

import pytest

from app.api.negotiation import (
    APPLICATION_JSON,
    GRAPHQL_RESPONSE_JSON,
    negotiate,
    request_error_status,
)


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        (None, APPLICATION_JSON),
        ("  ", APPLICATION_JSON),
        ("*/*", APPLICATION_JSON),
        ("application/*", APPLICATION_JSON),
        ("Application/GraphQL-Response+JSON", GRAPHQL_RESPONSE_JSON),  # case-insensitive
        (f"{APPLICATION_JSON}, {GRAPHQL_RESPONSE_JSON}", GRAPHQL_RESPONSE_JSON),  # both named
        (f"{GRAPHQL_RESPONSE_JSON};q=0.5, {APPLICATION_JSON}", APPLICATION_JSON),  # q first
        (f"{APPLICATION_JSON};q=0, */*", GRAPHQL_RESPONSE_JSON),  # json refused by name
        (f"*/*, {APPLICATION_JSON};q=0.1", GRAPHQL_RESPONSE_JSON),  # the named q counts
        (f"{APPLICATION_JSON}; charset=utf-8", APPLICATION_JSON),  # other parameters ignored
        ("text/html", None),
        (f"{APPLICATION_JSON};q=abc", None),  # a malformed q accepts nothing
        (f"{APPLICATION_JSON};q=2", None),  # out of range, likewise
        ("text/plain, " * 60 + APPLICATION_JSON, None),  # past the first 50 ranges: unread
    ],
)
def test_negotiate(accept: str | None, chosen: str | None) -> None:
    assert negotiate(accept) == chosen


def error(code: str | None = None, path: list[Any] | None = None) -> dict[str, Any]:
    e: dict[str, Any] = {"message": "m"}
    if code:
        e["extensions"] = {"code": code}
    if path is not None:
        e["path"] = path
    return e


@pytest.mark.parametrize(
    ("response", "status"),
    [
        ({"data": None, "errors": [error()]}, 400),  # parse, validation, variables
        ({"data": None, "errors": [error("RATE_LIMITED")]}, 429),
        ({"data": None, "errors": [error("UNAVAILABLE")]}, 503),
        ({"data": None, "errors": [error("NOT_FOUND", ["execution"])]}, None),  # ran
        ({"data": {"node": None}, "errors": [error(path=["node"])]}, None),
        ({"data": {"viewer": {"role": "ADMIN"}}}, None),
    ],
)
def test_request_error_status(response: dict[str, Any], status: int | None) -> None:
    assert request_error_status(response) == status
