"""Anthropic's Messages API through the official SDK.

No sampling parameters: anthropic 2.x sends `anthropic-version: 2026-10-21`, which rejects
`temperature`/`top_p`/`top_k` with a 400 (the SDK dropped them). The system prompt asks for
JSON only, and the first JSON object of the reply's text blocks is the output.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import anthropic

from app.ai.contracts import InvalidReply, ProviderError, ProviderResult, TaskSpec
from app.ai.providers.openai_provider import call_deadline
from app.ai.tasks import max_output_tokens, parse_reply


def map_anthropic_error(exc: anthropic.AnthropicError) -> ProviderError:
    """The SDK's exception as a ProviderError with our failure kind."""
    # Order matters: APITimeoutError is an APIConnectionError; OverloadedError (529) and the
    # other 5xx classes are InternalServerError subclasses.
    if isinstance(exc, anthropic.APITimeoutError):
        return ProviderError(str(exc), kind="timeout", retryable=True)
    if isinstance(exc, anthropic.APIConnectionError):
        return ProviderError(str(exc), kind="connection", retryable=True)
    if isinstance(exc, anthropic.RateLimitError):
        return ProviderError(str(exc), kind="rate_limited", retryable=True)
    if isinstance(exc, anthropic.AuthenticationError | anthropic.PermissionDeniedError):
        # Not worth retrying here, but "retryable" makes the gateway fail over to the next
        # provider (and count it against this one's health) instead of going to the baseline.
        return ProviderError(str(exc), kind="auth", retryable=True)
    if isinstance(exc, anthropic.BadRequestError):
        return ProviderError(str(exc), kind="bad_request", retryable=False)
    if isinstance(exc, anthropic.APIStatusError) and exc.status_code >= 500:
        return ProviderError(str(exc), kind="server", retryable=True)
    if isinstance(exc, anthropic.APIStatusError):  # 404 unknown model, 413, 422 ...
        return ProviderError(str(exc), kind="bad_request", retryable=False)
    return ProviderError(str(exc), kind="server", retryable=True)


class AnthropicProvider:
    """contracts.Provider for Anthropic's Messages API."""

    name = "anthropic"

    def __init__(self, api_key: str, base_url: str | None = None, max_retries: int = 1) -> None:
        # Few SDK retries: Temporal's retry policy and the gateway's failover stay in charge.
        self.max_retries = max_retries
        self.client = anthropic.AsyncAnthropic(
            api_key=api_key, base_url=base_url or None, max_retries=max_retries
        )

    async def complete(
        self, model: str, task: TaskSpec, input: dict[str, Any], *, timeout: float
    ) -> ProviderResult:
        system, user = task.messages(input)
        started = time.monotonic()
        try:
            async with asyncio.timeout(call_deadline(timeout, self.max_retries)):
                message = await self.client.messages.create(
                    model=model,
                    system=system,
                    messages=[{"role": "user", "content": user}],
                    max_tokens=max_output_tokens(task, input),
                    timeout=timeout,
                )
        except TimeoutError as exc:
            raise ProviderError(
                "the call and its retries took too long", kind="timeout", retryable=True
            ) from exc
        except anthropic.AnthropicError as exc:
            raise map_anthropic_error(exc) from exc
        latency_ms = int((time.monotonic() - started) * 1000)
        # Thinking or other blocks may come first; only text blocks carry the answer.
        text = "".join(block.text for block in message.content if block.type == "text")
        try:
            output = parse_reply(text)
        except ValueError as exc:
            raise InvalidReply(
                f"the reply is not a JSON object: {text[:200]!r}",
                input_tokens=message.usage.input_tokens,
                output_tokens=message.usage.output_tokens,
                latency_ms=latency_ms,
            ) from exc
        return ProviderResult(
            output=output,
            input_tokens=message.usage.input_tokens,
            output_tokens=message.usage.output_tokens,
            latency_ms=latency_ms,
            raw_text=text,
        )

    async def aclose(self) -> None:
        """Close the SDK client's connection pool (at shutdown)."""
        await self.client.close()

    async def probe(self, model: str, *, timeout: float) -> bool:
        """True when the API answers the model list (one attempt, no SDK retries)."""
        try:
            async with asyncio.timeout(timeout):
                await self.client.with_options(max_retries=0).models.list(limit=1, timeout=timeout)
        except (TimeoutError, anthropic.AnthropicError):
            return False
        return True
