"""SQL for resource usage: per step of one execution, or of a template's runs in a window.

What is read, and where it comes from:
- wall time: executions.started_at -> finished_at (a run still going: until now);
- activity time by step and a step's runs: its STEP_STARTED events, each paired (by seq, in
  the same step) with the STEP_COMPLETED or STEP_FAILED that follows it; a step run again by
  retryExecution has a STEP_STARTED per run;
- AI calls, tokens and cost: ai_usage rows of the runs, per step (a fan-out item's `step[i]`
  counted under its step);
- bytes written, emails sent, HTTP calls: the `usage` a STEP_COMPLETED event carries
  (app/executions/step_usage.py). Steps completed before it was recorded have none: their
  figures are unknown, so `recorded` counts the completions that had one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Select, and_, cast, func, select, true
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import AiUsage, Execution, ExecutionEvent, StepAttempt, StepUsageRollup
from app.models.states import EventType

RECORDED = ("bytes_written", "emails_sent", "http_calls")
# Integer figures a step's rollup rows sum ("attempts" is StepFigures.runs).
SUMMED = (
    "attempts",
    "retries",
    "completed",
    "recorded",
    *RECORDED,
    "ai_calls",
    "ai_input_tokens",
    "ai_output_tokens",
)


@dataclass(frozen=True)
class StepFigures:
    step_id: str
    activity: str | None = None
    first: int = 0  # the lowest seq of its events: steps are listed in the order they ran
    runs: int = 0  # STEP_STARTED events
    retries: int = 0  # Temporal's retries of the step's activity (step_attempts)
    completed: int = 0
    recorded: int = 0  # completions that recorded their usage
    active_seconds: float = 0.0  # summed over the runs that ended
    bytes_written: int = 0
    emails_sent: int = 0
    http_calls: int = 0
    ai_calls: int = 0
    ai_input_tokens: int = 0
    ai_output_tokens: int = 0
    ai_cost_usd: Decimal = Decimal(0)


@dataclass(frozen=True)
class RunFigures:
    executions: int = 0
    finished: int = 0
    wall_seconds: float = 0.0  # summed; an unfinished run counts until now
    wall_p50_seconds: float | None = None  # of finished runs
    wall_p95_seconds: float | None = None


class UsageRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def record_attempt(self, execution_id: uuid.UUID, step_id: str, attempt: int) -> None:
        """Keep the highest attempt seen of a step's activity (retried attempts may overlap
        when one timed out: the highest wins)."""
        row = pg_insert(StepAttempt).values(
            execution_id=execution_id, step_id=step_id, attempts=attempt
        )
        await self.session.execute(
            row.on_conflict_do_update(
                index_elements=["execution_id", "step_id"],
                set_={"attempts": func.greatest(StepAttempt.attempts, row.excluded.attempts)},
            )
        )

    async def retries_by_step(self, runs: Select[Any]) -> dict[str, int]:
        """Temporal's retries of each step's activity in these runs (attempts beyond the
        first; a fan-out's items summed under their step)."""
        run = runs.subquery("run")
        step = func.regexp_replace(StepAttempt.step_id, r"\[\d+\]$", "")
        rows = await self.session.execute(
            select(step.label("step"), func.sum(StepAttempt.attempts - 1).label("retries"))
            .select_from(run)
            .join(StepAttempt, StepAttempt.execution_id == run.c.id)
            .group_by(step)
        )
        return {r.step: int(r.retries) for r in rows}

    @staticmethod
    def one(tenant_id: uuid.UUID, execution_id: uuid.UUID) -> list[ColumnElement[bool]]:
        return [Execution.tenant_id == tenant_id, Execution.id == execution_id]

    @staticmethod
    def window(
        tenant_id: uuid.UUID, template_id: uuid.UUID, since: datetime, until: datetime
    ) -> list[ColumnElement[bool]]:
        return [
            Execution.tenant_id == tenant_id,
            Execution.template_id == template_id,
            Execution.created_at >= since,
            Execution.created_at < until,
        ]

    async def runs(self, where: list[ColumnElement[bool]]) -> RunFigures:
        end = func.coalesce(Execution.finished_at, func.now())
        wall = func.extract("epoch", end - Execution.started_at)
        done = func.extract("epoch", Execution.finished_at - Execution.started_at)
        row = (
            await self.session.execute(
                select(
                    func.count(),
                    func.count(Execution.finished_at),
                    func.coalesce(func.sum(wall), 0),
                    func.percentile_cont(0.5).within_group(done),
                    func.percentile_cont(0.95).within_group(done),
                ).where(*where)
            )
        ).one()
        return RunFigures(
            executions=int(row[0]),
            finished=int(row[1]),
            wall_seconds=float(row[2]),
            wall_p50_seconds=None if row[3] is None else float(row[3]),
            wall_p95_seconds=None if row[4] is None else float(row[4]),
        )

    async def steps(
        self, tenant_id: uuid.UUID, where: list[ColumnElement[bool]]
    ) -> list[StepFigures]:
        """Per step of the matching runs, in the order steps first started."""
        runs = select(Execution.id).where(*where)
        rows = (await self.session.execute(self.step_aggregates(runs).order_by("first"))).all()
        ai = await self._ai_by_step(tenant_id, runs)
        retries = await self.retries_by_step(runs)
        out = []
        for r in rows:
            calls, tokens_in, tokens_out, cost = ai.pop(r.step_id, (0, 0, 0, Decimal(0)))
            out.append(
                StepFigures(
                    step_id=r.step_id,
                    activity=r.activity,
                    first=int(r.first),
                    runs=int(r.runs),
                    retries=retries.get(r.step_id, 0),
                    completed=int(r.completed),
                    recorded=int(r.recorded),
                    active_seconds=float(r.active),
                    bytes_written=int(r.bytes_written),
                    emails_sent=int(r.emails_sent),
                    http_calls=int(r.http_calls),
                    ai_calls=calls,
                    ai_input_tokens=tokens_in,
                    ai_output_tokens=tokens_out,
                    ai_cost_usd=cost,
                )
            )
        # AI calls outside any step event (none today; kept so that no cost goes missing).
        for step_id, (calls, tokens_in, tokens_out, cost) in ai.items():
            out.append(
                StepFigures(
                    step_id=step_id,
                    ai_calls=calls,
                    ai_input_tokens=tokens_in,
                    ai_output_tokens=tokens_out,
                    ai_cost_usd=cost,
                )
            )
        return out

    async def rolled_steps(
        self, tenant_id: uuid.UUID, template_id: uuid.UUID, first: date, end: date
    ) -> list[StepFigures]:
        """Per step, the rolled-up days [first, end) of the tenant's runs of the template."""
        r = StepUsageRollup
        rows = await self.session.execute(
            select(
                r.step_id,
                func.max(r.activity).label("activity"),
                func.min(r.first_seq).label("first"),
                *(
                    func.sum(getattr(r, name)).label(name)
                    for name in (*SUMMED, "active_seconds", "ai_cost_usd")
                ),
            )
            .where(r.tenant_id == tenant_id, r.template_id == template_id)
            .where(r.day >= first, r.day < end)
            .group_by(r.step_id)
        )
        return [
            StepFigures(
                step_id=row.step_id,
                activity=row.activity,
                first=int(row.first),
                active_seconds=float(row.active_seconds),
                ai_cost_usd=Decimal(row.ai_cost_usd),
                **{"runs" if n == "attempts" else n: int(getattr(row, n)) for n in SUMMED},
            )
            for row in rows
        ]

    def step_aggregates(self, runs: Any, *keys: str) -> Select[Any]:
        """Per step (and per the runs' `keys` columns) of `runs` (a SELECT of execution ids
        and those columns): attempts, completions, recorded usage, active time."""
        events = self._events(runs, keys).subquery("events")
        started = events.c.type == EventType.STEP_STARTED.value
        ended = and_(~started, events.c.prev_type == EventType.STEP_STARTED.value)
        completed = events.c.type == EventType.STEP_COMPLETED.value

        def used(name: str) -> ColumnElement[Any]:
            value = cast(events.c.payload["usage"][name].astext, BigInteger)
            return func.coalesce(func.sum(value), 0)

        group = [events.c[k] for k in keys]
        return select(
            *group,
            events.c.step_id,
            func.max(events.c.message).filter(started).label("activity"),
            func.min(events.c.seq).label("first"),
            func.count().filter(started).label("runs"),
            func.count().filter(completed).label("completed"),
            func.count().filter(completed, events.c.payload.has_key("usage")).label("recorded"),
            func.coalesce(
                func.sum(func.extract("epoch", events.c.at - events.c.prev_at)).filter(ended), 0
            ).label("active"),
            *(used(name).label(name) for name in RECORDED),
        ).group_by(*group, events.c.step_id)

    def ai_aggregates(self, tenant_id: uuid.UUID | None, runs: Any, *keys: str) -> Select[Any]:
        """Per step (a fan-out item's `step[i]` under `step`) and `keys` of `runs`: AI calls,
        tokens and cost."""
        step = func.regexp_replace(func.coalesce(AiUsage.step_id, ""), r"\[\d+\]$", "")
        run = runs.subquery("run")
        where = [] if tenant_id is None else [AiUsage.tenant_id == tenant_id]
        group = [run.c[k] for k in keys]
        return (
            select(
                *group,
                step.label("step"),
                func.count().label("calls"),
                func.coalesce(func.sum(AiUsage.input_tokens), 0).label("tokens_in"),
                func.coalesce(func.sum(AiUsage.output_tokens), 0).label("tokens_out"),
                func.coalesce(func.sum(AiUsage.cost_usd), 0).label("cost"),
            )
            .select_from(run)
            .join(AiUsage, AiUsage.execution_id == run.c.id)
            .where(*where)
            .group_by(*group, step)
        )

    @staticmethod
    def _events(runs: Any, keys: tuple[str, ...] = ()) -> Any:
        """The runs' step start/end events, each with the type and time of the event before
        it in the same step (a start's end follows it). Read per run (LATERAL, by the
        (execution_id, seq) index): joined as a set, PostgreSQL scanned all events."""
        run = runs.subquery("run")
        by_seq = ExecutionEvent.seq
        step = ExecutionEvent.step_id
        per_run = (
            select(
                ExecutionEvent.step_id,
                ExecutionEvent.type,
                ExecutionEvent.seq,
                ExecutionEvent.at,
                ExecutionEvent.message,
                ExecutionEvent.payload,
                func.lag(ExecutionEvent.type)
                .over(partition_by=step, order_by=by_seq)
                .label("prev_type"),
                func.lag(ExecutionEvent.at)
                .over(partition_by=step, order_by=by_seq)
                .label("prev_at"),
            )
            .where(
                ExecutionEvent.execution_id == run.c.id,
                ExecutionEvent.step_id.is_not(None),
                ExecutionEvent.type.in_(
                    (
                        EventType.STEP_STARTED.value,
                        EventType.STEP_COMPLETED.value,
                        EventType.STEP_FAILED.value,
                    )
                ),
            )
            .lateral("per_run")
        )
        return select(*(run.c[k] for k in keys), per_run).select_from(run).join(per_run, true())

    async def _ai_by_step(
        self, tenant_id: uuid.UUID, runs: Select[Any]
    ) -> dict[str, tuple[int, int, int, Decimal]]:
        rows = await self.session.execute(self.ai_aggregates(tenant_id, runs))
        return {
            r.step: (int(r.calls), int(r.tokens_in), int(r.tokens_out), Decimal(r.cost))
            for r in rows
        }
