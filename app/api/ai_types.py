"""The AI layer's GraphQL types: usage records and their summary buckets, the budget, provider
status, the model catalogue and a tenant's AI settings. The queries and mutations that return
them are app/api/ai.py."""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal

import strawberry
from strawberry.scalars import JSON

from app.api.relay import to_global_id
from app.models import AiUsage


@strawberry.type
class ExecutionRef:
    id: strawberry.ID


@strawberry.type(
    description="One candidate model tried (or skipped) for an AI call, and why it did not "
    "answer (or did not answer usably)."
)
class AiAttempt:
    provider: str
    model: str
    kind: str = strawberry.field(
        description="rate_limited, server, overloaded, timeout, connection, bad_request, auth, "
        "model_not_found (unknown or retired), model_forbidden, unsupported_output (the model "
        "cannot do the output format or a parameter asked), invalid_json, invalid_output "
        "(failed the task's checks), unavailable (skipped: refused lately), breaker_open."
    )
    message: str = strawberry.field(
        description="Short and sanitised: never prompt text or credentials."
    )


@strawberry.type(description="One AI call, cache hit or baseline fallback.")
class AiUsageRecord:
    task: str
    provider: str = strawberry.field(description="openai, anthropic, or baseline (no AI).")
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal
    saved_usd: Decimal = strawberry.field(description="What a cache hit saved.")
    latency_ms: int
    cached: bool
    fallback_reason: str | None
    outcome: str
    execution: ExecutionRef | None
    step_id: str | None
    at: datetime
    attempts: list[AiAttempt] = strawberry.field(
        description="Each candidate tried or skipped before the answer, in order."
    )

    @classmethod
    def from_model(cls, m: AiUsage) -> AiUsageRecord:
        return cls(
            task=m.task,
            provider=m.provider,
            model=m.model,
            input_tokens=m.input_tokens,
            output_tokens=m.output_tokens,
            cost_usd=m.cost_usd,
            saved_usd=m.saved_usd,
            latency_ms=m.latency_ms,
            cached=m.cached,
            fallback_reason=m.fallback_reason,
            outcome=m.outcome,
            execution=ExecutionRef(id=to_global_id("Execution", m.execution_id))
            if m.execution_id
            else None,
            step_id=m.step_id,
            at=m.at,
            attempts=[
                AiAttempt(
                    provider=str(a.get("provider", "")),
                    model=str(a.get("model", "")),
                    kind=str(a.get("kind", "")),
                    message=str(a.get("message", "")),
                )
                for a in (m.attempts or [])
                if isinstance(a, dict)
            ],
        )


@strawberry.input
class AiUsageFilter:
    task: str | None = None
    provider: str | None = None
    model: str | None = None
    cached: bool | None = None
    fallback_reason: str | None = None
    execution_id: strawberry.ID | None = None
    since: datetime | None = None
    until: datetime | None = None


@strawberry.enum
class AiUsageGroup(enum.Enum):
    DAY = "DAY"
    MODEL = "MODEL"
    PROVIDER = "PROVIDER"
    TASK = "TASK"
    TEMPLATE = "TEMPLATE"


@strawberry.type
class AiUsageBucket:
    key: str
    calls: int
    tokens: int
    cost_usd: Decimal
    saved_usd: Decimal
    cache_hit_rate: float
    fallback_rate: float


@strawberry.type
class Budget:
    limit_usd: Decimal
    spent_usd: Decimal
    reserved_usd: Decimal
    remaining_usd: Decimal
    month: str


@strawberry.type
class ModelRoute:
    provider: str
    model: str


@strawberry.type
class AiProviderStatus:
    name: str
    model: str
    status: str = strawberry.field(
        description="UP, DEGRADED or DOWN, from the breaker state; UNAVAILABLE while the "
        "provider refuses the model (unavailableReason)."
    )
    breaker_state: str
    error_rate: float
    p95_latency_ms: float
    calls: int
    unavailable_reason: str | None = strawberry.field(
        description="model_not_found (unknown or retired), model_forbidden or "
        "unsupported_output (no structured outputs): calls skip it."
    )
    listed: bool | None = strawberry.field(
        description="Whether the provider's model list had it at the last model check (null: "
        "not checked, or the listing failed)."
    )
    configured: bool = strawberry.field(
        description="Whether the model catalogue routes to it (or to it as a cheaper sibling)."
    )


@strawberry.type(description="A model of the catalogue: prices in USD per 1M tokens.")
class CatalogModel:
    provider: str
    model: str
    input_per_mtok_usd: Decimal
    output_per_mtok_usd: Decimal
    cached_input_per_mtok_usd: Decimal | None = strawberry.field(
        description="Input served from the provider's prompt cache; null: no discount."
    )
    cheaper: ModelRoute | None = strawberry.field(
        description="Swapped in past the budget's soft threshold."
    )


@strawberry.type(description="The model catalogue in force (shipped defaults + AI_CATALOG).")
class AiCatalog:
    as_of: str = strawberry.field(description="When the shipped prices were checked.")
    sources: list[str]
    models: list[CatalogModel]


@strawberry.type
class TierRoute:
    tier: str
    task: str
    models: list[ModelRoute]


@strawberry.type
class AiSettings:
    enabled: bool
    budget_limit_usd: Decimal = strawberry.field(
        description="The monthly budget in force: the one set (or the tier default), at most "
        "budgetMaxUsd."
    )
    budget_max_usd: Decimal = strawberry.field(
        description="The most this tenant's tier allows as its monthly budget (setBudget)."
    )
    overrides: JSON = strawberry.field(
        description="{task: [{provider, model}]} of this tenant; models not in allowedModels "
        "are ignored (the tier's table is used)."
    )
    allowed_models: list[ModelRoute] = strawberry.field(
        description="The models this tenant's tier may use in overrides (none on free)."
    )
    tier_table: list[TierRoute]
    catalog: AiCatalog
