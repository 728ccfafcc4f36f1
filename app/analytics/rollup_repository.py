"""SQL of the daily rollups (app/models/analytics.py): what one execution contributes to
execution_rollup (shared with the statistics read from execution rows, so both count alike),
step_usage_rollup (from app/analytics/usage_repository.py's step aggregates), and their refresh.

A refresh rebuilds (delete, insert from the executions) whole days of a tenant in both: the
days that became complete since the last refresh (all tenants), and the earlier days of
executions that changed since the last refresh began (a long run that finished, a retried one)
minus a margin for writers whose `updated_at` was set before that moment but committed after it.

Also the tenant comparison's AI spend: whole days from ai_usage_daily (alembic 0017's trigger),
the partial edge days from the ai_usage rows, as executionStats reads executions.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    Date,
    Integer,
    SmallInteger,
    String,
    Uuid,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    tuple_,
    union_all,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.analytics.repository import FINISHED
from app.analytics.usage_repository import UsageRepository
from app.models import (
    AiUsage,
    AiUsageDaily,
    Execution,
    ExecutionRollup,
    RollupState,
    SlaRollupState,
    StepAttempt,
    StepUsageRollup,
    Tenant,
)
from app.models.analytics import ALL_TEMPLATES, DURATION_RATIO, NO_DURATION, UNKNOWN_TIER

# Writers set updated_at before they commit; changes this much older than the last refresh's
# start are looked at again.
CHANGE_MARGIN = timedelta(minutes=5)
# A refresh adds at most this many days to a rollup per transaction (its `complete_until`
# advances after each chunk), so a first fill or a catch-up after an outage commits as it goes
# instead of one statement over every missing day (which outgrew the activity's timeout).
# Sized in days, not rows: a chunk must finish within the activity's 30 minutes (it is not
# started after ROLLUP_BUDGET's 20). Measured ~5 s per million runs of a chunk here (1M runs
# and 10M events over 90 days: 3 chunks of 15-17 s), so about 100M runs a month is the
# ceiling before this wants lowering (or sizing by a row count).
ROLLUP_CHUNK_DAYS = 31
_LOCK = 0x57F5_0A11  # pg advisory lock: one refresh at a time, whoever calls it


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def whole_days(lo: datetime, hi: datetime, complete_until: date | None) -> tuple[date, date] | None:
    """The whole UTC days inside [lo, hi) that a rollup holds (complete before
    `complete_until`; date.max for one kept by a trigger), or None."""
    if complete_until is None:
        return None
    lo, hi = lo.astimezone(UTC), hi.astimezone(UTC)
    first = lo.date() if day_start(lo.date()) == lo else lo.date() + timedelta(days=1)
    end = min(hi.date(), complete_until)
    return (first, end) if first < end else None


def duration_bucket(seconds: ColumnElement[Any]) -> ColumnElement[int]:
    """The bucket of a duration in seconds (NO_DURATION for NULL): floor(log_ratio(s)), with
    durations under a millisecond counted as one."""
    log = func.ln(func.greatest(seconds, 0.001)) / func.ln(DURATION_RATIO)
    return case((seconds.is_(None), NO_DURATION), else_=cast(func.floor(log), SmallInteger))


def run_seconds() -> ColumnElement[Any]:
    """Start-to-finish seconds of a finished run; NULL otherwise."""
    return case(
        (
            Execution.status.in_(FINISHED),
            func.extract("epoch", Execution.finished_at - Execution.started_at),
        )
    )


def ran_ai() -> ColumnElement[Any]:
    """Whether a model answered at least one of the run's AI calls (not the baseline, not a
    fallback): its answered calls, kept on the row by the ai_usage_add_to_run trigger (alembic
    0022); NULL (not counted) for a run without AI usage."""
    return Execution.ai_answered_calls > 0


State = TypeVar("State", RollupState, SlaRollupState)


async def save_rollup_state(
    session: AsyncSession,
    model: type[State],
    complete_until: date,
    refreshed_from: datetime,
    **more: Any,
) -> None:
    """Write a rollup's one-row state (id 1: its days before `complete_until` are rolled up,
    its last refresh began at `refreshed_from`; `more`: other columns of its model), creating
    it on the first refresh."""
    values = {"complete_until": complete_until, "refreshed_from": refreshed_from, **more}
    state = await session.get(model, 1)
    if state is None:
        session.add(model(id=1, **values))
    else:
        for name, value in values.items():
            setattr(state, name, value)
    await session.flush()


@dataclass(frozen=True)
class ChangedDays:
    """RollupRepository.changed_days(since, before) as one refresh read it: the SLA refresh
    reuses it when its own state asks the same question."""

    since: datetime
    before: date
    days: list[tuple[uuid.UUID, date]]


class RollupRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def ai_spend(self, since: datetime, until: datetime) -> dict[uuid.UUID, Decimal]:
        """Per tenant with AI usage in [since, until), its cost: whole UTC days from
        ai_usage_daily (kept by a trigger on every insert, so complete up to now), a partial
        first or last day from the ai_usage rows (ix_ai_usage_at covers tenant and cost)."""
        parts: list[Any] = []
        raw = [(since, until)]
        days = whole_days(since, until, date.max)
        if days is not None:
            d = AiUsageDaily
            parts.append(
                select(d.tenant_id, d.cost_usd.label("usd")).where(
                    d.day >= days[0], d.day < days[1]
                )
            )
            raw = [(since, day_start(days[0])), (day_start(days[1]), until)]
        parts.extend(
            select(AiUsage.tenant_id, AiUsage.cost_usd.label("usd")).where(
                AiUsage.at >= lo, AiUsage.at < hi
            )
            for lo, hi in raw
            if lo < hi
        )
        spent = union_all(*parts).subquery("spent")
        query = select(spent.c.tenant_id, func.sum(spent.c.usd)).group_by(spent.c.tenant_id)
        return {r[0]: Decimal(r[1]) for r in await self.session.execute(query)}

    async def tenants(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, tuple[str, str]]:
        """{id: (name, tier)} of the tenants asked for."""
        if not ids:
            return {}
        query = select(Tenant.id, Tenant.name, Tenant.tier).where(Tenant.id.in_(ids))
        return {r.id: (r.name, r.tier) for r in await self.session.execute(query)}

    async def lock(self) -> bool:
        """Take the refresh lock for this transaction; False when another holds it. It is
        transaction-scoped (released at commit): each chunk of a catch-up, a transaction of
        its own, takes it again and reads the state after it."""
        return bool(await self.session.scalar(select(func.pg_try_advisory_xact_lock(_LOCK))))

    async def state(self) -> RollupState | None:
        return await self.session.get(RollupState, 1)

    async def complete_until(self) -> date | None:
        return await self.session.scalar(
            select(RollupState.complete_until).where(RollupState.id == 1)
        )

    async def now(self) -> datetime:
        """The transaction's start time (PostgreSQL's clock, the one updated_at is compared
        with in the next refresh)."""
        value = await self.session.scalar(select(func.now()))
        assert value is not None
        return value

    async def save_state(
        self, complete_until: date, refreshed_from: datetime, estimates_from: datetime | None
    ) -> None:
        """The rollup's state; `estimates_from` when the cost estimates were recomputed or
        found current at that moment (None: left as it was, as by a chunk of a catch-up)."""
        more = {"estimates_from": estimates_from} if estimates_from is not None else {}
        await save_rollup_state(self.session, RollupState, complete_until, refreshed_from, **more)

    async def first_day(self, since: date | None = None) -> date | None:
        """The UTC day of the oldest execution (created on `since` or later)."""
        query = select(func.min(Execution.created_at))
        if since is not None:
            query = query.where(Execution.created_at >= day_start(since))
        first = await self.session.scalar(query)
        return first.astimezone(UTC).date() if first is not None else None

    async def next_chunk(
        self, complete_until: date | None, today: date, chunk_days: int
    ) -> tuple[date, date] | None:
        """The days [first, end) a rollup complete before `complete_until` (None: never
        refreshed: from the oldest execution's day) adds next: up to `chunk_days` days after
        the first day on or after `first` with executions (days without any cost nothing,
        so a gap of months adds no chunks), never today; None when nothing is missing."""
        oldest = await self.first_day(complete_until)
        first = complete_until if complete_until is not None else oldest
        if first is None or first >= today:
            return None
        busy = max(first, oldest) if oldest is not None else today
        return first, min(today, busy + timedelta(days=chunk_days))

    async def changed_days(self, since: datetime, before: date) -> list[tuple[uuid.UUID, date]]:
        """(tenant, UTC day) of executions created before `before` and changed at or after
        `since`; one index range per tenant (ix_executions_tenant_updated)."""
        day = cast(func.timezone("UTC", Execution.created_at), Date)
        changed = (
            select(Execution.tenant_id, day.label("day"))
            .where(
                Execution.tenant_id == Tenant.id,
                Execution.updated_at >= since,
                Execution.created_at < day_start(before),
            )
            .lateral("changed")
        )
        rows = await self.session.execute(
            select(changed.c.tenant_id, changed.c.day)
            .select_from(Tenant)
            .join(changed, text("true"))
            .distinct()
        )
        return [(r.tenant_id, r.day) for r in rows]

    async def changed_since(self, since: datetime) -> bool:
        """Whether any execution (any day) changed at or after `since`, or any AI usage was
        recorded since then (the ai_usage trigger of 0022 adds to a run's AI figures without
        touching its updated_at: a call recorded after its run ended changes the run's cost):
        one probe of ix_executions_tenant_updated per tenant, each stopping at its first row,
        and the newest entry of ix_ai_usage_at."""
        changed = (
            select(Execution.id)
            .where(Execution.tenant_id == Tenant.id, Execution.updated_at >= since)
            .limit(1)
            .lateral("changed")
        )
        found = select(Tenant.id).join(changed, text("true")).limit(1)
        # max(at) reads one entry of ix_ai_usage_at whatever the plan; `at >= :since LIMIT 1`
        # in a generic plan scanned the table (70 ms at 333,000 rows).
        usage = select(func.max(AiUsage.at)).scalar_subquery() >= since
        return bool(await self.session.scalar(select(or_(found.exists(), usage))))

    async def rebuild(self, first: date, end: date, tenant_id: uuid.UUID | None = None) -> int:
        """Rebuild the days [first, end) of one tenant (or all) in both rollups, one statement
        each for the deletes and the inserts (a refresh adds at most ROLLUP_CHUNK_DAYS days
        per transaction); returns the execution_rollup rows written."""
        lo, hi = day_start(first), day_start(end)
        for table in (ExecutionRollup, StepUsageRollup):
            where = [table.day >= first, table.day < end]
            if tenant_id is not None:
                where.append(table.tenant_id == tenant_id)
            await self.session.execute(delete(table).where(*where))
        columns = [c.name for c in ExecutionRollup.__table__.columns]
        rows = self._day_rows(lo, hi, tenant_id)
        result = await self.session.execute(insert(ExecutionRollup).from_select(columns, rows))
        await self._step_rows(lo, hi, tenant_id)
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def _step_rows(self, lo: datetime, hi: datetime, tenant_id: uuid.UUID | None) -> None:
        """step_usage_rollup for runs created in [lo, hi): the step events' figures, then the
        AI usage's (an upsert: a step may have AI calls only)."""
        usage = UsageRepository(self.session)
        day = cast(func.timezone("UTC", Execution.created_at), Date)
        where = [Execution.created_at >= lo, Execution.created_at < hi]
        if tenant_id is not None:
            where.append(Execution.tenant_id == tenant_id)
        runs = select(
            Execution.id, Execution.tenant_id, day.label("day"), Execution.template_id
        ).where(*where)
        keys = ("tenant_id", "day", "template_id")
        await self.session.execute(
            insert(StepUsageRollup).from_select(
                [*keys, "step_id", "activity", "first_seq", "attempts", "completed", "recorded"]
                + ["active_seconds", "bytes_written", "emails_sent", "http_calls"],
                usage.step_aggregates(runs, *keys),
            )
        )
        ai = pg_insert(StepUsageRollup).from_select(
            [*keys, "step_id", "ai_calls", "ai_input_tokens", "ai_output_tokens", "ai_cost_usd"],
            usage.ai_aggregates(None, runs, *keys),
        )
        figures = ("ai_calls", "ai_input_tokens", "ai_output_tokens", "ai_cost_usd")
        await self.session.execute(
            ai.on_conflict_do_update(
                index_elements=[*keys, "step_id"], set_={f: ai.excluded[f] for f in figures}
            )
        )
        run = runs.subquery("run")
        step = func.regexp_replace(StepAttempt.step_id, r"\[\d+\]$", "")
        retries = pg_insert(StepUsageRollup).from_select(
            [*keys, "step_id", "retries"],
            select(
                run.c.tenant_id,
                run.c.day,
                run.c.template_id,
                step,
                func.sum(StepAttempt.attempts - 1),
            )
            .select_from(run)
            .join(StepAttempt, StepAttempt.execution_id == run.c.id)
            .group_by(run.c.tenant_id, run.c.day, run.c.template_id, step),
        )
        await self.session.execute(
            retries.on_conflict_do_update(
                index_elements=[*keys, "step_id"], set_={"retries": retries.excluded.retries}
            )
        )

    @staticmethod
    def _day_rows(lo: datetime, hi: datetime, tenant_id: uuid.UUID | None) -> Any:
        """The rollup rows of [lo, hi): per template, and per tenant, day, status, bucket and
        recorded tier over all templates (template_id ALL_TEMPLATES), in one pass (GROUPING
        SETS). The columns in the table's order (`rebuild` inserts them by position)."""
        day = cast(func.timezone("UTC", Execution.created_at), Date)
        bucket = duration_bucket(run_seconds())
        where = [Execution.created_at >= lo, Execution.created_at < hi]
        if tenant_id is not None:
            where.append(Execution.tenant_id == tenant_id)
        tier = func.coalesce(Execution.tier, literal(UNKNOWN_TIER, String))
        common = (Execution.tenant_id, day, Execution.status, bucket, tier)
        return (
            select(
                Execution.tenant_id,
                day,
                func.coalesce(Execution.template_id, literal(ALL_TEMPLATES, Uuid)),
                Execution.status,
                bucket,
                func.count(),
                cast(func.count().filter(ran_ai()), Integer),
                func.coalesce(func.sum(Execution.ai_cost_usd), literal(0)),
                tier,
            )
            .select_from(Execution)
            .where(*where)
            .group_by(func.grouping_sets(tuple_(*common, Execution.template_id), tuple_(*common)))
        )
