"""SQL of aiRecommendations (app/analytics/recommendations.py): three aggregate reads of one
tenant's AI usage, each returning a handful of grouped rows whatever the volume.

- repeat_gaps: the window's repeats (ai_usage rows with repeat_gap_seconds, set when the row
  was added) whose gap passed the task's TTL in force, counted and costed per task and gap
  bucket: whole days from the ai_usage_repeats_daily rollup, partial days from the rows.
- window_stats: per month, task, provider and model, the window's validated / invalid / paid
  calls, paid cost and BUDGET fallbacks. Whole UTC days come from the ai_usage_daily rollup
  (0017); the partial days at the window's edges from ai_usage itself (ix_ai_usage_tenant_at),
  so the figures are exact for any `from` and `to`.
- month_totals: whole UTC months from the rollup: spend and paid calls per task.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Date, case, cast, func, literal, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import AiUsage, AiUsageDaily, AiUsageRepeatsDaily
from app.models.ai_usage import REPEAT_GAP_BOUNDS


@dataclass(frozen=True)
class GapBucket:
    """Repeats of a task that the TTL in force missed, with gap <= REPEAT_GAP_BOUNDS[bucket]
    (and above the bound before; bucket == len(REPEAT_GAP_BOUNDS): longer than every bound)."""

    task: str
    bucket: int
    repeats: int
    cost_usd: Decimal


@dataclass(frozen=True)
class WindowStats:
    """One month, task, provider and model of the window."""

    month: date  # its first day (UTC)
    task: str
    provider: str
    model: str
    passed: int  # a model's output validated (outcome OK, not a cache hit)
    invalid: int  # a model paid twice for invalid output: the baseline answered
    paid: int  # a model answered (passed + invalid)
    paid_cost_usd: Decimal
    budget_fallbacks: int


@dataclass(frozen=True)
class MonthTotal:
    month: date
    task: str
    cost_usd: Decimal  # everything recorded (what the budget counted)
    paid: int
    paid_cost_usd: Decimal


def _day_bounds(since: datetime, until: datetime) -> tuple[date, date] | None:
    """The whole UTC days [first, end) inside [since, until), or None if there are none."""
    first = since.astimezone(UTC).date()
    if datetime.combine(first, time(), UTC) < since:
        first += timedelta(days=1)
    end = until.astimezone(UTC).date()
    return (first, end) if first < end else None


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


class RecommendationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def repeat_gaps(
        self, tenant_id: uuid.UUID, since: datetime, until: datetime, ttls: Mapping[str, int]
    ) -> list[GapBucket]:
        """The window's missed repeats per task and gap bucket (REPEAT_GAP_BOUNDS): those the
        task's TTL in force (`ttls`, seconds, every task) did not cover (gap > TTL, or any gap
        with the cache off). Whole days come from ai_usage_repeats_daily for tasks whose TTL is
        a bucket bound (the built-in ones are); the window's partial days, and every day of a
        task with another TTL, from the rows (ix_ai_usage_repeat_gaps)."""
        gap = AiUsage.repeat_gap_seconds
        days = _day_bounds(since, until)
        # task -> the first bucket it missed, for the tasks the rollup can answer
        rolled = {
            task: 0 if ttl <= 0 else REPEAT_GAP_BOUNDS.index(ttl) + 1
            for task, ttl in ttls.items()
            if days is not None and (ttl <= 0 or ttl in REPEAT_GAP_BOUNDS)
        }
        parts: list[Any] = []
        if rolled and days is not None:
            first, end = days
            parts.append(
                select(
                    AiUsageRepeatsDaily.task,
                    AiUsageRepeatsDaily.bucket,
                    AiUsageRepeatsDaily.repeats,
                    AiUsageRepeatsDaily.cost_usd,
                ).where(
                    AiUsageRepeatsDaily.tenant_id == tenant_id,
                    AiUsageRepeatsDaily.day >= first,
                    AiUsageRepeatsDaily.day < end,
                    or_(
                        *(
                            (AiUsageRepeatsDaily.task == task)
                            & (AiUsageRepeatsDaily.bucket >= bucket)
                            for task, bucket in rolled.items()
                        )
                    ),
                )
            )
        # What the rows answer, as branches that each hold rows: an index range of (tenant, at)
        # apiece (one OR of an empty branch makes the planner scan the tenant's every row).
        window = (AiUsage.at >= since) & (AiUsage.at < until)
        branches: list[ColumnElement[bool]] = [window]
        if days is not None and rolled:
            edges = [(since, _midnight(days[0])), (_midnight(days[1]), until)]
            branches = [
                AiUsage.task.in_(list(rolled)) & (AiUsage.at >= a) & (AiUsage.at < b)
                for a, b in edges
                if a < b
            ]
            if others := [task for task in ttls if task not in rolled]:
                branches.append(AiUsage.task.in_(others) & window)
        ttl = case(dict(ttls), value=AiUsage.task, else_=0) if ttls else literal(0)
        bucket = case(
            *((gap <= seconds, index) for index, seconds in enumerate(REPEAT_GAP_BOUNDS)),
            else_=len(REPEAT_GAP_BOUNDS),
        )
        if branches:
            parts.append(
                select(AiUsage.task, bucket, func.count(), func.sum(AiUsage.cost_usd))
                .where(
                    AiUsage.tenant_id == tenant_id,
                    gap.is_not(None),  # ix_ai_usage_repeat_gaps' predicate
                    or_(*branches),
                    (ttl <= 0) | (gap > ttl),
                )
                .group_by(AiUsage.task, bucket)
            )
        if not parts:
            return []
        rows = union_all(*parts).subquery() if len(parts) > 1 else parts[0].subquery()
        task_c, bucket_c, repeats_c, cost_c = rows.c
        query = (
            select(
                task_c.label("task"),
                bucket_c.label("bucket"),
                func.sum(repeats_c).label("repeats"),
                func.coalesce(func.sum(cost_c), 0).label("cost"),
            )
            .group_by(task_c, bucket_c)
            .order_by(task_c, bucket_c)
        )
        return [
            GapBucket(r.task, int(r.bucket), int(r.repeats), Decimal(r.cost))
            for r in (await self.session.execute(query)).all()
        ]

    async def window_stats(
        self, tenant_id: uuid.UUID, since: datetime, until: datetime
    ) -> list[WindowStats]:
        days = _day_bounds(since, until)
        parts: list[Any] = []
        if days is None:
            edges = [(since, until)]
        else:
            first, end = days
            edges = [(since, _midnight(first)), (_midnight(end), until)]
            parts.append(
                select(
                    AiUsageDaily.day,
                    AiUsageDaily.task,
                    AiUsageDaily.provider,
                    AiUsageDaily.model,
                    AiUsageDaily.passed,
                    AiUsageDaily.invalid,
                    AiUsageDaily.paid,
                    AiUsageDaily.paid_cost_usd,
                    AiUsageDaily.budget_fallbacks,
                ).where(
                    AiUsageDaily.tenant_id == tenant_id,
                    AiUsageDaily.day >= first,
                    AiUsageDaily.day < end,
                )
            )
        edges = [(a, b) for a, b in edges if a < b]
        if edges:
            model_paid = (AiUsage.provider != "baseline") & AiUsage.cached.is_(False)
            day = cast(func.timezone("UTC", AiUsage.at), Date)
            parts.append(
                select(
                    day,
                    AiUsage.task,
                    AiUsage.provider,
                    AiUsage.model,
                    func.count().filter(model_paid & (AiUsage.outcome == "OK")),
                    func.count().filter(
                        (AiUsage.provider != "baseline")
                        & (AiUsage.fallback_reason == "INVALID_OUTPUT")
                    ),
                    func.count().filter(model_paid),
                    func.coalesce(func.sum(AiUsage.cost_usd).filter(model_paid), 0),
                    func.count().filter(AiUsage.fallback_reason == "BUDGET"),
                )
                .where(
                    AiUsage.tenant_id == tenant_id,
                    or_(*((AiUsage.at >= a) & (AiUsage.at < b) for a, b in edges)),
                )
                .group_by(day, AiUsage.task, AiUsage.provider, AiUsage.model)
            )
        rows = union_all(*parts).subquery() if len(parts) > 1 else parts[0].subquery()
        c = list(rows.c)
        month = cast(func.date_trunc("month", c[0]), Date).label("month")
        query = (
            select(
                month,
                c[1].label("task"),
                c[2].label("provider"),
                c[3].label("model"),
                *(func.sum(col).label(name) for col, name in zip(c[4:], _SUMMED, strict=True)),
            )
            .group_by(month, c[1], c[2], c[3])
            .order_by(month, c[1], c[2], c[3])
        )
        return [
            WindowStats(
                r.month,
                r.task,
                r.provider,
                r.model,
                int(r.passed),
                int(r.invalid),
                int(r.paid),
                Decimal(r.paid_cost),
                int(r.budget_fallbacks),
            )
            for r in (await self.session.execute(query)).all()
        ]

    async def month_totals(self, tenant_id: uuid.UUID, months: Sequence[date]) -> list[MonthTotal]:
        """Whole UTC months (`months`: their first days), per task."""
        if not months:
            return []
        month = cast(func.date_trunc("month", AiUsageDaily.day), Date).label("month")
        query = (
            select(
                month,
                AiUsageDaily.task,
                func.sum(AiUsageDaily.cost_usd).label("cost"),
                func.sum(AiUsageDaily.paid).label("paid"),
                func.sum(AiUsageDaily.paid_cost_usd).label("paid_cost"),
            )
            .where(
                AiUsageDaily.tenant_id == tenant_id,
                AiUsageDaily.day >= min(months),
                AiUsageDaily.day < _next_month(max(months)),
            )
            .group_by(month, AiUsageDaily.task)
            .having(month.in_(list(months)))
            .order_by(month, AiUsageDaily.task)
        )
        return [
            MonthTotal(r.month, r.task, Decimal(r.cost), int(r.paid), Decimal(r.paid_cost))
            for r in (await self.session.execute(query)).all()
        ]


_SUMMED = ("passed", "invalid", "paid", "paid_cost", "budget_fallbacks")


def _next_month(first: date) -> date:
    return date(first.year + 1, 1, 1) if first.month == 12 else date(first.year, first.month + 1, 1)
