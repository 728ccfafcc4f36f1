"""OpenAI (and OpenAI-compatible servers such as vLLM or Ollama) through the official SDK.

Chat Completions with JSON mode (`response_format={"type": "json_object"}`), which compatible
servers support too; the newer Responses API mostly is not.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import openai

from app.ai.contracts import InvalidReply, ProviderError, ProviderResult, TaskSpec
from app.ai.tasks import parse_reply

# Time the SDK may spend sleeping between its own retries (0.5 s x 2^n backoff) per retry;
# a longer Retry-After from the server (the SDK honours up to two minutes) is cut off.
RETRY_ALLOWANCE_SECONDS = 1.0


def call_deadline(timeout: float, max_retries: int) -> float:
    """A hard bound for one complete() call: every SDK attempt plus its backoff."""
    return timeout * (max_retries + 1) + RETRY_ALLOWANCE_SECONDS * max_retries


def map_openai_error(exc: openai.OpenAIError) -> ProviderError:
    """The SDK's exception as a ProviderError with our failure kind."""
    # Order matters: APITimeoutError is an APIConnectionError; the status errors are
    # APIStatusError subclasses.
    if isinstance(exc, openai.APITimeoutError):
        return ProviderError(str(exc), kind="timeout", retryable=True)
    if isinstance(exc, openai.APIConnectionError):
        return ProviderError(str(exc), kind="connection", retryable=True)
    if isinstance(exc, openai.RateLimitError):
        return ProviderError(str(exc), kind="rate_limited", retryable=True)
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        # Retrying with this provider cannot help, but "retryable" here means "try the next
        # provider": a bad or revoked key must fail over (and trip this provider's breaker)
        # instead of sending the task straight to the baseline.
        return ProviderError(str(exc), kind="auth", retryable=True)
    if isinstance(exc, openai.BadRequestError):
        return ProviderError(str(exc), kind="bad_request", retryable=False)
    if isinstance(exc, openai.APIStatusError) and exc.status_code >= 500:
        return ProviderError(str(exc), kind="server", retryable=True)
    if isinstance(exc, openai.APIStatusError):  # 404 unknown model, 409, 422 ...
        return ProviderError(str(exc), kind="bad_request", retryable=False)
    # APIResponseValidationError and other SDK failures: a broken reply, worth another try.
    return ProviderError(str(exc), kind="server", retryable=True)


class OpenAIProvider:
    """contracts.Provider for OpenAI's Chat Completions API (or a compatible server)."""

    name = "openai"

    def __init__(
        self,
        api_key: str,
        base_url: str | None = None,
        max_retries: int = 1,
        *,
        temperature: float | None = 0.0,
    ) -> None:
        # Few SDK retries: Temporal's retry policy and the gateway's failover stay in charge.
        self.max_retries = max_retries
        # None leaves temperature out, for models that refuse it (OpenAI reasoning models).
        self.temperature = temperature
        self.client = openai.AsyncOpenAI(
            api_key=api_key, base_url=base_url or None, max_retries=max_retries
        )

    async def complete(
        self, model: str, task: TaskSpec, input: dict[str, Any], *, timeout: float
    ) -> ProviderResult:
        system, user = task.messages(input)
        options: dict[str, Any] = {}
        if self.temperature is not None:
            options["temperature"] = self.temperature
        started = time.monotonic()
        try:
            async with asyncio.timeout(call_deadline(timeout, self.max_retries)):
                response = await self.client.chat.completions.create(
                    model=model,
                    messages=[
                        {"role": "system", "content": system},
                        {"role": "user", "content": user},
                    ],
                    response_format={"type": "json_object"},
                    timeout=timeout,
                    **options,
                )
        except TimeoutError as exc:
            raise ProviderError(
                "the call and its retries took too long", kind="timeout", retryable=True
            ) from exc
        except openai.OpenAIError as exc:
            raise map_openai_error(exc) from exc
        latency_ms = int((time.monotonic() - started) * 1000)
        text = (response.choices[0].message.content or "") if response.choices else ""
        usage = response.usage
        tokens_in = usage.prompt_tokens if usage else 0
        tokens_out = usage.completion_tokens if usage else 0
        try:
            output = parse_reply(text)
        except ValueError as exc:
            raise InvalidReply(
                f"the reply is not a JSON object: {text[:200]!r}",
                input_tokens=tokens_in,
                output_tokens=tokens_out,
                latency_ms=latency_ms,
            ) from exc
        return ProviderResult(
            output=output,
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            latency_ms=latency_ms,
            raw_text=text,
        )

    async def aclose(self) -> None:
        """Close the SDK client's connection pool (at shutdown)."""
        await self.client.close()

    async def probe(self, model: str, *, timeout: float) -> bool:
        """True when the server answers the model list (one attempt, no SDK retries)."""
        try:
            async with asyncio.timeout(timeout):
                await self.client.with_options(max_retries=0).models.list(timeout=timeout)
        except (TimeoutError, openai.OpenAIError):
            return False
        return True
