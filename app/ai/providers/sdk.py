"""What the OpenAI and Anthropic providers share: both official SDKs are generated from the
same toolkit (Stainless), so their exceptions have the same names and meanings, and a call is
bounded, timed and parsed the same way."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterable, Awaitable
from types import ModuleType
from typing import Any, TypeVar

from app.ai.contracts import InvalidReply, ProviderError, ProviderResult
from app.ai.tasks import parse_reply

T = TypeVar("T")

MAX_LISTED_MODELS = 5_000  # a models listing longer than this is cut (a hostile server)
# Time the SDK may spend sleeping between its own retries (0.5 s x 2^n backoff) per retry;
# a longer Retry-After from the server (the SDKs honour up to two minutes) is cut off.
RETRY_ALLOWANCE_SECONDS = 1.0


def call_deadline(timeout: float, max_retries: int) -> float:
    """A hard bound for one complete() call: every SDK attempt plus its backoff."""
    return timeout * (max_retries + 1) + RETRY_ALLOWANCE_SECONDS * max_retries


def root_error(sdk: ModuleType) -> type[Exception]:
    """The SDK's root exception class (`openai.OpenAIError`, `anthropic.AnthropicError`)."""
    root: type[Exception] = getattr(
        sdk, {"openai": "OpenAIError"}.get(sdk.__name__, "AnthropicError")
    )
    return root


# A 400 that names the response format or an unsupported parameter: this model cannot do what
# the request asks (OpenAI: "Invalid parameter: 'response_format' of type 'json_schema' is not
# supported with this model", param "response_format", or code "unsupported_parameter";
# Anthropic: output_config.format; OpenAI-compatible servers: their own words for the same).
_UNSUPPORTED_400 = re.compile(
    r"(?i)response_format|json_schema|json schema|output_config|output_format|output format"
    r"|structured output|unsupported[ _](?:parameter|value)"
)
_UNSUPPORTED_PARAMS = frozenset({"response_format", "text.format", "output_config.format"})
# Only the head of the provider's own message is read: further on, a server may echo request
# text (the tenant's prompt), and a tenant must not be able to mark a model unavailable.
_MESSAGE_HEAD = 300


