"""AI recommendations (`aiRecommendations`): concrete setting changes drawn from a tenant's
recorded AI usage in a window, each with the measured basis it rests on. Three kinds:

ENABLE_CACHE  Inputs that recurred (same task, model and input fingerprint, app/ai/input_hash.py)
              and were paid for again because the task's cache TTL in force (AI_CACHE_TTLS over
              app/ai/cache.py DEFAULT_TTLS) had expired, or the cache was off for the task. The
              suggestion is the shortest TTL of a fixed ladder (5 min .. 30 days) that would have
              answered at least 90% of those repeats; the savings are the recorded costs of the
              repeats it would have answered. A repeat is a validated paid call in the window;
              its gap, to the previous validated paid call of the same input (also before the
              window), is measured when its row is added (ai_usage.repeat_gap_seconds). Exact
              when every call of the input was paid; an upper bound when, under the longer TTL,
              the previous call would itself have been a hit (its entry being older). Applied
              by the operator (AI_CACHE_TTLS is a deployment setting; tenants have no switch).
CHEAPER_MODEL A model with records for the task (A/B overrides, failover, the budget's cheaper
              sibling) that costs less per call than the task's most used model, that the tenant's
              tier may use, and whose validation pass rate is not worse: both models have at
              least MIN_MODEL_CALLS calls, a one-sided non-inferiority test (margin
              MAX_PASS_RATE_DROP) rejects "worse by the margin or more" at family-wise alpha
              0.05 after Holm's correction over every pair the request tests
              (app/analytics/model_comparison.py; recommendation_stats.py says why), the
              observed rate is at most the margin below, and the pooled drop test finds no
              significant drop (z < 1.645). Wilson 95% intervals are reported. The savings: the
              primary model's calls at the difference in average cost per call.
              Applied with `updateAiSettings(input: {overrides: ...})`.
BUDGET        Calls refused for the budget (fallback BUDGET) in a UTC month: the monthly limit
              that would have covered that month's demand is its recorded spend plus each refused
              call at its task's average paid cost that month, rounded up to a whole USD and
              capped at the tier's maximum. Suggested when above the limit in force, with
              `setBudget(limitUsd:)`. The month counts whole (the budget did), its refused calls
              only inside the window. Refused calls of a task no model answered that month cannot
              be priced and are reported as such.

No recommendation rests on fewer than its minimum sample (the MIN_* constants, reported with
each). Only calls recorded since migration 0017 carry fingerprints; ENABLE_CACHE sees those only.
The counts come from the per-day rollups ai_usage_daily and ai_usage_repeats_daily (whole days)
and the rows of the window's partial first and last days (app/analytics/
recommendations_repository.py), so a year of a busy tenant costs a few thousand rows, not a
million.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import ROUND_CEILING, Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.ai import routing
from app.ai.cache import DEFAULT_TTLS
from app.ai.contracts import ModelChoice
from app.ai.pricing import usd
from app.ai.service import AiService, max_budget
from app.ai_catalog import Catalog
from app.analytics.model_comparison import (
    ModelComparison,
    ModelResult,
    RateBasis,
    model_results,
    model_summary,
    passing,
    rate_of,
    tested_pairs,
)
from app.analytics.recommendations_repository import (
    GapBucket,
    MonthTotal,
    RecommendationRepository,
    WindowStats,
)
from app.analytics.service import checked_window
from app.models.ai_usage import REPEAT_GAP_BOUNDS
from app.settings import Settings

# Cache TTLs a suggestion picks from, seconds: 5 min, 15 min, 1 h, 6 h, 1 d, 2 d, 7 d, 14 d, 30 d.
TTL_LADDER: tuple[int, ...] = tuple(
    minutes * 60 for minutes in (5, 15, 60, 6 * 60, 1440, 2 * 1440, 7 * 1440, 14 * 1440, 30 * 1440)
)
# Each rung is a bound of the repeat buckets, so a bucket is wholly under a rung or above it.
assert set(TTL_LADDER) <= set(REPEAT_GAP_BOUNDS)
CACHE_COVERAGE = 0.9  # the suggested TTL answers at least this share of the missed repeats
MIN_REPEATS = 20  # missed repeats of a task before a cache suggestion
MIN_BUDGET_FALLBACKS = 10  # BUDGET fallbacks in one month before a budget suggestion


@dataclass(frozen=True)
class BudgetMonth:
    month_start: date
    spent_usd: Decimal  # every recorded cost of the month (what counted against the budget)
    fallbacks: dict[str, int]  # task -> BUDGET fallbacks in the window in this month
    paid: dict[str, tuple[int, Decimal]]  # task -> (paid calls, their cost), the whole month


def budget_months(stats: list[WindowStats], totals: list[MonthTotal]) -> list[BudgetMonth]:
    """The months with BUDGET fallbacks in the window, with their whole month's figures."""
    fallbacks: dict[date, dict[str, int]] = {}
    for s in stats:
        if s.budget_fallbacks:
            by_task = fallbacks.setdefault(s.month, {})
            by_task[s.task] = by_task.get(s.task, 0) + s.budget_fallbacks
    spent: dict[date, Decimal] = defaultdict(Decimal)
    paid: dict[date, dict[str, tuple[int, Decimal]]] = defaultdict(dict)
    for t in totals:
        spent[t.month] += t.cost_usd
        if t.paid:
            paid[t.month][t.task] = (t.paid, t.paid_cost_usd)
    return [BudgetMonth(m, spent[m], f, paid[m]) for m, f in sorted(fallbacks.items())]


