"""`http.request`: one HTTP call to an allow-listed host, with retry-safe error mapping.

Input: `{method, url, headers?, params?, json? | body?, timeout_seconds?, expect_status?,
follow_redirects?: true}`. Output: `{status, url, headers, json, text, truncated}`: `json` is the
parsed body when the response says it is JSON, else `text` holds it; bodies are cut at 1 MiB.

Reachable hosts are `settings.http_allowed_hosts`: exact names or IPs, or `*.example.com`
(any subdomain, not example.com itself). A wildcard never matches an IP literal, so an internal
address (127.0.0.1, 10.x, 169.254.169.254, ...) is reachable only when listed exactly. The check
runs before any connection and again on every redirect hop (at most 5); a redirect to another
host drops the Authorization and Cookie headers. Proxy variables from the environment are
ignored, so nothing routes the call elsewhere.

Errors: connection failures, timeouts, 5xx, 408, 425 and 429 are transient (retried); other
4xx are permanent. Statuses in `expect_status` are success, and with `expect_status` set any
other status is an error. POST and PATCH get an `Idempotency-Key` header (a hash of execution,
step and request) unless the template sets one, so an API that honours it sees a retry once.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from app.steps.base import (
    StepActivity,
    StepContext,
    StepInputError,
    StepTransientError,
    canonical_json,
    define,
)

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


def host_allowed(host: str, allowed: Sequence[str]) -> bool:
    """True when `host` is listed exactly, or is a DNS name under a `*.suffix` entry."""
    host = host.lower().rstrip(".")
    patterns = [p.strip().lower().rstrip(".").removeprefix("[").removesuffix("]") for p in allowed]
    if host in patterns:
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return False  # internal or not, an IP literal must be listed exactly
    return any(p.startswith("*.") and len(p) > 2 and host.endswith(p[1:]) for p in patterns)


def _checked_url(raw: str | httpx.URL, allowed: Sequence[str]) -> httpx.URL:
    try:
        url = httpx.URL(raw)
    except httpx.InvalidURL as exc:
        raise StepInputError(f"invalid url {str(raw)!r}: {exc}") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise StepInputError(f"url {str(raw)!r} must be an absolute http(s) URL")
    if not host_allowed(url.host, allowed):
        raise StepInputError(
            f"host {url.host!r} is not allowed; the operator lists reachable hosts in "
            "HTTP_ALLOWED_HOSTS"
        )
    return url


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


def _output(response: httpx.Response, body: bytes, truncated: bool) -> dict[str, Any]:
    parsed: Any = None
    text: str | None = body.decode(response.encoding or "utf-8", errors="replace")
    if "json" in response.headers.get("content-type", "") and not truncated and body:
        try:
            parsed, text = json.loads(body), None
        except ValueError:
            pass  # says JSON but is not: hand over the text
    return {
        "status": response.status_code,
        "url": str(response.url),
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
    url: httpx.URL
    headers: httpx.Headers
    body: dict[str, Any]  # httpx.build_request keywords: json= or content=, or nothing
    params: dict[str, Any] | None


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
    url = _checked_url(input["url"], ctx.settings.http_allowed_hosts)
    return _Hop(input["method"], url, headers, body, input.get("params"))


def _next_hop(response: httpx.Response, hop: _Hop, allowed: Sequence[str]) -> _Hop:
    """Where a redirect leads (checked against the allow list), as browsers follow it."""
    target = _checked_url(response.url.join(response.headers["location"]), allowed)
    method, body = hop.method, hop.body
    if response.status_code == 303 or (response.status_code in (301, 302) and method == "POST"):
        method, body = ("HEAD" if method == "HEAD" else "GET"), {}
    headers = hop.headers
    if (target.scheme, target.host, target.port) != (hop.url.scheme, hop.url.host, hop.url.port):
        headers = httpx.Headers(
            [(k, v) for k, v in headers.multi_items() if k.lower() not in _CREDENTIAL_HEADERS]
        )
    return _Hop(method, target, headers, body, None)


async def _send(client: httpx.AsyncClient, hop: _Hop) -> httpx.Response:
    where = f"{hop.method} {hop.url}"
    try:
        req = client.build_request(
            hop.method, hop.url, params=hop.params, headers=hop.headers, **hop.body
        )
        return await client.send(req, stream=True)
    except (httpx.LocalProtocolError, httpx.UnsupportedProtocol, UnicodeError) as exc:
        raise StepInputError(f"cannot send {where}: {exc}") from exc
    except httpx.TimeoutException as exc:
        raise StepTransientError(f"{where} timed out") from exc
    except httpx.TransportError as exc:
        raise StepTransientError(f"{where} failed: {exc!r}") from exc


async def request(input: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Send the request, following allowed redirects; see the module docstring.

    `timeout_seconds` (default HTTP_TIMEOUT_SECONDS) bounds the whole call, redirects and
    reading the body included.
    """
    hop = _first_hop(input, ctx)
    timeout = input.get("timeout_seconds", ctx.settings.http_timeout_seconds)
    follow = input.get("follow_redirects", True)
    try:
        async with (
            asyncio.timeout(timeout),
            httpx.AsyncClient(follow_redirects=False, timeout=timeout, trust_env=False) as client,
        ):
            for redirects in range(MAX_REDIRECTS + 1):
                response = await _send(client, hop)
                try:
                    if follow and response.is_redirect and redirects < MAX_REDIRECTS:
                        hop = _next_hop(response, hop, ctx.settings.http_allowed_hosts)
                        continue
                    raw, truncated = await _read_capped(response)
                except httpx.TransportError as exc:
                    raise StepTransientError(f"{hop.method} {hop.url}: reading failed") from exc
                finally:
                    await response.aclose()
                if follow and response.is_redirect:
                    raise StepInputError(f"more than {MAX_REDIRECTS} redirects from {input['url']}")
                out = _output(response, raw, truncated)
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
