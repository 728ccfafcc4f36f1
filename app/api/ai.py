"""AI usage, budget, providers and settings in GraphQL: `aiUsage`, `aiUsageSummary`,
`aiProviders`, `aiSettings`, `setBudget`, `updateAiSettings`, and `viewer.budget`. The types
they return are app/api/ai_types.py (imported here: `strawberry.lazy("app.api.ai")` finds
them in this module too)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, cast

import strawberry
from strawberry.scalars import JSON

from app.ai import routing
from app.ai.budget import BudgetLedger
from app.ai.health import read_snapshots
from app.ai.model_check import read_check
from app.ai.repository import AiRepository
from app.ai.service import AiService, max_budget
from app.ai_catalog import Catalog
from app.api.ai_types import (
    AiCatalog,
    AiProviderStatus,
    AiSettings,
    AiUsageBucket,
    AiUsageFilter,
    AiUsageGroup,
    AiUsageRecord,
    Budget,
    CatalogModel,
    ModelRoute,
    TierRoute,
)
from app.api.context import Context
from app.api.errors import ForbiddenError, ValidationError
from app.api.relay import Connection, from_global_id
from app.errors import ValidationFailed
from app.pagination import check_first, decode_cursor, encode_cursor
from app.settings import Settings

SetBudgetResult = Annotated[
    Budget | ValidationError | ForbiddenError, strawberry.union("SetBudgetResult")
]
UpdateAiSettingsResult = Annotated[
    AiSettings | ValidationError | ForbiddenError, strawberry.union("UpdateAiSettingsResult")
]


async def budget_of(info: strawberry.Info[Context, None], tenant_id: uuid.UUID) -> Budget:
    ctx = info.context
    async with ctx.session() as s:
        tenant = await AiService(s).tenant_ai(tenant_id, ctx.deps.settings)
    status = await ledger(ctx).status(str(tenant_id), tenant.budget_usd)
    return Budget(
        limit_usd=status.limit_usd,
        spent_usd=status.spent_usd,
        reserved_usd=status.reserved_usd,
        remaining_usd=status.remaining_usd,
        month=status.month,
    )


def ledger(ctx: Context) -> BudgetLedger:
    return BudgetLedger(ctx.deps.redis, soft_threshold=ctx.deps.settings.ai_soft_threshold)


def catalog_of(catalog: Catalog) -> AiCatalog:
    return AiCatalog(
        as_of=catalog.as_of,
        sources=list(catalog.sources),
        models=[
            CatalogModel(
                provider=c.provider,
                model=c.model,
                input_per_mtok_usd=e.price.input_per_mtok,
                output_per_mtok_usd=e.price.output_per_mtok,
                cached_input_per_mtok_usd=e.price.cached_input_per_mtok,
                cheaper=ModelRoute(provider=e.cheaper.provider, model=e.cheaper.model)
                if e.cheaper
                else None,
            )
            for c, e in sorted(catalog.models.items(), key=lambda item: str(item[0]))
        ],
    )


async def settings_of(info: strawberry.Info[Context, None], tenant_id: uuid.UUID) -> AiSettings:
    catalog = info.context.deps.settings.catalog()
    async with info.context.session() as s:
        tenant = await AiService(s).tenant_ai(tenant_id, info.context.deps.settings)
    return AiSettings(
        enabled=tenant.enabled,
        budget_limit_usd=tenant.budget_usd,
        budget_max_usd=max_budget(tenant.tier, info.context.deps.settings),
        overrides=cast(JSON, tenant.overrides),
        allowed_models=[
            ModelRoute(provider=c.provider, model=c.model)
            for c in routing.allowed_models(tenant.tier, catalog)
        ],
        tier_table=[
            TierRoute(tier=r["tier"], task=r["task"], models=[ModelRoute(**m) for m in r["models"]])
            for r in routing.table(catalog)
        ],
        catalog=catalog_of(catalog),
    )


@strawberry.type
class AiQuery:
    @strawberry.field(description="The tenant's AI calls, newest first.")
    async def ai_usage(
        self,
        info: strawberry.Info[Context, None],
        filter: AiUsageFilter | None = None,
        first: int | None = 20,
        after: str | None = None,
    ) -> Connection[AiUsageRecord]:
        principal = info.context.principal()
        limit = check_first(first)
        filters: dict[str, Any] = {}
        if filter is not None:
            filters = {k: v for k, v in vars(filter).items() if v is not None}
            if "execution_id" in filters:
                filters["execution_id"] = from_global_id(filters["execution_id"], "Execution")[1]
        async with info.context.session() as s:
            rows = await AiRepository(s).list_usage(
                principal.tenant_id, filters, limit + 1, decode_cursor(after, "datetime", "int")
            )
        items = rows[:limit]
        return Connection.build(
            [AiUsageRecord.from_model(r) for r in items],
            [encode_cursor([r.at.isoformat(), r.id]) for r in items],
            len(rows) > limit,
            after is not None,
        )

    @strawberry.field(description="Calls, tokens, cost, savings, cache hit and fallback rates.")
    async def ai_usage_summary(
        self,
        info: strawberry.Info[Context, None],
        from_: Annotated[datetime, strawberry.argument(name="from")],
        to: datetime,
        group_by: AiUsageGroup = AiUsageGroup.DAY,
    ) -> list[AiUsageBucket]:
        principal = info.context.principal()
        if to <= from_:
            raise ValidationFailed("`to` must be after `from`")
        async with info.context.session() as s:
            rows = await AiRepository(s).summary(principal.tenant_id, from_, to, group_by.value)
        return [AiUsageBucket(**r) for r in rows]

    @strawberry.field(
        description="Health of each provider/model as the AI workers see it, and every model "
        "the catalogue routes to with whether its provider lists it (the model check)."
    )
    async def ai_providers(self, info: strawberry.Info[Context, None]) -> list[AiProviderStatus]:
        info.context.principal()
        deps = info.context.deps
        rows = {(r["provider"], r["model"]): r for r in await read_snapshots(deps.redis)}
        check = await read_check(deps.redis)
        listed: dict[tuple[str, str], bool] = {}
        for p in check.providers if check else []:
            if p.error is None:
                listed.update({(p.provider, m): m not in p.missing for m in p.configured})
        configured = {
            (c.provider, c.model)
            for c in deps.settings.catalog().configured_models()
            if _has_key(deps.settings, c.provider)
        }
        status = {"CLOSED": "UP", "HALF_OPEN": "DEGRADED", "OPEN": "DOWN"}
        result = []
        for key in sorted(set(rows) | configured):
            r = rows.get(key, {})
            state, reason = str(r.get("state", "CLOSED")), r.get("unavailable")
            result.append(
                AiProviderStatus(
                    name=key[0],
                    model=key[1],
                    status="UNAVAILABLE" if reason else status.get(state, "UNKNOWN"),
                    breaker_state=state,
                    error_rate=float(r.get("error_rate", 0.0)),
                    p95_latency_ms=float(r.get("p95_latency_ms", 0.0)),
                    calls=int(r.get("calls", 0)),
                    unavailable_reason=reason,
                    listed=listed.get(key),
                    configured=key in configured,
                )
            )
        return result

    @strawberry.field(description="The tier-to-model table and this tenant's overrides.")
    async def ai_settings(self, info: strawberry.Info[Context, None]) -> AiSettings:
        principal = info.context.principal()
        return await settings_of(info, principal.tenant_id)


@strawberry.input
class UpdateAiSettingsInput:
    enabled: bool | None = None
    overrides: JSON | None = strawberry.field(
        default=None, description="{task: [{provider, model}, ...]}; {} clears them."
    )


@strawberry.type
class AiMutation:
    @strawberry.mutation(
        description="Set the monthly AI budget in USD (admin), at most the tier's maximum "
        "(aiSettings.budgetMaxUsd); null: tier default."
    )
    async def set_budget(
        self, info: strawberry.Info[Context, None], limit_usd: Decimal | None
    ) -> SetBudgetResult:
        ctx = info.context
        principal = ctx.principal()
        async with ctx.session() as s:
            await AiService(s).set_budget(
                principal, None if limit_usd is None else str(limit_usd), ctx.deps.settings
            )
            await s.commit()
        return await budget_of(info, principal.tenant_id)

    @strawberry.mutation(
        description="Switch AI on or off and override models per task (admin), with models "
        "from aiSettings.allowedModels only."
    )
    async def update_ai_settings(
        self, info: strawberry.Info[Context, None], input: UpdateAiSettingsInput
    ) -> UpdateAiSettingsResult:
        ctx = info.context
        principal = ctx.principal()
        if input.overrides is not None and not isinstance(input.overrides, dict):
            raise ValidationFailed("overrides must be an object")
        async with ctx.session() as s:
            await AiService(s).update_settings(
                principal,
                enabled=input.enabled,
                overrides=input.overrides,  # type: ignore[arg-type]
                catalog=ctx.deps.settings.catalog(),
            )
            await s.commit()
        return await settings_of(info, principal.tenant_id)


def _has_key(settings: Settings, provider: str) -> bool:
    """Whether the deployment configures `provider` (its API key is set)."""
    return bool(getattr(settings, f"{provider}_api_key", None))
