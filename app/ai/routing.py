"""Which models a tenant's tier uses for each AI task, and the cost-aware downgrade.

free: the baseline only. pro: small models. premium: standard models, failing over to a small
model of the other provider. enterprise: the best models with cross-provider failover. A tenant
override (aiSettings) replaces the candidates of a task. Near the budget (past the soft
threshold) each model is swapped for its cheaper sibling. Candidates whose provider is not
configured (no API key) are dropped; the baseline is always the last resort.
"""

from __future__ import annotations

from typing import Any

from app.ai.contracts import TASKS, ModelChoice

OPENAI_SMALL = ModelChoice("openai", "gpt-4o-mini")
OPENAI_STANDARD = ModelChoice("openai", "gpt-4o")
OPENAI_BEST = ModelChoice("openai", "gpt-4.1")
ANTHROPIC_SMALL = ModelChoice("anthropic", "claude-3-5-haiku-latest")
ANTHROPIC_STANDARD = ModelChoice("anthropic", "claude-3-5-sonnet-latest")
ANTHROPIC_BEST = ModelChoice("anthropic", "claude-sonnet-4-0")

_BY_TIER: dict[str, list[ModelChoice]] = {
    "free": [],
    "pro": [OPENAI_SMALL, ANTHROPIC_SMALL],
    "premium": [OPENAI_STANDARD, ANTHROPIC_STANDARD],
    "enterprise": [ANTHROPIC_BEST, OPENAI_BEST],
}
ROUTING: dict[str, dict[str, list[ModelChoice]]] = {
    tier: {task: list(models) for task in TASKS} for tier, models in _BY_TIER.items()
}
CHEAPER: dict[ModelChoice, ModelChoice] = {
    OPENAI_STANDARD: OPENAI_SMALL,
    OPENAI_BEST: ModelChoice("openai", "gpt-4.1-mini"),
    ANTHROPIC_STANDARD: ANTHROPIC_SMALL,
    ANTHROPIC_BEST: ANTHROPIC_SMALL,
}


def candidates(
    tier: str,
    task: str,
    *,
    overrides: dict[str, Any] | None = None,
    configured: set[str],
    near_budget: bool = False,
) -> list[ModelChoice]:
    """Models to try in order (possibly empty: then only the baseline runs)."""
    override = (overrides or {}).get(task)
    if override:
        chosen = [ModelChoice(o["provider"], o["model"]) for o in override]
    else:
        chosen = list(ROUTING.get(tier, {}).get(task, []))
    if near_budget:
        chosen = [CHEAPER.get(c, c) for c in chosen]
    unique: list[ModelChoice] = []
    for choice in chosen:
        if choice.provider in configured and choice not in unique:
            unique.append(choice)
    return unique


def table() -> list[dict[str, Any]]:
    """The tier-to-model table as rows (for the aiSettings query)."""
    return [
        {"tier": tier, "task": task, "models": [c.__dict__ for c in models]}
        for tier, tasks in ROUTING.items()
        for task, models in tasks.items()
    ]
