"""GraphQL-over-HTTP response media types: which one a request gets, and its status codes.

The spec (https://graphql.github.io/graphql-over-http/draft/) defines
`application/graphql-response+json`, whose status code tells a request error (the operation was
never executed: unparsable or invalid document, variables that do not coerce) from a result, and
keeps `application/json` for legacy clients, which get 200 for every GraphQL response.

Choice, from the Accept header (RFC 9110 content negotiation):
- no Accept header, or an empty one: `application/json` (what clients written before the spec
  expect; the spec leaves the choice to the server);
- otherwise the acceptable type with the highest q; at equal q the one named more specifically
  (`application/json` beats `application/*` beats `*/*`); both named: `graphql-response+json`;
  both matched by the same wildcard (`*/*`, `application/*`): `application/json`, since a
  client that names neither may predate the spec;
- neither acceptable (`Accept: text/html` on a query): None, answered with 406.

Status codes with `application/graphql-response+json` (the legacy type keeps 200):
- a request error: no `data` entry, 400 (429 when the rate limit refused the operation, 503 when
  the key could not be checked);
- the operation ran (also when a field failed, even when its error nulled `data`): 200.
The draft's newer 422 for validation errors and 294 for partial results are not used: the
graphql-http audit (tests/audit) and today's clients follow the 400/200 rules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
APPLICATION_JSON = "application/json"
SUPPORTED = (GRAPHQL_RESPONSE_JSON, APPLICATION_JSON)
MAX_ACCEPT_RANGES = 50  # a longer Accept header is judged by its first 50 media ranges

# Request errors whose code says more than "bad request".
_CODE_STATUS = {"RATE_LIMITED": 429, "UNAVAILABLE": 503}


def negotiate(accept: str | None) -> str | None:
    """The media type to answer in, or None when the Accept header allows neither."""
    if accept is None or not accept.strip():
        return APPLICATION_JSON
    ranges = [_media_range(part) for part in accept.split(",")[:MAX_ACCEPT_RANGES]]
    best: tuple[float, int, bool] | None = None
    chosen = None
    for media_type in SUPPORTED:
        match = _best_match(media_type, ranges)
        if match is None or match[0] <= 0:
            continue
        quality, specificity = match
        named = specificity == 2
        key = (quality, specificity, (media_type == GRAPHQL_RESPONSE_JSON) == named)
        if best is None or key > best:
            best, chosen = key, media_type
    return chosen


def _media_range(part: str) -> tuple[str, float]:
    """(type/subtype lower-cased, q); a malformed q makes the range unacceptable."""
    media_type, *params = (p.strip() for p in part.split(";"))
    quality = 1.0
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                quality = float(value.strip())
            except ValueError:
                quality = 0.0
    return media_type.lower(), quality if 0.0 <= quality <= 1.0 else 0.0


def _best_match(media_type: str, ranges: Sequence[tuple[str, float]]) -> tuple[float, int] | None:
    """(q, specificity) of the most specific range matching media_type: 2 for the type
    itself, 1 for `application/*`, 0 for `*/*`."""
    main = media_type.split("/")[0]
    best: tuple[float, int] | None = None
    for pattern, quality in ranges:
        if pattern == media_type:
            specificity = 2
        elif pattern == f"{main}/*":
            specificity = 1
        elif pattern == "*/*":
            specificity = 0
        else:
            continue
        if best is None or specificity > best[1]:
            best = (quality, specificity)
    return best


def request_error_status(response: Mapping[str, Any]) -> int | None:
    """The status of a GraphQL response (as sent) that reports a request error, or None when
    the operation ran.

    A request error leaves `data` null and no error with a `path`: graphql-core gives every
    field error the path of its field, even one whose null reached `data` itself."""
    errors = response.get("errors") or []
    if response.get("data") is not None or not errors or any("path" in e for e in errors):
        return None
    for error in errors:
        status = _CODE_STATUS.get((error.get("extensions") or {}).get("code", ""))
        if status is not None:
            return status
    return 400
