"""AI rules per tenant: the budget and settings in force, and admin changes to them."""

from __future__ import annotations

import uuid
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.ai import pricing
from app.ai.contracts import PROVIDERS, TASKS
from app.ai.gateway import TenantAi
from app.ai.repository import AiRepository
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
        default = settings.ai_tier_budgets_usd.get(tenant.tier, Decimal(0))
        return TenantAi(
            tier=tenant.tier,
            enabled=row.enabled if row else True,
            budget_usd=row.monthly_budget_usd
            if row is not None and row.monthly_budget_usd is not None
            else Decimal(default),
            overrides=dict(row.model_overrides) if row else {},
        )

    async def set_budget(self, principal: Principal, limit_usd: str | None) -> TenantAiSettings:
        """Set the tenant's monthly budget (USD); None returns to the tier default."""
        _admin(principal)
        row = await self.repo.upsert_settings(principal.tenant_id)
        if limit_usd is None:
            row.monthly_budget_usd = None
        else:
            try:
                amount = Decimal(limit_usd)
            except InvalidOperation as exc:
                raise ValidationFailed(f"{limit_usd!r} is not an amount in USD") from exc
            if not amount.is_finite() or amount < 0 or amount > Decimal("1000000"):
                raise ValidationFailed("the budget must be between 0 and 1,000,000 USD")
            row.monthly_budget_usd = amount.quantize(Decimal("0.000001"))
        await self.session.flush()
        return row

    async def update_settings(
        self, principal: Principal, *, enabled: bool | None, overrides: dict[str, Any] | None
    ) -> TenantAiSettings:
        _admin(principal)
        row = await self.repo.upsert_settings(principal.tenant_id)
        if enabled is not None:
            row.enabled = enabled
        if overrides is not None:
            row.model_overrides = _checked_overrides(overrides)
        await self.session.flush()
        return row


def _admin(principal: Principal) -> None:
    if principal.role != "admin":
        raise Forbidden("only admins change AI settings")


def _checked_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """{task: [{provider, model}, ...]} with known tasks, providers and priced models."""
    problems = []
    for task, models in overrides.items():
        if task not in TASKS:
            problems.append({"path": f"$.{task}", "message": f"unknown AI task {task!r}"})
            continue
        if not isinstance(models, list):
            problems.append({"path": f"$.{task}", "message": "a list of {provider, model}"})
            continue
        for i, choice in enumerate(models):
            where = f"$.{task}[{i}]"
            if not isinstance(choice, dict) or set(choice) != {"provider", "model"}:
                problems.append({"path": where, "message": "expected {provider, model}"})
            elif choice["provider"] not in PROVIDERS or choice["provider"] == "baseline":
                problems.append(
                    {
                        "path": f"{where}.provider",
                        "message": f"unknown provider {choice['provider']!r}",
                    }
                )
            elif not pricing.is_priced(choice["provider"], choice["model"]):
                problems.append(
                    {"path": f"{where}.model", "message": f"no price for {choice['model']!r}"}
                )
    if problems:
        raise ValidationFailed(f"invalid AI overrides ({len(problems)} problems)", details=problems)
    return overrides
