"""AI recommendations in GraphQL: `aiRecommendations(from, to)`, setting changes drawn from the
caller's tenant's recorded AI usage, each with its measured basis (app/analytics/
recommendations.py). Readable by every role, like aiUsageSummary; applying one is an admin's
mutation (setBudget, updateAiSettings) or, for cache TTLs, the operator's AI_CACHE_TTLS."""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal
from typing import Annotated, cast

import strawberry
from strawberry.scalars import JSON

from app.analytics.model_comparison import ModelComparison, RateBasis
from app.analytics.recommendations import (
    BudgetBasis,
    CacheBasis,
    Recommendation,
    RecommendationService,
)
from app.api.context import Context


@strawberry.enum
class AiRecommendationKind(enum.Enum):
    ENABLE_CACHE = "ENABLE_CACHE"
    CHEAPER_MODEL = "CHEAPER_MODEL"
    BUDGET = "BUDGET"


@strawberry.type(
    description="Paid calls that repeated an earlier paid input of the same task and model "
    "after the cache TTL in force had expired (or with the cache off)."
)
class AiCacheBasis:
    current_ttl_seconds: int = strawberry.field(description="<= 0: the cache is off.")
    suggested_ttl_seconds: int
    missed_repeats: int = strawberry.field(description="Repeats the TTL in force missed.")
    covered_repeats: int = strawberry.field(
        description="Of those, the ones the suggested TTL would have answered (>= 90%, or all "
        "within 30 days)."
    )
    min_repeats: int = strawberry.field(description="No suggestion on fewer missed repeats.")

    @classmethod
    def build(cls, b: CacheBasis) -> AiCacheBasis:
        return cls(
            current_ttl_seconds=b.current_ttl_seconds,
            suggested_ttl_seconds=b.suggested_ttl_seconds,
            missed_repeats=b.missed_repeats,
            covered_repeats=b.covered_repeats,
            min_repeats=b.min_repeats,
        )


@strawberry.type(description="One model's validation record for a task in the window.")
class AiModelPassRate:
    provider: str
    model: str
    calls: int = strawberry.field(description="Paid calls it answered (cache hits excluded).")
    passed: int = strawberry.field(description="Of those, outputs that passed validation.")
    pass_rate: float
    wilson_low: float = strawberry.field(description="Wilson 95% interval of the pass rate.")
    wilson_high: float
    cost_usd: Decimal
    avg_cost_usd: Decimal

    @classmethod
    def build(cls, r: RateBasis) -> AiModelPassRate:
        return cls(
            provider=r.provider,
            model=r.model,
            calls=r.calls,
            passed=r.passed,
            pass_rate=r.pass_rate,
            wilson_low=r.wilson_low,
            wilson_high=r.wilson_high,
            cost_usd=r.cost_usd,
            avg_cost_usd=r.avg_cost_usd,
        )


@strawberry.type(
    description="The task's most used model against a cheaper one with records for the task."
)
class AiModelComparison:
    current: AiModelPassRate
    cheaper: AiModelPassRate
    z: float = strawberry.field(
        description="Pooled two-proportion z of 'the cheaper model passes less often'; the "
        "suggestion needs z < 1.645 (no significant drop at one-sided alpha 0.05)."
    )
    non_inferiority_z: float = strawberry.field(
        description="z of 'the cheaper model passes maxPassRateDrop less often, or worse' "
        "(Agresti-Caffo adjusted rates); large is evidence it is not that much worse."
    )
    p_value: float = strawberry.field(
        description="One-sided p-value of that non-inferiority test, uncorrected."
    )
    adjusted_p_value: float = strawberry.field(
        description="The p-value corrected for the comparisons made in this request "
        "(`correction`); a suggestion needs it <= familyAlpha."
    )
    comparisons: int = strawberry.field(
        description="(task, most used model, cheaper model) pairs tested in this request: the "
        "family the correction covers."
    )
    correction: str = strawberry.field(
        description="The multiple-comparison correction: HOLM (Holm-Bonferroni step-down)."
    )
    family_alpha: float = strawberry.field(
        description="Chance, over all the comparisons, of suggesting any model worse by "
        "maxPassRateDrop or more: at most this."
    )
    min_calls: int = strawberry.field(description="Calls each model needs to be compared.")
    max_pass_rate_drop: float = strawberry.field(
        description="The non-inferiority margin: how far below the current rate the cheaper "
        "one's may be (observed, and by the test)."
    )

    @classmethod
    def build(cls, c: ModelComparison) -> AiModelComparison:
        return cls(
            current=AiModelPassRate.build(c.current),
            cheaper=AiModelPassRate.build(c.cheaper),
            z=c.z,
            non_inferiority_z=c.non_inferiority_z,
            p_value=c.p_value,
            adjusted_p_value=c.adjusted_p_value,
            comparisons=c.comparisons,
            correction=c.correction,
            family_alpha=c.family_alpha,
            min_calls=c.min_calls,
            max_pass_rate_drop=c.max_pass_rate_drop,
        )


