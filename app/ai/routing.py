"""Which models a tenant's tier uses for each AI task, and the cost-aware downgrade.

Each tier's models, in failover order, are in the tier table (app/tiers.py): free none (the
baseline only), pro small models, premium standard ones, enterprise the best, each failing over
to the other provider. A tenant override (aiSettings) replaces the candidates of a task, but
only with models its tier is entitled to (ALLOWED_MODELS); the rest of an override is ignored
at call time, so an override stored before a downgrade cannot keep a higher tier's models.
Near the budget (past the soft threshold) each model is swapped for its cheaper sibling
(CHEAPER). Candidates whose provider is not configured (no API key) are dropped; the baseline
is always the last resort.
"""

from __future__ import annotations

from typing import Any

from app.ai import extensions
from app.ai.contracts import TASKS, ModelChoice
from app.tiers import TIER_TABLE, TIERS

# Each tier's models (app/tiers.py) serve every task.
ROUTING: dict[str, dict[str, list[ModelChoice]]] = {
    t.name.value: {task: [ModelChoice(*m) for m in t.ai_models] for task in TASKS}
    for t in TIER_TABLE
}
# Each model's cheaper sibling, used near the budget (a model without one stays).
_OPENAI_SMALL = ModelChoice("openai", "gpt-4o-mini")
_ANTHROPIC_SMALL = ModelChoice("anthropic", "claude-3-5-haiku-latest")
CHEAPER: dict[ModelChoice, ModelChoice] = {
    ModelChoice("openai", "gpt-4o"): _OPENAI_SMALL,
    ModelChoice("openai", "gpt-4.1"): ModelChoice("openai", "gpt-4.1-mini"),
    ModelChoice("anthropic", "claude-3-5-sonnet-latest"): _ANTHROPIC_SMALL,
    ModelChoice("anthropic", "claude-sonnet-4-0"): _ANTHROPIC_SMALL,
}


def _entitled() -> dict[str, tuple[ModelChoice, ...]]:
    """Per tier: its routed models and their cheaper siblings, plus everything a lower tier may
    use (entitlements only grow with the tier, so an upgrade never invalidates an override)."""
    allowed: dict[str, tuple[ModelChoice, ...]] = {}
    below: list[ModelChoice] = []
    for tier in TIERS:
        own = [m for models in ROUTING.get(tier, {}).values() for m in models]
        for choice in [*own, *(CHEAPER.get(m, m) for m in own)]:
            if choice not in below:
                below.append(choice)
        allowed[tier] = tuple(below)
    return allowed


# The one definition of which models a tier may use; free: none, so it cannot override at all.
ALLOWED_MODELS: dict[str, tuple[ModelChoice, ...]] = _entitled()


def allowed_models(tier: str) -> tuple[ModelChoice, ...]:
    """The models a tenant of `tier` may name in an override (an unknown tier: none)."""
    return ALLOWED_MODELS.get(tier, ())


def _override_choices(tier: str, override: Any) -> list[ModelChoice]:
    """The entries of a stored override that the tier is entitled to, in their order.

    Overrides are checked when saved, but the tier may have dropped since (or the row predates
    the check): whatever is not allowed now is left out rather than trusted."""
    allowed = allowed_models(tier)
    chosen: list[ModelChoice] = []
    for entry in override if isinstance(override, list) else []:
        if not isinstance(entry, dict):
            continue
        choice = ModelChoice(str(entry.get("provider")), str(entry.get("model")))
        if choice in allowed:
            chosen.append(choice)
    return chosen


def _routed(tier: str, task: str) -> list[ModelChoice]:
    """The tier's models for a task. A plugin's task (app/ai/extensions.py) tries the plugin's
    own models first, then the tier's, on tiers that have AI models at all (free: none)."""
    table = ROUTING.get(tier, {})
    if task in table or task not in extensions.ROUTES:
        return list(table.get(task, []))
    tier_models = next(iter(table.values()), [])
    return [*extensions.ROUTES[task], *tier_models] if tier_models else []


def candidates(
    tier: str,
    task: str,
    *,
    overrides: dict[str, Any] | None = None,
    configured: set[str],
    near_budget: bool = False,
) -> list[ModelChoice]:
    """Models to try in order (possibly empty: then only the baseline runs)."""
    # An override with nothing the tier may use falls back to the tier's own table.
    chosen = _override_choices(tier, (overrides or {}).get(task)) or _routed(tier, task)
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
