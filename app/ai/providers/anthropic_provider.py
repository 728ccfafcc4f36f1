"""Anthropic's Messages API through the official SDK.

No sampling parameters: anthropic 2.x sends `anthropic-version: 2026-10-21`, which rejects
`temperature`/`top_p`/`top_k` with a 400 (the SDK dropped them). The system prompt asks for
JSON only, and the first JSON object of the reply's text blocks is the output.
"""

from __future__ import annotations

import asyncio
from typing import Any

import anthropic

from app.ai.contracts import ProviderError, ProviderResult, TaskSpec
from app.ai.providers.sdk import bounded_call, map_sdk_error, result_of
from app.ai.tasks import max_output_tokens


def map_anthropic_error(exc: anthropic.AnthropicError) -> ProviderError:
    """The SDK's exception as a ProviderError with our failure kind."""
    return map_sdk_error(exc, anthropic)


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
        message, latency_ms = await bounded_call(
            self.client.messages.create(
                model=model,
                system=system,
                messages=[{"role": "user", "content": user}],
                max_tokens=max_output_tokens(task, input),
                timeout=timeout,
            ),
            anthropic,
            timeout=timeout,
            max_retries=self.max_retries,
        )
        # Thinking or other blocks may come first; only text blocks carry the answer.
        text = "".join(block.text for block in message.content if block.type == "text")
        return result_of(text, message.usage.input_tokens, message.usage.output_tokens, latency_ms)

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
