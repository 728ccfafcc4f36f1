"""Which webhook URLs may be registered and reached: the `http.request` rules
(app/steps/http_policy.py), adapted to endpoints a tenant names once and the worker calls often.

- https to any host, with the port in HTTP_ALLOWED_PORTS; plain http only to a host that
  HTTP_ALLOWED_HOSTS names (then that entry's port rule applies, e.g. `127.0.0.1:*`).
- No user:password in the URL (it would be sent and shown); at most MAX_URL_CHARS.
- Every address the host resolves to must be public, or inside HTTP_ALLOWED_NETWORKS; an IP
  literal that HTTP_ALLOWED_HOSTS lists exactly is the operator's call. Cloud metadata
  addresses are never opened by HTTP_ALLOWED_NETWORKS.
Checked when a webhook is created or its URL changes, and again before every delivery
attempt (DNS may say something else by then): the attempt connects only to the addresses
checked then (DNS pinning, as http.request does).
"""

from __future__ import annotations

import httpx

from app.errors import ValidationFailed
from app.settings import Settings
from app.steps.base import StepInputError, StepTransientError
from app.steps.http_policy import host_allowed, parse_url, port_allowed, resolve_checked, url_port

MAX_URL_CHARS = 2048


class DestinationRefused(ValidationFailed):
    """The URL, or an address its host resolves to now, may not be reached."""


class DestinationUnresolved(Exception):
    """The host could not be resolved for now (a DNS failure, not an answer): try later."""


def check_url(raw: str, settings: Settings) -> httpx.URL:
    """`raw` as a URL whose scheme, host and port a webhook may use (addresses come later)."""
    if len(raw) > MAX_URL_CHARS:
        raise DestinationRefused(f"the url may be at most {MAX_URL_CHARS} characters")
    try:
        url = parse_url(raw)
    except StepInputError as exc:
        raise DestinationRefused(str(exc)) from exc
    if url.userinfo:
        raise DestinationRefused("the url may not carry a user name or password")
    listed = host_allowed(url.host, settings.http_allowed_hosts)
    if url.scheme == "http" and not listed:
        raise DestinationRefused(
            "the url must use https (plain http only to hosts the operator lists in "
            "HTTP_ALLOWED_HOSTS)"
        )
    port = url_port(url)
    if listed:
        allowed = port_allowed(url.host, port, settings)
    else:
        allowed = port in settings.http_allowed_ports
    if not allowed:
        raise DestinationRefused(
            f"port {port} is not allowed; the operator lists ports in HTTP_ALLOWED_PORTS, or "
            "as host:port in HTTP_ALLOWED_HOSTS"
        )
    return url


async def resolve_destination(url: httpx.URL, settings: Settings) -> tuple[str, ...]:
    """The addresses `url`'s host resolves to now, every one allowed: the only ones a delivery
    may connect to (http.request's check). Raises DestinationRefused, or DestinationUnresolved
    on a DNS failure."""
    try:
        return await resolve_checked(url, settings)
    except StepInputError as exc:
        raise DestinationRefused(str(exc)) from exc
    except StepTransientError as exc:
        raise DestinationUnresolved(str(exc)) from exc
