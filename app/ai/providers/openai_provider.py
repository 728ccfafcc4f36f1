"""OpenAI (and OpenAI-compatible servers such as vLLM or Ollama) through the official SDK.

Chat Completions (compatible servers support it; the newer Responses API mostly not), with
structured outputs: `response_format={"type": "json_schema", "json_schema": {..., "strict":
true}}` and the task's reply schema, so the model's decoding follows it. Servers without it
(OPENAI_OUTPUT_MODE=json_object) get JSON mode (`{"type": "json_object"}`): any JSON object.
The sampling temperature is sent as 0 unless the catalogue says the model refuses it.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import openai

from app.ai.contracts import ProviderError, ProviderResult, TaskSpec
from app.ai.providers.sdk import (
    bounded_call,
    list_model_ids,
    map_sdk_error,
    portable_schema,
    result_of,
)
from app.ai.tasks import reply_schema
from app.ai_catalog import Catalog

OutputMode = Literal["json_schema", "json_object"]


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
        output_mode: OutputMode = "json_schema",
        catalog: Catalog | None = None,
    ) -> None:
        # Few SDK retries: Temporal's retry policy and the gateway's failover stay in charge.
        self.max_retries = max_retries
        # None leaves temperature out, for models that refuse it (OpenAI reasoning models);
        # so does a catalogue entry with "temperature": false.
        self.temperature = temperature
        self.output_mode = output_mode
        self.catalog = catalog
        self.client = openai.AsyncOpenAI(
            api_key=api_key, base_url=base_url or None, max_retries=max_retries
        )

    async def complete(
        self, model: str, task: TaskSpec, input: dict[str, Any], *, timeout: float
    ) -> ProviderResult:
        system, user = task.messages(input)
        options: dict[str, Any] = {}
        entry = self.catalog.entry(self.name, model) if self.catalog is not None else None
        if self.temperature is not None and (entry is None or entry.temperature):
            options["temperature"] = self.temperature
        response, latency_ms = await bounded_call(
            self.client.chat.completions.create(
                model=model,
                messages=[
                    {"role": "system", "content": system},
                    {"role": "user", "content": user},
                ],
                response_format=self._response_format(task, input),
                timeout=timeout,
                **options,
            ),
            openai,
            timeout=timeout,
            max_retries=self.max_retries,
        )
        message = response.choices[0].message if response.choices else None
        if message is not None and getattr(message, "refusal", None):
            # A structured-output refusal: answered (and paid) but nothing to use.
            text = ""
        else:
            text = (message.content or "") if message is not None else ""
        usage = response.usage
        details = getattr(usage, "prompt_tokens_details", None) if usage else None
        return result_of(
            text,
            usage.prompt_tokens if usage else 0,
            usage.completion_tokens if usage else 0,
            latency_ms,
            cached_input_tokens=(getattr(details, "cached_tokens", 0) or 0) if details else 0,
        )

    def _response_format(self, task: TaskSpec, input: dict[str, Any]) -> Any:
        if self.output_mode == "json_object":
            return {"type": "json_object"}
        return {
            "type": "json_schema",
            "json_schema": {
                "name": task.name,
                "schema": portable_schema(reply_schema(task, input)),
                "strict": True,
            },
        }

    async def aclose(self) -> None:
        """Close the SDK client's connection pool (at shutdown)."""
        await self.client.close()

    async def list_models(self, *, timeout: float) -> set[str]:
        """The ids GET /v1/models lists (bounded); ProviderError when it fails."""
        return await list_model_ids(
            self.client.with_options(max_retries=0).models.list(timeout=timeout), openai, timeout
        )

    async def probe(self, model: str, *, timeout: float) -> bool:
        """True when the server answers the model list (one attempt, no SDK retries)."""
        try:
            async with asyncio.timeout(timeout):
                await self.client.with_options(max_retries=0).models.list(timeout=timeout)
        except (TimeoutError, openai.OpenAIError):
            return False
        return True
