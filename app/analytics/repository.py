"""SQL for impact analytics: a template's runs in a window, split into AI-enhanced and baseline."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, case, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.models import Execution, ExecutionEvent

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


def _points_recorded() -> ColumnElement[bool]:
    """The run recorded its enhancement points (every run since `ai.*` steps are points too)."""
    return exists().where(
        ExecutionEvent.execution_id == Execution.id, ExecutionEvent.type == "STEP_ENHANCED"
    )


def _ai_applied() -> ColumnElement[bool]:
    """A point of the execution used AI output, on a step that did not refuse it (a refused
    step reruns on its plain input: a STEP_ENHANCED record with fallback STEP_REJECTED)."""
    point, refusal, restart = (aliased(ExecutionEvent) for _ in range(3))
    # The refusal must follow the point in the same run of the step (a retried execution
    # starts the step again: a STEP_STARTED in between).
    restarted = (
        exists()
        .where(
            restart.execution_id == point.execution_id,
            restart.step_id == point.step_id,
            restart.type == "STEP_STARTED",
            restart.seq > point.seq,
            restart.seq < refusal.seq,
        )
        .correlate(point, refusal)
    )
    refused = (
        exists()
        .where(
            refusal.execution_id == point.execution_id,
            refusal.step_id == point.step_id,
            refusal.seq > point.seq,
            refusal.type == "STEP_ENHANCED",
            # app.executions.events.refused_tasks, in SQL
            refusal.payload["enhancement"]["fallback"].astext == "STEP_REJECTED",
            refusal.payload["enhancement"].has_key("tasks"),
            ~restarted,
        )
        .correlate(point)
    )
    return exists().where(
        point.execution_id == Execution.id,
        point.type == "STEP_ENHANCED",
        point.payload["enhancement"]["decision"].astext == "AI",
        ~refused,
    )


class ImpactRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def template_groups(
        self, tenant_id: uuid.UUID, template_id: uuid.UUID, since: datetime, until: datetime
    ) -> dict[bool, GroupStats]:
        """Stats of the tenant's runs of the template created in [since, until), keyed by
        whether the run was enhanced; a group without runs is absent. One statement over the
        runs, with the AI figures each row keeps (alembic 0022)."""
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
                func.coalesce(Execution.ai_cost_usd, 0).label("cost"),
                # Runs from before points were recorded: a model answered one of its calls.
                case(
                    (_points_recorded(), _ai_applied()),
                    else_=func.coalesce(Execution.ai_answered_calls > 0, False),
                ).label("enhanced"),
            )
            .select_from(Execution)
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
