"""Which browser origins may call the API from their pages: CORS for HTTP, and the same list
for the WebSocket Origin check.

CORS_ALLOWED_ORIGINS holds exact origins (`https://app.example.com`, scheme + host + optional
port, no path). `*` and anything that is not an origin stop the API at startup with a message
naming the entry: the list is an allow list, and a wildcard would let every site's pages read
the API with whatever key their user pasted. Credentials (CORS_ALLOW_CREDENTIALS) are off by
default because the API authenticates with the Authorization header, which a page sets itself
and which needs no credentials mode; they would matter only for cookies, and the CORS rule is
that credentials never combine with a wildcard origin (exact origins here, so they never do).
"""

from __future__ import annotations

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from strawberry.http.websocket_origin import normalize_allowed_origins

from app.settings import Settings

METHODS = ("GET", "POST", "OPTIONS")
# What GraphQL clients send besides the simple headers: Apollo Client's CSRF-prevention and
# client-awareness headers, and the batch/persisted-query headers of urql and graphql-request.
HEADERS = (
    "Authorization",
    "Content-Type",
    "Accept",
    "Apollo-Require-Preflight",
    "X-Apollo-Operation-Name",
    "Apollographql-Client-Name",
    "Apollographql-Client-Version",
    "GraphQL-Client-Name",
    "GraphQL-Client-Version",
    # Observability (docs/observability.md): a page's own request id, and its trace context.
    "X-Request-ID",
    "traceparent",
    "tracestate",
)
# Rate-limited callers read when to come back; a page reports the request id of a failure.
EXPOSED = ("Retry-After", "X-Request-ID")


def cors_origins(settings: Settings) -> list[str]:
    """CORS_ALLOWED_ORIGINS normalised as browsers send them; ValueError names a bad entry."""
    if "*" in settings.cors_allowed_origins:
        raise ValueError(
            "CORS_ALLOWED_ORIGINS: '*' is not allowed; list the exact origins of the pages that "
            'call the API, e.g. ["https://app.example.com"]'
        )
    try:
        origins = normalize_allowed_origins(settings.cors_allowed_origins)
    except ValueError as exc:
        raise ValueError(f"CORS_ALLOWED_ORIGINS: {exc}") from None
    return sorted(origins)


def socket_origins(settings: Settings) -> list[str]:
    """Origins whose pages may open the GraphQL WebSocket (besides the API's own origin):
    CORS_ALLOWED_ORIGINS plus the deprecated WS_ALLOWED_ORIGINS."""
    return sorted({*cors_origins(settings), *settings.ws_allowed_origins})


def cors_middleware(settings: Settings) -> Middleware:
    return Middleware(
        CORSMiddleware,
        allow_origins=cors_origins(settings),
        allow_methods=METHODS,
        allow_headers=HEADERS,
        allow_credentials=settings.cors_allow_credentials,
        expose_headers=EXPOSED,
        max_age=settings.cors_max_age,
    )
