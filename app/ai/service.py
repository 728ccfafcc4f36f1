"""AI rules per tenant: the budget and settings in force, and admin changes to them.

Tier entitlements are enforced here and in app/ai/routing.py, never trusted from the tenant: an
admin may override models only with those its tier allows (routing.allowed_models, from the
model catalogue in force) and set a
budget only up to its tier's maximum (settings.ai_tier_max_budgets_usd). Both are enforced again
when the settings are used, so a stored value from a higher tier is capped after a downgrade.
"""

from __future__ import annotations

import uuid
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.ai import pricing, routing
from app.ai.contracts import PROVIDERS, TASKS, ModelChoice
from app.ai.gateway import TenantAi
from app.ai.repository import AiRepository
from app.ai_catalog import Catalog
from app.errors import Forbidden, NotFound, ValidationFailed
from app.models import TenantAiSettings
from app.settings import Settings
from app.tenants.repository import TenantRepository
from app.tenants.service import Principal


class AiService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.repo = AiRepository(session)

    async def tenant_ai(self, tenant_id: uuid.UUID, settings: Settings) -> TenantAi:
        tenant = await TenantRepository(self.session).get(tenant_id)
        if tenant is None:
            raise NotFound("tenant not found")
        row = await self.repo.settings_for(tenant_id)
        stored = row.monthly_budget_usd if row is not None else None
        budget = (
            Decimal(settings.ai_tier_budgets_usd.get(tenant.tier, 0)) if stored is None else stored
        )
        return TenantAi(
            tier=tenant.tier,
            enabled=row.enabled if row else True,
            # The tier's maximum wins over what was stored (perhaps on a higher tier).
            budget_usd=min(budget, max_budget(tenant.tier, settings)),
            overrides=dict(row.model_overrides) if row else {},
        )

    async def set_budget(
        self, principal: Principal, limit_usd: str | None, settings: Settings
    ) -> TenantAiSettings:
        """Set the tenant's monthly budget (USD), at most its tier's maximum; None returns to
        the tier default."""
        _admin(principal)
        row = await self.repo.upsert_settings(principal.tenant_id)
        if limit_usd is None:
            row.monthly_budget_usd = None
        else:
            try:
                amount = Decimal(limit_usd)
            except InvalidOperation as exc:
                raise ValidationFailed(f"{limit_usd!r} is not an amount in USD") from exc
            ceiling = max_budget(principal.tier, settings)
            if not amount.is_finite() or amount < 0 or amount > ceiling:
                raise ValidationFailed(
                    f"the budget must be between 0 and {ceiling:,} USD "
                    f"(the {principal.tier} tier's maximum)"
                )
            row.monthly_budget_usd = amount.quantize(pricing.MICRO)
        await self.session.flush()
        return row

    async def update_settings(
        self,
        principal: Principal,
        *,
        enabled: bool | None,
        overrides: dict[str, Any] | None,
        catalog: Catalog | None = None,
    ) -> TenantAiSettings:
        _admin(principal)
        row = await self.repo.upsert_settings(principal.tenant_id)
        if enabled is not None:
            row.enabled = enabled
        if overrides is not None:
            row.model_overrides = _checked_overrides(overrides, principal.tier, catalog)
        await self.session.flush()
        return row


def max_budget(tier: str, settings: Settings) -> Decimal:
    """The most a tenant of `tier` may spend on AI a month (an unknown tier: nothing)."""
    return Decimal(settings.ai_tier_max_budgets_usd.get(tier, 0))


def _admin(principal: Principal) -> None:
    if principal.role != "admin":
        raise Forbidden("only admins change AI settings")


def _checked_overrides(
    overrides: dict[str, Any], tier: str, catalog: Catalog | None = None
) -> dict[str, Any]:
    """{task: [{provider, model}, ...]} with known tasks, providers and priced models that the
    tenant's tier is entitled to."""
    allowed = routing.allowed_models(tier, catalog)
    names = ", ".join(f"{c.provider}/{c.model}" for c in allowed) or "none"
    problems: list[dict[str, str]] = []
    for task, models in overrides.items():
        if task not in TASKS:
            problems.append({"path": f"$.{task}", "message": f"unknown AI task {task!r}"})
            continue
        if not isinstance(models, list):
            problems.append({"path": f"$.{task}", "message": "a list of {provider, model}"})
            continue
        if models and not allowed:
            problems.append(
                {"path": f"$.{task}", "message": f"the {tier} tier has no models to override with"}
            )
            continue
        if len(models) > len(allowed):
            # Each allowed model at most once: also bounds the work and the problems listed.
            problems.append(
                {
                    "path": f"$.{task}",
                    "message": f"at most {len(allowed)} models on the {tier} tier "
                    f"(allowed: {names})",
                }
            )
            continue
        for i, choice in enumerate(models):
            problem = _choice_problem(choice, allowed, tier, names, catalog)
            if problem is not None:
                field, message = problem
                problems.append({"path": f"$.{task}[{i}]{field}", "message": message})
    if problems:
        raise ValidationFailed(f"invalid AI overrides ({len(problems)} problems)", details=problems)
    return overrides


def _choice_problem(
    choice: Any,
    allowed: tuple[ModelChoice, ...],
    tier: str,
    names: str,
    catalog: Catalog | None = None,
) -> tuple[str, str] | None:
    """What is wrong with one {provider, model} entry: (field suffix, message), or None."""
    if (
        not isinstance(choice, dict)
        or set(choice) != {"provider", "model"}
        or not all(isinstance(v, str) for v in choice.values())
    ):
        return "", "expected {provider, model} (strings)"
    provider, model = choice["provider"], choice["model"]
    if provider not in PROVIDERS or provider == "baseline":
        return ".provider", f"unknown provider {provider[:100]!r}"
    if not pricing.is_priced(provider, model, catalog=catalog):
        return ".model", f"no price for {model[:100]!r}"
    if ModelChoice(provider, model) not in allowed:
        return ".model", f"{provider}/{model} is not included in the {tier} tier (allowed: {names})"
    return None
