"""The shapes every part of the AI layer agrees on: tasks, providers, results and failures.

The gateway (app/ai/gateway.py) takes an AiRequest, picks a ModelChoice per tier, checks the
budget, cache and provider health, calls a Provider with the task's TaskSpec, validates the
output with the TaskSpec, and falls back to the task's baseline on any failure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from app.ai_catalog import ModelChoice as ModelChoice  # (provider, model), in the catalogue
from app.ai_tasks import TASKS as TASKS  # defined in a leaf module for app.settings

PROVIDERS = ("openai", "anthropic", "baseline")

# Why a call ended on the baseline (ai_usage.fallback_reason).
FALLBACK_REASONS = (
    "TIER",  # the tenant's tier does not include this task
    "DISABLED",  # the tenant switched AI off
    "NO_PROVIDER",  # no provider configured (no API keys)
    "BUDGET",  # the monthly budget is exhausted
    "BREAKER_OPEN",  # every candidate provider's circuit is open
    "PROVIDER_ERROR",  # providers failed (errors, timeouts) after failover
    "INVALID_OUTPUT",  # output failed validation twice
)


@dataclass(frozen=True)
class AiRequest:
    task: str
    input: dict[str, Any]  # the task's input, checked against TaskSpec.input_schema
    tenant_id: str
    execution_id: str | None = None
    step_id: str | None = None


# ProviderError.kind, and the kinds an attempt records (aiUsage.attempts.kind).
ERROR_KINDS = (
    "rate_limited",
    "server",
    "overloaded",  # 503/529: the provider sheds load
    "timeout",
    "connection",
    "bad_request",  # the API refused the request itself (400): the baseline answers
    "auth",  # the key is wrong or revoked (401)
    "model_not_found",  # 404: an unknown or retired model
    "model_forbidden",  # 403: the key may not use this model
    "unsupported_output",  # 400 about the output format or a parameter this model lacks
    "invalid_json",  # answered, but not with a JSON object
)
ATTEMPT_KINDS = (*ERROR_KINDS, "invalid_output", "unavailable", "breaker_open")


@dataclass
class ProviderResult:
    output: dict[str, Any]  # the JSON object the model returned, NOT yet validated
    input_tokens: int
    output_tokens: int
    latency_ms: int
    raw_text: str = ""
    cached_input_tokens: int = 0  # of input_tokens, served from the provider's prompt cache


class ProviderError(Exception):
    """A provider call failed. `retryable` failures trigger failover (and count against the
    provider's health unless `model_level`); non-retryable ones (a malformed request) go
    straight to the baseline."""

    def __init__(
        self, message: str, *, kind: str, retryable: bool, model_level: bool = False
    ) -> None:
        super().__init__(message)
        self.kind = kind  # one of ERROR_KINDS
        self.retryable = retryable
        # The model itself is unusable (unknown, retired, not allowed for this key, without
        # the output format or a parameter the request needs): the gateway marks it
        # unavailable in the provider health instead of counting an error.
        self.model_level = model_level


class InvalidReply(ProviderError):
    """The model answered, and was paid for, but not with a JSON object: like invalid output
    (one more try, then the baseline), and its tokens are costed."""

    def __init__(
        self,
        message: str,
        *,
        input_tokens: int,
        output_tokens: int,
        latency_ms: int,
        cached_input_tokens: int = 0,
    ):
        super().__init__(message, kind="invalid_json", retryable=True)
        self.input_tokens, self.output_tokens, self.latency_ms = (
            input_tokens,
            output_tokens,
            latency_ms,
        )
        self.cached_input_tokens = cached_input_tokens


class InvalidOutput(ValueError):
    """The model's output broke the task's rules (wrong category, entity not in the text...)."""


class TaskSpec(Protocol):
    name: str
    input_schema: dict[str, Any]  # JSON Schema of AiRequest.input
    output_schema: dict[str, Any]  # JSON Schema the model is asked to follow

    def messages(self, input: dict[str, Any]) -> tuple[str, str]:
        """(system instructions, user content). User content is delimited data, never
        spliced into the instructions."""

    def validate(self, input: dict[str, Any], output: dict[str, Any]) -> dict[str, Any]:
        """The cleaned output (e.g. sanitised text), or InvalidOutput with the reason."""

    def baseline(self, input: dict[str, Any]) -> dict[str, Any]:
        """The deterministic non-AI result; always valid for validate()."""


class Provider(Protocol):
    name: str  # "openai" | "anthropic" | "baseline"

    async def complete(
        self, model: str, task: TaskSpec, input: dict[str, Any], *, timeout: float
    ) -> ProviderResult: ...

    async def probe(self, model: str, *, timeout: float) -> bool:
        """A cheap health check (list models or a 1-token call)."""

    async def list_models(self, *, timeout: float) -> set[str]:
        """The model ids the provider offers this key (ProviderError when it cannot say)."""


@dataclass
class AiOutcome:
    """What an AI activity returns to the workflow (and what ai_usage records)."""

    task: str
    output: dict[str, Any]
    provider: str
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    saved_usd: Decimal = Decimal(0)
    latency_ms: int = 0
    cached: bool = False
    fallback_reason: str | None = None
    outcome: str = "OK"  # OK | CACHED | FALLBACK
    attempts: list[dict[str, Any]] = field(default_factory=list)