@dataclass(frozen=True)
class CacheBasis:
    current_ttl_seconds: int  # <= 0: the cache is off for the task
    suggested_ttl_seconds: int
    missed_repeats: int  # paid repeats the TTL in force did not answer
    covered_repeats: int  # of those, the ones the suggested TTL would have answered
    min_repeats: int = MIN_REPEATS


@dataclass(frozen=True)
class BudgetBasis:
    month: str  # "YYYY-MM", UTC: the month that needed most
    budget_fallbacks: int
    fallbacks_by_task: dict[str, int]
    unpriced_fallbacks: int  # of tasks no model answered that month: not in the demand
    spent_usd: Decimal
    refused_demand_usd: Decimal
    needed_usd: Decimal
    current_limit_usd: Decimal
    tier_max_usd: Decimal
    capped_at_tier_max: bool
    min_fallbacks: int = MIN_BUDGET_FALLBACKS


@dataclass(frozen=True)
class Recommendation:
    kind: str  # ENABLE_CACHE | CHEAPER_MODEL | BUDGET
    task: str | None
    summary: str
    apply_with: str  # the mutation (setBudget, updateAiSettings) or setting (AI_CACHE_TTLS)
    apply_value: dict[str, Any]  # its variables, or the setting's value
    savings_usd: Decimal | None  # what it would have saved in the window (None: BUDGET)
    cache: CacheBasis | None = None
    cheaper_model: ModelComparison | None = None
    budget: BudgetBasis | None = None


@dataclass(frozen=True)
class RecommendationReport:
    since: datetime
    until: datetime
    recommendations: list[Recommendation]


