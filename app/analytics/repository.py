"""SQL for impact analytics: a template's runs in a window, split into AI-enhanced and baseline."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, case, exists, func, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import AiUsage, Execution, ExecutionEvent

FINISHED = ("COMPLETED", "FAILED", "CANCELLED")


@dataclass(frozen=True)
class GroupStats:
    """Counts, duration percentiles (seconds) and AI cost of one group of runs."""

    executions: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    median_seconds: float | None = None
    p95_seconds: float | None = None
    ai_cost_usd: Decimal = Decimal(0)


def _ai_decided() -> ColumnElement[bool]:
    """An enhancement point of the run chose AI (recorded as a STEP_ENHANCED event)."""
    decision = ExecutionEvent.payload["enhancement"]["decision"].astext
    return exists().where(
        ExecutionEvent.execution_id == Execution.id,
        ExecutionEvent.type == "STEP_ENHANCED",
        decision == "AI",
    )


class ImpactRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def template_groups(
        self, tenant_id: uuid.UUID, template_id: uuid.UUID, since: datetime, until: datetime
    ) -> dict[bool, GroupStats]:
        """Stats of the tenant's runs of the template created in [since, until), keyed by
        whether the run was enhanced; a group without runs is absent. One statement: each run's
        AI usage is summed in a lateral subquery, then the runs are aggregated per group."""
        usage = (
            select(
                func.coalesce(func.sum(AiUsage.cost_usd), 0).label("cost"),
                # ai.* steps call models directly (document-processing): a non-baseline row.
                func.coalesce(func.bool_or(AiUsage.provider != "baseline"), False).label("ai"),
            )
            .where(AiUsage.execution_id == Execution.id, AiUsage.tenant_id == tenant_id)
            .lateral("usage")
        )
        seconds = case(
            (
                Execution.status.in_(FINISHED),
                func.extract("epoch", Execution.finished_at - Execution.started_at),
            )
        )
        runs = (
            select(
                Execution.status,
                seconds.label("seconds"),
                usage.c.cost,
                or_(usage.c.ai, _ai_decided()).label("enhanced"),
            )
            .select_from(Execution)
            .join(usage, true())
            .where(
                Execution.tenant_id == tenant_id,
                Execution.template_id == template_id,
                Execution.created_at >= since,
                Execution.created_at < until,
            )
            .subquery("runs")
        )

        def with_status(status: str) -> ColumnElement[Any]:
            return func.count().filter(runs.c.status == status)

        query = select(
            runs.c.enhanced,
            func.count().label("executions"),
            with_status("COMPLETED").label("completed"),
            with_status("FAILED").label("failed"),
            with_status("CANCELLED").label("cancelled"),
            # percentile_cont skips NULLs: runs not finished (or never started) have none.
            func.percentile_cont(0.5).within_group(runs.c.seconds).label("median"),
            func.percentile_cont(0.95).within_group(runs.c.seconds).label("p95"),
            func.sum(runs.c.cost).label("cost"),
        ).group_by(runs.c.enhanced)
        rows = (await self.session.execute(query)).all()
        return {
            bool(r.enhanced): GroupStats(
                executions=int(r.executions),
                completed=int(r.completed),
                failed=int(r.failed),
                cancelled=int(r.cancelled),
                median_seconds=None if r.median is None else float(r.median),
                p95_seconds=None if r.p95 is None else float(r.p95),
                ai_cost_usd=Decimal(r.cost),
            )
            for r in rows
        }