def unsupported_400(exc: Any) -> bool:
    """Whether a 400 says the model cannot do the output format or a parameter asked of it.

    Reads the error body's own fields (OpenAI's `{"error": {message, param, code}}`,
    Anthropic's `{"type": "error", "error": {message}}`), else the start of the raw body."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]
    if isinstance(body, dict):
        if body.get("param") in _UNSUPPORTED_PARAMS:
            return True
        if body.get("code") in ("unsupported_parameter", "unsupported_value"):
            return True
        message = str(body.get("message") or "")
    else:
        message = str(body or "")
    return _UNSUPPORTED_400.search(message[:_MESSAGE_HEAD]) is not None


def map_sdk_error(exc: Exception, sdk: ModuleType) -> ProviderError:
    """The SDK's (`openai` or `anthropic`) exception as a ProviderError with our failure kind.

    Order matters: APITimeoutError is an APIConnectionError, and the status errors (Anthropic's
    529 OverloadedError among the 5xx ones) are APIStatusError subclasses.

    "retryable" means "try the next candidate": every failure of this model or provider fails
    over (and counts against its health); only a request the API refuses as malformed (400)
    goes straight to the baseline, since every model would refuse it too. A 400 about the
    output format or a parameter this model does not support (`unsupported_400`) is about the
    model, not the request: a compatible server without structured outputs, say.
    """
    if isinstance(exc, sdk.APITimeoutError):
        return ProviderError(str(exc), kind="timeout", retryable=True)
    if isinstance(exc, sdk.APIConnectionError):
        return ProviderError(str(exc), kind="connection", retryable=True)
    if isinstance(exc, sdk.RateLimitError):
        return ProviderError(str(exc), kind="rate_limited", retryable=True)
    if isinstance(exc, sdk.AuthenticationError):  # a bad or revoked key: the whole provider
        return ProviderError(str(exc), kind="auth", retryable=True)
    if isinstance(exc, sdk.NotFoundError):
        # An unknown or retired model (both APIs answer 404 for it): this model is gone, the
        # next candidate (often the other provider) may well work.
        return ProviderError(str(exc), kind="model_not_found", retryable=True, model_level=True)
    if isinstance(exc, sdk.PermissionDeniedError):
        # 403: the key may not use this model (organisation or region access).
        return ProviderError(str(exc), kind="model_forbidden", retryable=True, model_level=True)
    if isinstance(exc, sdk.BadRequestError):
        if unsupported_400(exc):
            return ProviderError(
                str(exc), kind="unsupported_output", retryable=True, model_level=True
            )
        return ProviderError(str(exc), kind="bad_request", retryable=False)
    if isinstance(exc, sdk.APIStatusError) and exc.status_code in (503, 529):
        return ProviderError(str(exc), kind="overloaded", retryable=True)
    if isinstance(exc, sdk.APIStatusError) and exc.status_code >= 500:
        return ProviderError(str(exc), kind="server", retryable=True)
    if isinstance(exc, sdk.APIStatusError):  # 409, 413, 422 ...
        return ProviderError(str(exc), kind="bad_request", retryable=False)
    # APIResponseValidationError and other SDK failures: a broken reply, worth another try.
    return ProviderError(str(exc), kind="server", retryable=True)


async def bounded_call(
    call: Awaitable[T], sdk: ModuleType, *, timeout: float, max_retries: int
) -> tuple[T, int]:
    """(the SDK call's response, its latency in ms), within `call_deadline`; failures as
    ProviderError."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(call_deadline(timeout, max_retries)):
            response = await call
    except TimeoutError as exc:
        raise ProviderError(
            "the call and its retries took too long", kind="timeout", retryable=True
        ) from exc
    except Exception as exc:
        if not isinstance(exc, root_error(sdk)):
            raise
        raise map_sdk_error(exc, sdk) from exc
    return response, int((time.monotonic() - started) * 1000)


async def list_model_ids(listing: AsyncIterable[Any], sdk: ModuleType, timeout: float) -> set[str]:
    """The model ids of an SDK's auto-paging `models.list()`, at most MAX_LISTED_MODELS, within
    `timeout` for the whole listing; failures as ProviderError."""
    ids: set[str] = set()
    try:
        async with asyncio.timeout(timeout):
            async for model in listing:
                ids.add(str(model.id))
                if len(ids) >= MAX_LISTED_MODELS:
                    break
    except TimeoutError as exc:
        raise ProviderError(
            "listing the models took too long", kind="timeout", retryable=True
        ) from exc
    except Exception as exc:
        if not isinstance(exc, root_error(sdk)):
            raise
        raise map_sdk_error(exc, sdk) from exc
    return ids


# What both providers' schema-constrained decoding accepts everywhere (their strictest common
# subset): structure, types and enums. Lengths, numeric bounds, formats and patterns are left
# to the task's own checks, which run on every reply anyway; sent, some models refuse the
# whole schema (a 400).
_PORTABLE_KEYWORDS = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "enum",
        "const",
        "anyOf",
        "description",
        "$ref",
        "$defs",
    }
)


def portable_schema(schema: Any) -> Any:
    """`schema` with only the keywords structured outputs take, recursively; every object
    closed (additionalProperties false) with all its properties required, as OpenAI's strict
    mode needs."""
    if isinstance(schema, list):
        return [portable_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    kept: dict[str, Any] = {}
    for key, value in schema.items():
        if key not in _PORTABLE_KEYWORDS:
            continue
        if key in ("properties", "$defs"):
            kept[key] = {name: portable_schema(sub) for name, sub in value.items()}
        elif key in ("items", "anyOf"):
            kept[key] = portable_schema(value)
        else:
            kept[key] = value
    enum = kept.get("enum")
    if isinstance(enum, list) and "type" not in kept and all(isinstance(v, str) for v in enum):
        kept["type"] = "string"  # strict mode wants every value typed
    if kept.get("type") == "object" or "properties" in kept:
        kept["additionalProperties"] = False
        kept["required"] = list(kept.get("properties", {}))
    return kept


def result_of(
    text: str,
    input_tokens: int,
    output_tokens: int,
    latency_ms: int,
    *,
    cached_input_tokens: int = 0,
) -> ProviderResult:
    """The reply's JSON object as a ProviderResult; InvalidReply (costed) when it has none."""
    cached = min(max(cached_input_tokens, 0), input_tokens)
    try:
        output = parse_reply(text)
    except ValueError as exc:
        # The message says what was wrong, never the reply itself (it may echo the prompt).
        raise InvalidReply(
            f"the reply is not a JSON object ({len(text)} characters)",
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            latency_ms=latency_ms,
            cached_input_tokens=cached,
        ) from exc
    return ProviderResult(
        output=output,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        latency_ms=latency_ms,
        raw_text=text,
        cached_input_tokens=cached,
    )
