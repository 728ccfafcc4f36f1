"""`http.request`: one HTTP call to an allow-listed host, with retry-safe error mapping.

Input: `{method, url, headers?, params?, json? | body?, timeout_seconds?, expect_status?,
follow_redirects?: true}`. Output: `{status, url, headers, json, text, truncated}`: `json` is the
parsed body when the response says it is JSON, else `text` holds it; bodies are cut at 1 MiB.

What a tenant's request may reach (host, port, every resolved address) is checked by
app/steps/http_policy.py before any connection and again on every redirect hop (at most 5).
DNS is pinned: the request connects only to the addresses that were checked (the URL is
rewritten to the IP; the Host header, TLS SNI and certificate check keep the name), so a name
cannot resolve to something else between the check and the connection (DNS rebinding).
A redirect to another host drops the Authorization and Cookie headers. Proxy variables from
the environment are ignored, so nothing routes the call elsewhere. Refusals never say which
address a name resolved to.

Errors: connection failures, timeouts, 5xx, 408, 425 and 429 are transient (retried); other
4xx are permanent. Statuses in `expect_status` are success, and with `expect_status` set any
other status is an error. POST and PATCH get an `Idempotency-Key` header (a hash of execution,
step and request) unless the template sets one, so an API that honours it sees a retry once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import httpx
import structlog

from app.settings import Settings
from app.steps.base import (
    StepActivity,
    StepContext,
    StepInputError,
    StepTransientError,
    canonical_json,
    define,
)
from app.steps.http_policy import checked_url, host_allowed, is_ip_literal, resolve_checked

__all__ = ["ACTIVITIES", "ACTIVITY", "MAX_RESPONSE_BYTES", "host_allowed", "pinned_request"]

log = structlog.get_logger(__name__)

MAX_RESPONSE_BYTES = 1024 * 1024
MAX_REDIRECTS = 5
MAX_TIMEOUT_SECONDS = 600.0
RETRYABLE_STATUSES = frozenset({408, 425, 429})
KEPT_HEADERS = (
    "content-type",
    "content-length",
    "etag",
    "last-modified",
    "location",
    "retry-after",
    "x-request-id",
)
_CREDENTIAL_HEADERS = ("authorization", "cookie", "proxy-authorization")


def _idempotency_key(input: dict[str, Any], ctx: StepContext) -> str:
    request = {k: input.get(k) for k in ("method", "url", "params", "json", "body")}
    identity = canonical_json([ctx.tenant_id, ctx.execution_id, ctx.step_id, request])
    return hashlib.sha256(identity.encode()).hexdigest()


async def _read_capped(response: httpx.Response) -> tuple[bytes, bool]:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > MAX_RESPONSE_BYTES:
            return bytes(body[:MAX_RESPONSE_BYTES]), True
    return bytes(body), False


def _output(response: httpx.Response, url: str, body: bytes, truncated: bool) -> dict[str, Any]:
    parsed: Any = None
    text: str | None = body.decode(response.encoding or "utf-8", errors="replace")
    if "json" in response.headers.get("content-type", "") and not truncated and body:
        try:
            parsed, text = json.loads(body), None
        except ValueError:
            pass  # says JSON but is not: hand over the text
    return {
        "status": response.status_code,
        "url": url,  # as named, not the IP it was pinned to
        "headers": {k: response.headers[k] for k in KEPT_HEADERS if k in response.headers},
        "json": parsed,
        "text": text,
        "truncated": truncated,
    }


def _check_status(status: int, expected: list[int] | None, out: dict[str, Any]) -> None:
    if expected is not None and status in expected:
        return
    if expected is None and status < 400:
        return
    snippet = (out["text"] if out["text"] is not None else canonical_json(out["json"]))[:200]
    message = f"HTTP {status} from {out['url']}: {snippet}"
    if status >= 500 or status in RETRYABLE_STATUSES:
        raise StepTransientError(message)
    if expected is not None:
        message = f"unexpected {message} (expected {expected})"
    raise StepInputError(message)


@dataclass(frozen=True)
class _Hop:
    """One request of the redirect chain."""

    method: str
    url: httpx.URL  # as the tenant (or a redirect) named it, query parameters included
    headers: httpx.Headers
    body: dict[str, Any]  # httpx.build_request keywords: json= or content=, or nothing


def _first_hop(input: dict[str, Any], ctx: StepContext) -> _Hop:
    try:
        headers = httpx.Headers(input.get("headers", {}))
    except UnicodeError as exc:
        raise StepInputError(f"`headers` must be ASCII: {exc}") from exc
    headers.setdefault("user-agent", "workflow-service")
    if input["method"] in ("POST", "PATCH") and "idempotency-key" not in headers:
        headers["idempotency-key"] = _idempotency_key(input, ctx)
    body: dict[str, Any] = {"json": input["json"]} if "json" in input else {}
    if "body" in input:
        body = {"content": input["body"].encode()}
    url = checked_url(input["url"], ctx.settings)
    if input.get("params"):
        url = url.copy_merge_params(input["params"])
    return _Hop(input["method"], url, headers, body)


def _next_hop(response: httpx.Response, hop: _Hop, settings: Settings) -> _Hop:
    """Where a redirect leads (checked against the allow list), as browsers follow it."""
    target = checked_url(hop.url.join(response.headers["location"]), settings)
    method, body = hop.method, hop.body
    if response.status_code == 303 or (response.status_code in (301, 302) and method == "POST"):
        method, body = ("HEAD" if method == "HEAD" else "GET"), {}
    headers = hop.headers
    if (target.scheme, target.host, target.port) != (hop.url.scheme, hop.url.host, hop.url.port):
        headers = httpx.Headers(
            [(k, v) for k, v in headers.multi_items() if k.lower() not in _CREDENTIAL_HEADERS]
        )
    return _Hop(method, target, headers, body)


def pinned_request(
    client: httpx.AsyncClient,
    method: str,
    url: httpx.URL,
    address: str,
    headers: httpx.Headers | None = None,
    **body: Any,
) -> httpx.Request:
    """A request for `url` that connects to `address` (a checked IP) and nowhere else: the URL
    names the IP, while the Host header, TLS SNI and certificate check keep `url`'s host."""
    headers = httpx.Headers(headers)
    headers["host"] = url.netloc.decode("ascii")
    extensions = {}
    if url.scheme == "https" and not is_ip_literal(url.host):
        extensions["sni_hostname"] = url.raw_host.decode("ascii")
    return client.build_request(
        method, url.copy_with(host=address), headers=headers, extensions=extensions, **body
    )


