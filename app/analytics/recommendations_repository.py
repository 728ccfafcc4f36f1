"""SQL of aiRecommendations (app/analytics/recommendations.py): three aggregate reads of one
tenant's ai_usage rows in a window, each returning a handful of rows whatever the volume.

- repeat_gaps: a tenant's paid, validated calls (outcome OK, not cached) with an input
  fingerprint, each with the time since the previous such call of the same task, model and
  fingerprint (a window function over ix_ai_usage_repeats, which holds them in that order),
  counted per task and per rung of a ladder of cache TTLs: how many repeats a TTL of that rung
  would have answered, and what they cost.
- model_results: per task and model that answered (not the baseline, not cache hits): calls
  whose output passed validation, calls that ended INVALID_OUTPUT, and their cost.
- budget_months: per UTC month that had BUDGET fallbacks in the window: its BUDGET fallbacks
  per task (in the window), and the whole month's recorded spend and paid calls per task.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import case, extract, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import AiUsage


@dataclass(frozen=True)
class GapBucket:
    """Repeats of a task whose gap to the previous paid call of the same input was longer than
    the TTL in force, with gap <= ladder[rung] (rung == len(ladder): longer than every rung)."""

    task: str
    rung: int
    repeats: int
    cost_usd: Decimal


@dataclass(frozen=True)
class ModelResult:
    task: str
    provider: str
    model: str
    passed: int  # output validated (outcome OK)
    invalid: int  # paid, output invalid twice: baseline answered (INVALID_OUTPUT)
    cost_usd: Decimal  # of all those calls


@dataclass(frozen=True)
class BudgetMonth:
    month_start: datetime  # naive, UTC
    spent_usd: Decimal  # every recorded cost of the month (what counted against the budget)
    fallbacks: dict[str, int]  # task -> BUDGET fallbacks in the window in this month
    # task -> (calls a model answered, valid or not, no cache hits; their cost), whole month
    paid: dict[str, tuple[int, Decimal]]


class RecommendationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def repeat_gaps(
        self,
        tenant_id: uuid.UUID,
        since: datetime,
        until: datetime,
        ttls: Mapping[str, int],
        ladder: Sequence[int],
    ) -> list[GapBucket]:
        """Repeats per task and ladder rung, only those the task's TTL in force (`ttls`, seconds;
        a task not named: 0) did not cover."""
        paid = (
            select(
                AiUsage.task,
                AiUsage.model,
                AiUsage.input_hash,
                AiUsage.cost_usd,
                (
                    AiUsage.at
                    - func.lag(AiUsage.at).over(
                        partition_by=(AiUsage.task, AiUsage.model, AiUsage.input_hash),
                        order_by=AiUsage.at,
                    )
                ).label("gap"),
            )
            .where(
                AiUsage.tenant_id == tenant_id,
                AiUsage.input_hash.is_not(None),
                AiUsage.cached.is_(False),
                AiUsage.at >= since,
                AiUsage.at < until,
                AiUsage.outcome == "OK",
            )
            .cte("paid")
        )
        gap_s = extract("epoch", paid.c.gap)
        ttl = case(dict(ttls), value=paid.c.task, else_=0) if ttls else literal(0)
        rung = case(
            *((gap_s <= seconds, index) for index, seconds in enumerate(ladder)),
            else_=len(ladder),
        ).label("rung")
        query = (
            select(
                paid.c.task,
                rung,
                func.count().label("repeats"),
                func.coalesce(func.sum(paid.c.cost_usd), 0).label("cost"),
            )
            .where(paid.c.gap.is_not(None), gap_s > ttl)
            .group_by(paid.c.task, rung)
            .order_by(paid.c.task, rung)
        )
        rows = (await self.session.execute(query)).all()
        return [GapBucket(r.task, int(r.rung), int(r.repeats), Decimal(r.cost)) for r in rows]

    async def model_results(
        self, tenant_id: uuid.UUID, since: datetime, until: datetime
    ) -> list[ModelResult]:
        invalid = AiUsage.fallback_reason == "INVALID_OUTPUT"
        query = (
            select(
                AiUsage.task,
                AiUsage.provider,
                AiUsage.model,
                func.count().filter(AiUsage.outcome == "OK").label("passed"),
                func.count().filter(invalid).label("invalid"),
                func.coalesce(func.sum(AiUsage.cost_usd), 0).label("cost"),
            )
            .where(
                AiUsage.tenant_id == tenant_id,
                AiUsage.at >= since,
                AiUsage.at < until,
                AiUsage.provider != "baseline",
                AiUsage.cached.is_(False),
                (AiUsage.outcome == "OK") | invalid,
            )
            .group_by(AiUsage.task, AiUsage.provider, AiUsage.model)
            .order_by(AiUsage.task, AiUsage.provider, AiUsage.model)
        )
        rows = (await self.session.execute(query)).all()
        return [
            ModelResult(r.task, r.provider, r.model, int(r.passed), int(r.invalid), Decimal(r.cost))
            for r in rows
        ]

    async def budget_months(
        self, tenant_id: uuid.UUID, since: datetime, until: datetime
    ) -> list[BudgetMonth]:
        """The UTC months with BUDGET fallbacks in [since, until), each with its whole
        month's spend (also outside the window: the budget counted it)."""
        month = func.date_trunc("month", func.timezone("UTC", AiUsage.at)).label("month")
        fallback_rows = (
            await self.session.execute(
                select(month, AiUsage.task, func.count().label("n"))
                .where(
                    AiUsage.tenant_id == tenant_id,
                    AiUsage.at >= since,
                    AiUsage.at < until,
                    AiUsage.fallback_reason == "BUDGET",
                )
                .group_by(month, AiUsage.task)
                .order_by(month, AiUsage.task)
            )
        ).all()
        if not fallback_rows:
            return []
        months: dict[datetime, dict[str, int]] = {}
        for r in fallback_rows:
            months.setdefault(r.month, {})[r.task] = int(r.n)
        first, last = min(months), max(months)
        # The month after the last one (UTC): its start ends the spend scan.
        end = (
            last.replace(year=last.year + 1, month=1)
            if last.month == 12
            else last.replace(month=last.month + 1)
        )
        paid = (AiUsage.provider != "baseline") & AiUsage.cached.is_(False)
        spend_rows = (
            await self.session.execute(
                select(
                    month,
                    AiUsage.task,
                    func.coalesce(func.sum(AiUsage.cost_usd), 0).label("spent"),
                    func.count().filter(paid).label("paid"),
                    func.coalesce(func.sum(AiUsage.cost_usd).filter(paid), 0).label("paid_cost"),
                )
                .where(
                    AiUsage.tenant_id == tenant_id,
                    # date_trunc gave naive UTC times: bound the column itself (index range).
                    AiUsage.at >= first.replace(tzinfo=UTC),
                    AiUsage.at < end.replace(tzinfo=UTC),
                )
                .group_by(month, AiUsage.task)
            )
        ).all()
        spent: dict[datetime, Decimal] = {}
        paid_calls: dict[datetime, dict[str, tuple[int, Decimal]]] = {}
        for r in spend_rows:
            spent[r.month] = spent.get(r.month, Decimal(0)) + Decimal(r.spent)
            if r.paid:
                paid_calls.setdefault(r.month, {})[r.task] = (int(r.paid), Decimal(r.paid_cost))
        return [
            BudgetMonth(m, spent.get(m, Decimal(0)), fallbacks, paid_calls.get(m, {}))
            for m, fallbacks in months.items()
        ]
