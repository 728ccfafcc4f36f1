"""OpenAI (and OpenAI-compatible servers such as vLLM or Ollama) through the official SDK.

Chat Completions with JSON mode (`response_format={"type": "json_object"}`), which compatible
servers support too; the newer Responses API mostly is not.
"""

from __future__ import annotations

import asyncio
from typing import Any

import openai

from app.ai.contracts import ProviderError, ProviderResult, TaskSpec
from app.ai.providers.sdk import bounded_call, map_sdk_error, result_of


def map_openai_error(exc: openai.OpenAIError) -> ProviderError:
    """The SDK's exception as a ProviderError with our failure kind."""
    return map_sdk_error(exc, openai)


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
        response, latency_ms = await bounded_call(
            self.client.chat.completions.create(
                model=model,
                messages=[
                    {"role": "system", "content": system},
                    {"role": "user", "content": user},
                ],
                response_format={"type": "json_object"},
                timeout=timeout,
                **options,
            ),
            openai,
            timeout=timeout,
            max_retries=self.max_retries,
        )
        text = (response.choices[0].message.content or "") if response.choices else ""
        usage = response.usage
        return result_of(
            text,
            usage.prompt_tokens if usage else 0,
            usage.completion_tokens if usage else 0,
            latency_ms,
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
