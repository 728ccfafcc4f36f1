"""Which models a tenant's tier uses for each AI task, and the cost-aware downgrade.

Each tier's candidates per task, in failover order, are in the model catalogue
(app/ai_catalog.py; shipped defaults: free none (the baseline only), pro small models, premium
standard ones, enterprise the best, each failing over to the other provider). A tenant override
(aiSettings) replaces the candidates of a task, but only with models its tier is entitled to
(allowed_models); the rest of an override is ignored at call time, so an override stored before
a downgrade cannot keep a higher tier's models. Near the budget (past the soft threshold) each
model is swapped for its cheaper sibling. Candidates whose provider is not configured (no API
key) are dropped; the baseline is always the last resort.
"""

from __future__ import annotations

from typing import Any

from app.ai import extensions
from app.ai_catalog import Catalog, ModelChoice, default_catalog
from app.tiers import TIERS


def _routed(tier: str, task: str, catalog: Catalog) -> list[ModelChoice]:
    """The tier's models for a task. A plugin's task (app/ai/extensions.py) tries the plugin's
    own models first, then the tier's first task's, on tiers that have AI models at all."""
    table = catalog.routing.get(tier, {})
    if task in table or task not in extensions.ROUTES:
        return list(table.get(task, ()))
    tier_models = next(iter(table.values()), ())
    return [*extensions.ROUTES[task], *tier_models] if tier_models else []


def _catalog(catalog: Catalog | None) -> Catalog:
    return catalog if catalog is not None else default_catalog()


def _entitled(catalog: Catalog) -> dict[str, tuple[ModelChoice, ...]]:
    """Per tier: its routed models and their cheaper siblings, plus everything a lower tier may
    use (entitlements only grow with the tier, so an upgrade never invalidates an override)."""
    allowed: dict[str, tuple[ModelChoice, ...]] = {}
    below: list[ModelChoice] = []
    for tier in TIERS:
        own = [m for models in catalog.routing.get(tier, {}).values() for m in models]
        for choice in [*own, *(catalog.cheaper(m) for m in own)]:
            if choice not in below:
                below.append(choice)
        allowed[tier] = tuple(below)
    return allowed


_ENTITLED: dict[int, tuple[Catalog, dict[str, tuple[ModelChoice, ...]]]] = {}


def allowed_models(tier: str, catalog: Catalog | None = None) -> tuple[ModelChoice, ...]:
    """The models a tenant of `tier` may name in an override (an unknown tier: none)."""
    catalog = _catalog(catalog)
    cached = _ENTITLED.get(id(catalog))
    if cached is None or cached[0] is not catalog:
        if len(_ENTITLED) > 16:  # catalogues built in tests; a deployment has one or two
            _ENTITLED.clear()
        cached = _ENTITLED[id(catalog)] = (catalog, _entitled(catalog))
    return cached[1].get(tier, ())


def _override_choices(tier: str, override: Any, catalog: Catalog) -> list[ModelChoice]:
    """The entries of a stored override that the tier is entitled to, in their order.

    Overrides are checked when saved, but the tier may have dropped since (or the row predates
    the check): whatever is not allowed now is left out rather than trusted."""
    allowed = allowed_models(tier, catalog)
    chosen: list[ModelChoice] = []
    for entry in override if isinstance(override, list) else []:
        if not isinstance(entry, dict):
            continue
        choice = ModelChoice(str(entry.get("provider")), str(entry.get("model")))
        if choice in allowed:
            chosen.append(choice)
    return chosen


def candidates(
    tier: str,
    task: str,
    *,
    overrides: dict[str, Any] | None = None,
    configured: set[str],
    near_budget: bool = False,
    catalog: Catalog | None = None,
) -> list[ModelChoice]:
    """Models to try in order (possibly empty: then only the baseline runs)."""
    catalog = _catalog(catalog)
    # An override with nothing the tier may use falls back to the tier's own table.
    chosen = _override_choices(tier, (overrides or {}).get(task), catalog) or _routed(
        tier, task, catalog
    )
    if near_budget:
        chosen = [catalog.cheaper(c) for c in chosen]
    unique: list[ModelChoice] = []
    for choice in chosen:
        if choice.provider in configured and choice not in unique:
            unique.append(choice)
    return unique


def table(catalog: Catalog | None = None) -> list[dict[str, Any]]:
    """The tier-to-model table as rows (for the aiSettings query)."""
    return [
        {"tier": tier, "task": task, "models": [c.__dict__ for c in models]}
        for tier, tasks in _catalog(catalog).routing.items()
        for task, models in tasks.items()
    ]