def _ttl_text(seconds: int) -> str:
    if seconds % 86400 == 0:
        return f"{seconds // 86400} d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    return f"{seconds // 60} min"


def cache_recommendations(buckets: list[GapBucket], ttls: dict[str, int]) -> list[Recommendation]:
    by_task: dict[str, list[GapBucket]] = defaultdict(list)
    for bucket in buckets:
        by_task[bucket.task].append(bucket)
    found = []
    for task, rows in sorted(by_task.items()):
        missed = sum(b.repeats for b in rows)
        if missed < MIN_REPEATS:
            continue
        # The shortest rung answering CACHE_COVERAGE of the missed repeats, at most the last.
        for seconds in TTL_LADDER:
            answered = [
                b
                for b in rows
                if b.bucket < len(REPEAT_GAP_BOUNDS) and REPEAT_GAP_BOUNDS[b.bucket] <= seconds
            ]
            covered = sum(b.repeats for b in answered)
            if covered >= CACHE_COVERAGE * missed:
                break
        saved = sum((b.cost_usd for b in answered), Decimal(0))
        if covered == 0 or saved <= 0:
            continue
        current = ttls.get(task, 0)
        was = "cache off" if current <= 0 else f"after the {_ttl_text(current)} TTL"
        found.append(
            Recommendation(
                kind="ENABLE_CACHE",
                task=task,
                summary=(
                    f"{missed} paid {task} calls repeated an input paid for earlier "
                    f"({was}); a cache TTL of {_ttl_text(seconds)} would have answered "
                    f"{covered} of them and saved {usd(saved)} USD."
                ),
                apply_with="AI_CACHE_TTLS",
                apply_value={task: seconds},
                savings_usd=usd(saved),
                cache=CacheBasis(current, seconds, missed, covered),
            )
        )
    return found


def model_recommendations(
    results: list[ModelResult],
    tier: str,
    routed: dict[str, list[ModelChoice]],
    overrides: dict[str, Any],
    catalog: Catalog | None = None,
) -> list[Recommendation]:
    """`routed`: each task's candidates in force for the tenant (its override or tier table);
    `overrides`: the tenant's stored ones, kept in each suggestion (updateAiSettings replaces
    them all)."""
    allowed = set(routing.allowed_models(tier, catalog))
    by_task: dict[str, list[RateBasis]] = defaultdict(list)
    for r in results:
        if r.passed + r.invalid > 0:
            by_task[r.task].append(rate_of(r))
    found = []
    for task, (saving, comparison) in sorted(passing(tested_pairs(by_task, allowed)).items()):
        cheaper = comparison.cheaper
        choice = ModelChoice(cheaper.provider, cheaper.model)
        current = routed.get(task, [])
        if current and current[0] == choice:
            continue  # already first for this task
        order = [choice, *(c for c in current if c != choice)]
        found.append(
            Recommendation(
                kind="CHEAPER_MODEL",
                task=task,
                summary=model_summary(task, comparison, saving),
                apply_with="updateAiSettings",
                apply_value={
                    "input": {
                        "overrides": {
                            **overrides,
                            task: [{"provider": c.provider, "model": c.model} for c in order],
                        }
                    }
                },
                savings_usd=usd(saving),
                cheaper_model=comparison,
            )
        )
    return found


def budget_recommendation(
    months: list[BudgetMonth],
    limit: Decimal,
    ceiling: Decimal,
) -> Recommendation | None:
    """The one budget suggestion (the month that needed most), or None."""
    worst: tuple[Decimal, BudgetMonth, Decimal, int] | None = None
    for month in months:
        refused = sum(month.fallbacks.values())
        if refused < MIN_BUDGET_FALLBACKS:
            continue
        demand = Decimal(0)
        unpriced = 0
        for task, count in month.fallbacks.items():
            calls, cost = month.paid.get(task, (0, Decimal(0)))
            if calls == 0:
                unpriced += count
            else:
                demand += count * cost / calls
        needed = month.spent_usd + demand
        if worst is None or needed > worst[0]:
            worst = (needed, month, demand, unpriced)
    if worst is None:
        return None
    needed, month, demand, unpriced = worst
    suggested = needed.to_integral_value(rounding=ROUND_CEILING)
    capped = suggested > ceiling
    suggested = min(suggested, ceiling)
    if limit < 0 or suggested <= limit:  # (a limit < 0 is unlimited: nothing was refused)
        return None
    refused = sum(month.fallbacks.values())
    label = month.month_start.strftime("%Y-%m")
    return Recommendation(
        kind="BUDGET",
        task=None,
        summary=(
            f"In {label}, {refused} AI calls fell back to the baseline for want of budget; the "
            f"month's recorded spend ({usd(month.spent_usd)} USD) plus those calls at their "
            f"tasks' average cost ({usd(demand)} USD) needs a monthly budget of "
            f"{needed.quantize(Decimal('0.01'), rounding=ROUND_CEILING)} USD"
            + (f"; the tier allows at most {ceiling} USD." if capped else ".")
        ),
        apply_with="setBudget",
        apply_value={"limitUsd": str(suggested)},
        savings_usd=None,
        budget=BudgetBasis(
            month=label,
            budget_fallbacks=refused,
            fallbacks_by_task=dict(sorted(month.fallbacks.items())),
            unpriced_fallbacks=unpriced,
            spent_usd=usd(month.spent_usd),
            refused_demand_usd=usd(demand),
            needed_usd=usd(needed),
            current_limit_usd=limit,
            tier_max_usd=ceiling,
            capped_at_tier_max=capped,
        ),
    )


class RecommendationService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.repo = RecommendationRepository(session)

    async def recommend(
        self, tenant_id: uuid.UUID, since: datetime, until: datetime, settings: Settings
    ) -> RecommendationReport:
        since, until = checked_window(since, until)
        since, until = since.astimezone(UTC), until.astimezone(UTC)
        tenant = await AiService(self.session).tenant_ai(tenant_id, settings)
        ttls = {**DEFAULT_TTLS, **settings.ai_cache_ttls}
        found = cache_recommendations(
            await self.repo.repeat_gaps(tenant_id, since, until, ttls), ttls
        )
        configured = {"openai", "anthropic"}
        catalog = settings.catalog()
        routed = {
            task: routing.candidates(
                tenant.tier,
                task,
                overrides=tenant.overrides,
                configured=configured,
                catalog=catalog,
            )
            for task in catalog.routing.get(tenant.tier, {})
        }
        stats = await self.repo.window_stats(tenant_id, since, until)
        found += model_recommendations(
            model_results(stats), tenant.tier, routed, tenant.overrides, catalog
        )
        months = sorted({s.month for s in stats if s.budget_fallbacks})
        budget = budget_recommendation(
            budget_months(stats, await self.repo.month_totals(tenant_id, months)),
            tenant.budget_usd,
            max_budget(tenant.tier, settings),
        )
        if budget is not None:
            found.append(budget)
        return RecommendationReport(since, until, found)
