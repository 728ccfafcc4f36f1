"""CHEAPER_MODEL's comparisons (app/analytics/recommendations.py): each task's most used model
against every cheaper model with records for the task that the tier allows, all tested in one
family and corrected with Holm's method (app/analytics/recommendation_stats.py says why), and
for each task the passing comparison that saves most."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from app.ai.contracts import ModelChoice
from app.ai.pricing import usd
from app.analytics.recommendation_stats import (
    CORRECTION,
    FAMILY_ALPHA,
    NonInferiority,
    drop_z,
    holm_adjusted,
    non_inferiority,
    wilson,
)
from app.analytics.recommendations_repository import WindowStats

MIN_MODEL_CALLS = 30  # calls of each model before comparing their pass rates
MAX_PASS_RATE_DROP = 0.05  # the margin: the cheaper model may pass this much less often
Z_ONE_SIDED_95 = 1.645


@dataclass(frozen=True)
class ModelResult:
    """One model's calls of a task in the window (cache hits and baseline answers excluded)."""

    task: str
    provider: str
    model: str
    passed: int  # output validated (outcome OK)
    invalid: int  # paid, output invalid twice: baseline answered (INVALID_OUTPUT)
    cost_usd: Decimal  # of all those calls


def model_results(stats: list[WindowStats]) -> list[ModelResult]:
    """The window's calls per task and model that answered, over its months."""
    totals: dict[tuple[str, str, str], list[Any]] = {}
    for s in stats:
        if s.provider == "baseline" or s.paid == 0:
            continue
        total = totals.setdefault((s.task, s.provider, s.model), [0, 0, Decimal(0)])
        total[0] += s.passed
        total[1] += s.invalid
        total[2] += s.paid_cost_usd
    return [ModelResult(*key, *values) for key, values in sorted(totals.items())]


@dataclass(frozen=True)
class RateBasis:
    """One model's validation record for a task in the window."""

    provider: str
    model: str
    calls: int
    passed: int
    cost_usd: Decimal
    avg_cost_usd: Decimal
    pass_rate: float
    wilson_low: float
    wilson_high: float


@dataclass(frozen=True)
class ModelComparison:
    current: RateBasis  # the task's most used model
    cheaper: RateBasis
    z: float  # of the one-sided test that the cheaper model passes less often
    non_inferiority_z: float  # of the test that it passes at most the margin less often
    p_value: float  # that test's, uncorrected
    adjusted_p_value: float  # Holm-adjusted over the request's comparisons: <= family_alpha
    comparisons: int  # the (task, current, cheaper) pairs tested in the request
    correction: str = CORRECTION
    family_alpha: float = FAMILY_ALPHA
    min_calls: int = MIN_MODEL_CALLS
    max_pass_rate_drop: float = MAX_PASS_RATE_DROP


def rate_of(r: ModelResult) -> RateBasis:
    calls = r.passed + r.invalid
    low, high = wilson(r.passed, calls)
    return RateBasis(
        r.provider,
        r.model,
        calls,
        r.passed,
        usd(r.cost_usd),
        usd(r.cost_usd / calls),
        r.passed / calls,
        low,
        high,
    )


@dataclass(frozen=True)
class Pair:
    """A cheaper model tested against its task's most used one."""

    task: str
    primary: RateBasis
    cheaper: RateBasis
    test: NonInferiority


def tested_pairs(by_task: dict[str, list[RateBasis]], allowed: set[ModelChoice]) -> list[Pair]:
    """Every pair the request tests: the family Holm's correction covers. Which pairs are in
    it depends on call counts, costs and the tier, never on the pass rates being tested."""
    pairs = []
    for task, rates in sorted(by_task.items()):
        primary = max(rates, key=lambda r: (r.calls, r.cost_usd))
        if primary.calls < MIN_MODEL_CALLS:
            continue
        for other in rates:
            if (
                other is primary
                or other.calls < MIN_MODEL_CALLS
                or other.avg_cost_usd >= primary.avg_cost_usd
                or ModelChoice(other.provider, other.model) not in allowed
            ):
                continue
            test = non_inferiority(
                (primary.passed, primary.calls), (other.passed, other.calls), MAX_PASS_RATE_DROP
            )
            pairs.append(Pair(task, primary, other, test))
    return pairs


def passing(pairs: list[Pair]) -> dict[str, tuple[Decimal, ModelComparison]]:
    """Per task, the passing comparison that saves most: non-inferior after Holm's correction
    over all `pairs`, at most the margin below as observed, and no significant drop."""
    best: dict[str, tuple[Decimal, ModelComparison]] = {}
    adjusted = holm_adjusted([pair.test.p_value for pair in pairs])
    for pair, adjusted_p in zip(pairs, adjusted, strict=True):
        primary, other = pair.primary, pair.cheaper
        z = drop_z((primary.passed, primary.calls), (other.passed, other.calls))
        if (
            adjusted_p > FAMILY_ALPHA
            or other.pass_rate < primary.pass_rate - MAX_PASS_RATE_DROP
            or z >= Z_ONE_SIDED_95
        ):
            continue
        saving = (primary.avg_cost_usd - other.avg_cost_usd) * primary.calls
        if pair.task not in best or saving > best[pair.task][0]:
            comparison = ModelComparison(
                primary, other, z, pair.test.z, pair.test.p_value, adjusted_p, len(pairs)
            )
            best[pair.task] = (saving, comparison)
    return best


def model_summary(task: str, c: ModelComparison, saving: Decimal) -> str:
    cheaper, primary = c.cheaper, c.current
    return (
        f"{cheaper.provider}/{cheaper.model} passed validation on {cheaper.passed} of "
        f"{cheaper.calls} {task} calls ({cheaper.pass_rate:.1%}) against "
        f"{primary.passed} of {primary.calls} ({primary.pass_rate:.1%}) for "
        f"{primary.provider}/{primary.model}, at {cheaper.avg_cost_usd} instead of "
        f"{primary.avg_cost_usd} USD a call: {usd(saving)} USD less over the window. "
        f"Not worse by {c.max_pass_rate_drop * 100:g} points or more: p = {c.adjusted_p_value:.2g} "
        f"after Holm's correction over the {c.comparisons} model comparison"
        f"{'s' if c.comparisons != 1 else ''} made (family-wise alpha {c.family_alpha})."
    )
