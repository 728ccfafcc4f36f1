"""SQL for the AI layer: usage rows, per-tenant AI settings, and the usage reports."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Integer, Select, case, cast, extract, func, literal_column, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import AiUsage, Execution, Template, TenantAiSettings
from app.models.base import utcnow

GROUPS = {
    "DAY": func.date_trunc("day", AiUsage.at),
    "MODEL": AiUsage.model,
    "PROVIDER": AiUsage.provider,
    "TASK": AiUsage.task,
    "TEMPLATE": Template.name,
}


class AiRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add_usage(self, usage: AiUsage) -> AiUsage:
        """Insert a usage row; a paid, validated call with a fingerprint gets the seconds since
        the previous such call of its input (`repeat_gap_seconds`, aiRecommendations), found by
        a subquery of the INSERT itself (no extra round trip)."""
        if usage.at is None:
            usage.at = utcnow()
        if (
            usage.input_hash is not None
            and usage.outcome == "OK"
            and not usage.cached
            and usage.provider != "baseline"
        ):
            previous = AiUsage.__table__.alias("previous")
            usage.repeat_gap_seconds = (  # type: ignore[assignment]
                select(
                    cast(func.floor(extract("epoch", usage.at - func.max(previous.c.at))), Integer)
                )
                .where(
                    previous.c.tenant_id == usage.tenant_id,
                    previous.c.task == usage.task,
                    previous.c.model == usage.model,
                    previous.c.input_hash == usage.input_hash,
                    previous.c.at <= usage.at,
                    # ix_ai_usage_repeats' predicate, spelled as in the index and inline: a
                    # prepared statement's generic plan cannot match `outcome = $1` to it.
                    previous.c.input_hash.is_not(None),
                    ~previous.c.cached,
                    previous.c.outcome == literal_column("'OK'"),
                )
                .scalar_subquery()
            )
        self.session.add(usage)
        await self.session.flush()
        return usage

    async def settings_for(self, tenant_id: uuid.UUID) -> TenantAiSettings | None:
        return await self.session.get(TenantAiSettings, tenant_id)

    async def upsert_settings(self, tenant_id: uuid.UUID) -> TenantAiSettings:
        row = await self.settings_for(tenant_id)
        if row is None:
            row = TenantAiSettings(tenant_id=tenant_id, enabled=True, model_overrides={})
            self.session.add(row)
            await self.session.flush()
        return row

    async def tenants_with_usage(self, since: datetime) -> list[uuid.UUID]:
        rows = await self.session.scalars(
            select(AiUsage.tenant_id).where(AiUsage.at >= since).distinct()
        )
        return list(rows)

    def _filtered(self, tenant_id: uuid.UUID, filters: dict[str, Any]) -> Select[Any]:
        query = select(AiUsage).where(AiUsage.tenant_id == tenant_id)
        for name in ("task", "provider", "model", "outcome", "fallback_reason"):
            if filters.get(name) is not None:
                query = query.where(getattr(AiUsage, name) == filters[name])
        if filters.get("execution_id") is not None:
            query = query.where(AiUsage.execution_id == filters["execution_id"])
        if filters.get("cached") is not None:
            query = query.where(AiUsage.cached.is_(filters["cached"]))
        if filters.get("since") is not None:
            query = query.where(AiUsage.at >= filters["since"])
        if filters.get("until") is not None:
            query = query.where(AiUsage.at < filters["until"])
        return query

    async def list_usage(
        self, tenant_id: uuid.UUID, filters: dict[str, Any], limit: int, after: list[Any] | None
    ) -> list[AiUsage]:
        query = self._filtered(tenant_id, filters)
        if after is not None:
            query = query.where(
                tuple_(AiUsage.at, AiUsage.id) < (datetime.fromisoformat(after[0]), int(after[1]))
            )
        query = query.order_by(AiUsage.at.desc(), AiUsage.id.desc()).limit(limit)
        return list(await self.session.scalars(query))

    async def usage_for_executions(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, list[AiUsage]]:
        rows = await self.session.scalars(
            select(AiUsage).where(AiUsage.execution_id.in_(ids)).order_by(AiUsage.at, AiUsage.id)
        )
        found: dict[uuid.UUID, list[AiUsage]] = {i: [] for i in ids}
        for row in rows:
            assert row.execution_id is not None
            found[row.execution_id].append(row)
        return found

    async def summary(
        self, tenant_id: uuid.UUID, since: datetime, until: datetime, group_by: str
    ) -> list[dict[str, Any]]:
        key = GROUPS[group_by]
        query = (
            select(
                key.label("key"),
                func.count().label("calls"),
                func.coalesce(func.sum(AiUsage.input_tokens + AiUsage.output_tokens), 0).label(
                    "tokens"
                ),
                func.coalesce(func.sum(AiUsage.cost_usd), 0).label("cost"),
                func.coalesce(func.sum(AiUsage.saved_usd), 0).label("saved"),
                func.avg(case((AiUsage.cached, 1.0), else_=0.0)).label("hit_rate"),
                func.avg(case((AiUsage.fallback_reason.is_not(None), 1.0), else_=0.0)).label(
                    "fallback_rate"
                ),
            )
            .select_from(AiUsage)
            .where(AiUsage.tenant_id == tenant_id, AiUsage.at >= since, AiUsage.at < until)
            .group_by(key)
            .order_by(key)
        )
        if group_by == "TEMPLATE":
            query = query.outerjoin(Execution, Execution.id == AiUsage.execution_id).outerjoin(
                Template, Template.id == Execution.template_id
            )
        rows = (await self.session.execute(query)).all()
        return [
            {
                "key": (r.key.date().isoformat() if isinstance(r.key, datetime) else r.key)
                or "(none)",
                "calls": int(r.calls),
                "tokens": int(r.tokens),
                "cost_usd": Decimal(r.cost),
                "saved_usd": Decimal(r.saved),
                "cache_hit_rate": float(r.hit_rate or 0),
                "fallback_rate": float(r.fallback_rate or 0),
            }
            for r in rows
        ]