async def _send(client: httpx.AsyncClient, hop: _Hop, addresses: tuple[str, ...]) -> httpx.Response:
    """Send `hop` to the first of its checked `addresses` that accepts the connection."""
    where = f"{hop.method} {hop.url}"
    for tried, address in enumerate(addresses, start=1):
        try:
            req = pinned_request(client, hop.method, hop.url, address, hop.headers, **hop.body)
            return await client.send(req, stream=True)
        except (httpx.LocalProtocolError, httpx.UnsupportedProtocol, UnicodeError) as exc:
            raise StepInputError(f"cannot send {where}: {exc}") from exc
        except httpx.TimeoutException as exc:
            raise StepTransientError(f"{where} timed out") from exc
        except httpx.TransportError as exc:
            log.info("step.http_transport_error", url=str(hop.url), error=repr(exc))
            if isinstance(exc, httpx.ConnectError) and tried < len(addresses):
                continue  # another checked address of the same host may answer
            raise StepTransientError(f"{where} failed ({type(exc).__name__})") from exc
    raise AssertionError("unreachable: resolve_checked returns at least one address")


async def request(input: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Send the request, following allowed redirects; see the module docstring.

    `timeout_seconds` (default HTTP_TIMEOUT_SECONDS) bounds the whole call, redirects and
    reading the body included.
    """
    settings = ctx.settings
    hop = _first_hop(input, ctx)
    timeout = input.get("timeout_seconds", settings.http_timeout_seconds)
    follow = input.get("follow_redirects", True)
    try:
        async with asyncio.timeout(timeout):
            for redirects in range(MAX_REDIRECTS + 1):
                addresses = await resolve_checked(hop.url, settings)
                # A client per hop: a pooled connection (keyed by IP) never carries another
                # host's request under the first host's TLS name.
                async with httpx.AsyncClient(
                    follow_redirects=False, timeout=timeout, trust_env=False
                ) as client:
                    response = await _send(client, hop, addresses)
                    try:
                        if follow and response.is_redirect and redirects < MAX_REDIRECTS:
                            hop = _next_hop(response, hop, settings)
                            continue
                        raw, truncated = await _read_capped(response)
                    except httpx.TransportError as exc:
                        raise StepTransientError(f"{hop.method} {hop.url}: reading failed") from exc
                    finally:
                        await response.aclose()
                if follow and response.is_redirect:
                    raise StepInputError(f"more than {MAX_REDIRECTS} redirects from {input['url']}")
                out = _output(response, str(hop.url), raw, truncated)
                _check_status(response.status_code, input.get("expect_status"), out)
                return out
    except TimeoutError as exc:
        raise StepTransientError(f"{hop.method} {hop.url} timed out after {timeout}s") from exc
    raise AssertionError("unreachable: the loop returns or raises")


_STATUS = {"type": "integer", "minimum": 100, "maximum": 599}

ACTIVITY = define(
    "http.request",
    "call an allow-listed HTTP endpoint; JSON or text response, transient errors retried",
    {
        "type": "object",
        "required": ["method", "url"],
        "additionalProperties": False,
        "properties": {
            "method": {"enum": ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]},
            "url": {"type": "string", "minLength": 1, "pattern": "^[hH][tT][tT][pP][sS]?://"},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "params": {
                "type": "object",
                "additionalProperties": {"type": ["string", "number", "boolean"]},
            },
            "json": {},
            "body": {"type": "string"},
            "timeout_seconds": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": MAX_TIMEOUT_SECONDS,
            },
            "expect_status": {"type": "array", "items": _STATUS, "minItems": 1},
            "follow_redirects": {"type": "boolean", "default": True},
        },
        "not": {"required": ["json", "body"]},
    },
    request,
)

ACTIVITIES: list[StepActivity] = [ACTIVITY]
