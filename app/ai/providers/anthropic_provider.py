"""Anthropic's Messages API through the official SDK.

No sampling parameters: anthropic 2.x sends `anthropic-version: 2026-10-21`, which rejects
`temperature`/`top_p`/`top_k` with a 400 (the SDK dropped them). The system prompt asks for
JSON only; with structured outputs (ANTHROPIC_OUTPUT_MODE=json_schema, the default)
`output_config.format` also hands the API the task's reply schema, which the model's decoding
then follows. The first JSON object of the reply's text blocks is the output.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import anthropic

from app.ai.contracts import ProviderError, ProviderResult, TaskSpec
from app.ai.providers.sdk import (
    bounded_call,
    list_model_ids,
    map_sdk_error,
    portable_schema,
    result_of,
)
from app.ai.tasks import max_output_tokens, reply_schema

OutputMode = Literal["json_schema", "text"]


def map_anthropic_error(exc: anthropic.AnthropicError) -> ProviderError:
    """The SDK's exception as a ProviderError with our failure kind."""
    return map_sdk_error(exc, anthropic)


class AnthropicProvider:
    """contracts.Provider for Anthropic's Messages API."""

    name = "anthropic"

    def __init__(
        self,
        api_key: str,
        base_url: str | None = None,
        max_retries: int = 1,
        *,
        output_mode: OutputMode = "json_schema",
    ) -> None:
        # Few SDK retries: Temporal's retry policy and the gateway's failover stay in charge.
        self.max_retries = max_retries
        self.output_mode = output_mode
        self.client = anthropic.AsyncAnthropic(
            api_key=api_key, base_url=base_url or None, max_retries=max_retries
        )

    async def complete(
        self, model: str, task: TaskSpec, input: dict[str, Any], *, timeout: float
    ) -> ProviderResult:
        system, user = task.messages(input)
        options: dict[str, Any] = {}
        if self.output_mode == "json_schema":
            options["output_config"] = {
                "format": {
                    "type": "json_schema",
                    "schema": portable_schema(reply_schema(task, input)),
                }
            }
        message, latency_ms = await bounded_call(
            self.client.messages.create(
                model=model,
                system=system,
                messages=[{"role": "user", "content": user}],
                max_tokens=max_output_tokens(task, input),
                timeout=timeout,
                **options,
            ),
            anthropic,
            timeout=timeout,
            max_retries=self.max_retries,
        )
        # Thinking or other blocks may come first; only text blocks carry the answer.
        text = "".join(block.text for block in message.content if block.type == "text")
        usage = message.usage
        # Anthropic counts cache reads apart from input_tokens; ours include them.
        cached = usage.cache_read_input_tokens or 0
        return result_of(
            text,
            usage.input_tokens + cached,
            usage.output_tokens,
            latency_ms,
            cached_input_tokens=cached,
        )

    async def aclose(self) -> None:
        """Close the SDK client's connection pool (at shutdown)."""
        await self.client.close()

    async def list_models(self, *, timeout: float) -> set[str]:
        """The ids GET /v1/models lists (bounded, all pages); ProviderError when it fails."""
        return await list_model_ids(
            self.client.with_options(max_retries=0).models.list(limit=1000, timeout=timeout),
            anthropic,
            timeout,
        )

    async def probe(self, model: str, *, timeout: float) -> bool:
        """True when the API answers the model list (one attempt, no SDK retries)."""
        try:
            async with asyncio.timeout(timeout):
                await self.client.with_options(max_retries=0).models.list(limit=1, timeout=timeout)
        except (TimeoutError, anthropic.AnthropicError):
            return False
        return True