@strawberry.type
class AiTaskCount:
    task: str
    count: int


@strawberry.type(description="The UTC month of the window whose BUDGET fallbacks needed most.")
class AiBudgetBasis:
    month: str
    budget_fallbacks: int
    fallbacks_by_task: list[AiTaskCount]
    unpriced_fallbacks: int = strawberry.field(
        description="Fallbacks of tasks no model answered that month: not in the demand."
    )
    spent_usd: Decimal = strawberry.field(description="The month's recorded spend.")
    refused_demand_usd: Decimal = strawberry.field(
        description="The refused calls at their task's average paid cost that month."
    )
    needed_usd: Decimal = strawberry.field(description="spentUsd + refusedDemandUsd.")
    current_limit_usd: Decimal
    tier_max_usd: Decimal
    capped_at_tier_max: bool
    min_fallbacks: int = strawberry.field(description="No suggestion on fewer in a month.")

    @classmethod
    def build(cls, b: BudgetBasis) -> AiBudgetBasis:
        return cls(
            month=b.month,
            budget_fallbacks=b.budget_fallbacks,
            fallbacks_by_task=[
                AiTaskCount(task=t, count=n) for t, n in b.fallbacks_by_task.items()
            ],
            unpriced_fallbacks=b.unpriced_fallbacks,
            spent_usd=b.spent_usd,
            refused_demand_usd=b.refused_demand_usd,
            needed_usd=b.needed_usd,
            current_limit_usd=b.current_limit_usd,
            tier_max_usd=b.tier_max_usd,
            capped_at_tier_max=b.capped_at_tier_max,
            min_fallbacks=b.min_fallbacks,
        )


@strawberry.type(description="A setting change, what applies it, and the measured basis.")
class AiRecommendation:
    kind: AiRecommendationKind
    task: str | None = strawberry.field(description="The AI task; null for BUDGET (tenant-wide).")
    summary: str
    apply_with: str = strawberry.field(
        description="The mutation that applies it (setBudget, updateAiSettings: an admin's), "
        "or AI_CACHE_TTLS (a deployment setting: the operator's)."
    )
    apply_value: JSON = strawberry.field(
        description="The mutation's variables, or the setting's value ({task: seconds})."
    )
    estimated_savings_usd: Decimal | None = strawberry.field(
        description="What it would have saved in the window, from recorded costs; null for BUDGET."
    )
    cache: AiCacheBasis | None = strawberry.field(description="Set for ENABLE_CACHE.")
    cheaper_model: AiModelComparison | None = strawberry.field(description="Set for CHEAPER_MODEL.")
    budget: AiBudgetBasis | None = strawberry.field(description="Set for BUDGET.")

    @classmethod
    def build(cls, r: Recommendation) -> AiRecommendation:
        return cls(
            kind=AiRecommendationKind(r.kind),
            task=r.task,
            summary=r.summary,
            apply_with=r.apply_with,
            apply_value=cast(JSON, r.apply_value),
            estimated_savings_usd=r.savings_usd,
            cache=AiCacheBasis.build(r.cache) if r.cache else None,
            cheaper_model=AiModelComparison.build(r.cheaper_model) if r.cheaper_model else None,
            budget=AiBudgetBasis.build(r.budget) if r.budget else None,
        )


@strawberry.type
class AiRecommendations:
    from_: datetime = strawberry.field(name="from")
    to: datetime
    recommendations: list[AiRecommendation]


@strawberry.type
class RecommendationQuery:
    @strawberry.field(
        description="Setting changes the tenant's AI usage in [from, to) argues for (cache "
        "TTLs, cheaper models, budget), with their measured basis; the window spans at most "
        "366 days."
    )
    async def ai_recommendations(
        self,
        info: strawberry.Info[Context, None],
        from_: Annotated[datetime, strawberry.argument(name="from")],
        to: datetime,
    ) -> AiRecommendations:
        principal = info.context.principal()
        async with info.context.session() as s:
            report = await RecommendationService(s).recommend(
                principal.tenant_id, from_, to, info.context.deps.settings
            )
        return AiRecommendations(
            from_=report.since,
            to=report.until,
            recommendations=[AiRecommendation.build(r) for r in report.recommendations],
        )
