"""Where `slaReport`'s figures come from, day by day, and the SLA rollup's refresh.

A window [since, until) is read in three parts that never overlap:
- the whole UTC days the SLA rollup holds (before its `complete_until`), per template and
  day, when every row of that day was judged against the target in force NOW and no run of
  it changed since the last refresh began (less CHANGE_MARGIN): the rows' figures (runs that
  had ended), plus that day's runs still open, read from the rows (few; the rollup holds
  ended runs only);
- every other (template, day) of those days, read from the rows: a target changed since
  (an override set, changed or cleared: the fallback makes it take effect at once), a run
  ended, retried or added since the day was rolled up. For every template at once (no
  `template_id`), when those would be more than MAX_ROW_SPANS spans (many templates changed on
  a few days), each such day is read whole from the rows instead, every template of it: at
  most one span per day, and the other days still come from the rollup;
- the partial days at the window's edges, and the days not rolled up yet (today), read from
  the rows.
The breaches page reads, newest first, only the days that hold breaches (the rollup's counts
say which) plus the days read from the rows and the open runs, instead of the whole window.

The refresh runs with the analytics rollup's (RollupService.refresh, same transaction and
lock): at most ROLLUP_CHUNK_DAYS of the days completed since the last refresh (a first fill or
a catch-up goes on in the next transaction, from the `complete_until` saved), the days of runs
changed since it began, and every (tenant, template) whose rows no longer match the target in
force."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.analytics.rollup_repository import (
    CHANGE_MARGIN,
    ROLLUP_CHUNK_DAYS,
    ChangedDays,
    RollupRepository,
    day_start,
    whole_days,
)
from app.analytics.sla_repository import RunStats, SlaReportRepository, Span
from app.analytics.sla_rollup_repository import RolledDay, SlaRollupRepository
from app.models import Execution, SlaRollupState

ONE_DAY = timedelta(days=1)
# Spans per query of the breaches page: its OR of index ranges stays small.
SPANS_PER_QUERY = 20
# Past this many spans to read from the rows (days changed here and there across many
# templates), the whole window is read from the rows instead, as one range.
MAX_ROW_SPANS = 200


@dataclass
class Plan:
    """Which runs of a window come from where (the module docstring)."""

    rolled: dict[tuple[uuid.UUID, date], RolledDay] = field(default_factory=dict)
    from_rows: list[Span] = field(default_factory=list)
    read_days: set[tuple[uuid.UUID, date]] = field(default_factory=set)  # from the rows
    # Days read whole from the rows, every template of them (see the module docstring).
    whole_days: set[date] = field(default_factory=set)
    days: Span | None = None  # the whole days rolled up: their open runs come from the rows

    def reads_rows(self, template_id: uuid.UUID, day: date) -> bool:
        """Whether the template's runs of that day are read from the rows."""
        return day in self.whole_days or (template_id, day) in self.read_days


def _day_spans(days: Iterable[tuple[uuid.UUID | None, date]]) -> list[Span]:
    """Per template (None: every template), its days as spans of consecutive days."""
    spans: list[Span] = []
    for template_id, day in sorted(days, key=lambda key: (str(key[0]), key[1])):
        last = spans[-1] if spans else None
        if last and last.template_id == template_id and last.hi == day_start(day):
            spans[-1] = Span(last.lo, day_start(day + ONE_DAY), template_id)
        else:
            spans.append(Span(day_start(day), day_start(day + ONE_DAY), template_id))
    return spans


def _read_whole_days(plan: Plan) -> list[Span]:
    """Read every day that has a (template, day) to read from the rows whole, every template
    of it, instead of template by template: at most one span per day. Returns the spans."""
    plan.whole_days = {day for _, day in plan.read_days}
    plan.rolled = {key: r for key, r in plan.rolled.items() if key[1] not in plan.whole_days}
    return _day_spans({(None, day) for day in plan.whole_days})


class SlaFigures:
    def __init__(self, session: AsyncSession) -> None:
        self.rows = SlaReportRepository(session)
        self.rollup = SlaRollupRepository(session)

    async def plan(
        self, tenant_id: uuid.UUID, since: datetime, until: datetime, template_id: uuid.UUID | None
    ) -> Plan:
        await self.rollup.custom_plans()
        state = await self.rollup.state()
        whole = whole_days(since, until, state.complete_until if state else None)
        if state is None or whole is None:
            return Plan(from_rows=[Span(since, until, template_id)])
        first, end = whole
        plan = Plan(days=Span(day_start(first), day_start(end), template_id))
        changed = await self.rollup.changed(
            tenant_id, state.refreshed_from - CHANGE_MARGIN, first, end, template_id
        )
        for template, rolled in await self.rollup.days(tenant_id, first, end, template_id):
            key = (template, rolled.day)
            if rolled.in_force and key not in changed:
                plan.rolled[key] = rolled
            else:
                plan.read_days.add(key)
        plan.read_days |= changed
        edges = [(since, day_start(first)), (day_start(end), until)]
        plan.from_rows = [Span(lo, hi, template_id) for lo, hi in edges if lo < hi]
        spans = _day_spans(plan.read_days)
        if template_id is None and len(plan.from_rows) + len(spans) > MAX_ROW_SPANS:
            spans = _read_whole_days(plan)
        plan.from_rows += spans
        if len(plan.from_rows) > MAX_ROW_SPANS:
            return Plan(from_rows=[Span(since, until, template_id)])
        return plan

    async def run_stats(
        self,
        tenant_id: uuid.UUID,
        since: datetime,
        until: datetime,
        now: datetime,
        template_id: uuid.UUID | None,
    ) -> list[RunStats]:
        """Per template with runs in [since, until): counts and duration verdicts, equal to
        reading every row. Without `template_id`, only templates with a target in force for
        some run (an override, or a version with an `sla` block)."""
        plan = await self.plan(tenant_id, since, until, template_id)
        totals: dict[uuid.UUID, RunStats] = {}

        def add(stats: RunStats) -> None:
            known = totals.get(stats.template_id)
            totals[stats.template_id] = stats if known is None else known + stats

        for rolled in plan.rolled.values():
            add(rolled.stats)
        for stats in await self.rows.run_stats(tenant_id, plan.from_rows, now):
            add(stats)
        if plan.days is not None:
            for day, stats in await self.rows.open_run_stats(tenant_id, plan.days, now):
                if not plan.reads_rows(stats.template_id, day):
                    add(stats)
        return [s for s in totals.values() if template_id is not None or s.has_target]

    async def breached_runs(
        self,
        tenant_id: uuid.UUID,
        template_id: uuid.UUID,
        since: datetime,
        until: datetime,
        now: datetime,
        *,
        before: tuple[datetime, uuid.UUID] | None,
        limit: int,
    ) -> list[Execution]:
        """The runs of [since, until) over their duration target, newest first, after the
        keyset position `before`: the spans that may hold some, newest first, a batch at a
        time until `limit` are found; and the open runs of the rolled-up days."""
        plan = await self.plan(tenant_id, since, until, template_id)
        found = await self._breached_in_spans(tenant_id, template_id, plan, now, before, limit)
        if plan.days is not None:
            found += await self.rows.breached_runs(
                tenant_id,
                template_id,
                [plan.days],
                now,
                before=before,
                limit=limit,
                open_only=True,
            )
        unique = {e.id: e for e in found}.values()
        return sorted(unique, key=lambda e: (e.created_at, e.id), reverse=True)[:limit]

    async def _breached_in_spans(
        self,
        tenant_id: uuid.UUID,
        template_id: uuid.UUID,
        plan: Plan,
        now: datetime,
        before: tuple[datetime, uuid.UUID] | None,
        limit: int,
    ) -> list[Execution]:
        """The breached runs of the spans read from the rows and of the rolled-up days with
        breaches (their count known), newest first, `limit` at most."""
        # A rolled-up day with breaches is a span of its own, its count known: with every run
        # breaching, the newest day fills the page.
        spans = [(span, 0) for span in plan.from_rows] + [
            (Span(day_start(d), day_start(d + ONE_DAY), t), rolled.stats.breached)
            for (t, d), rolled in plan.rolled.items()
            if rolled.stats.breached
        ]
        spans.sort(key=lambda pair: pair[0].lo, reverse=True)
        if before is not None:
            spans = [(s, n) for s, n in spans if s.lo <= before[0]]
        found: list[Execution] = []
        while spans and len(found) < limit:
            batch: list[Span] = []
            known = 0
            while spans and known < limit and len(batch) < SPANS_PER_QUERY:
                span, count = spans.pop(0)
                batch.append(span)
                known += count
            found += await self.rows.breached_runs(
                tenant_id, template_id, batch, now, before=before, limit=limit - len(found)
            )
        return found


@dataclass(frozen=True)
class SlaChunk:
    """What one SLA refresh chunk did: rows written, whether days are still missing."""

    rows: int
    more: bool


class SlaRollupRefresh:
    """The SLA rollup's part of the analytics rollup refresh (the caller holds its lock and
    commits)."""

    def __init__(self, session: AsyncSession) -> None:
        self.repo = SlaRollupRepository(session)
        self.days = RollupRepository(session)

    async def refresh(
        self,
        started: datetime,
        today: date,
        chunk_days: int = ROLLUP_CHUNK_DAYS,
        changed: ChangedDays | None = None,
    ) -> SlaChunk:
        """One chunk: roll up at most `chunk_days` of the days completed since the last
        refresh (the first: from the oldest execution's day), the days of runs changed since
        it began (less CHANGE_MARGIN; `changed` when the analytics refresh already read them
        for the same `since` and days), then every (tenant, template) judged against a target
        no longer in force. Its state advances to the chunk's end, as the analytics
        rollup's does (RollupService.refresh)."""
        state = await self.repo.state()
        rows = 0
        # First, while the rebuilds below have recorded nothing yet (after migration 0025).
        await self.repo.record_all_targets()
        chunk = await self.days.next_chunk(
            state.complete_until if state is not None else None, today, chunk_days
        )
        end = chunk[1] if chunk is not None else today
        if chunk is not None:
            rows += await self.repo.rebuild(*chunk, started)
            if state is None or end > chunk[0] + ONE_DAY:
                # A first fill or a catch-up: until autovacuum gets to it, the planner would
                # take the table for an empty one (a day a refresh adds is a small share).
                await self.repo.analyze()
        if state is not None:
            for tenant_id, day in await self._changed_days(state, changed):
                rows += await self.repo.rebuild(day, day + ONE_DAY, started, tenant_id=tenant_id)
        for tenant_id, template_id in await self.repo.stale():
            rows += await self.repo.rebuild(
                None, end, started, tenant_id=tenant_id, template_id=template_id
            )
        await self.repo.save_state(end, started)
        return SlaChunk(rows, end < today)

    async def _changed_days(
        self, state: SlaRollupState, changed: ChangedDays | None
    ) -> list[tuple[uuid.UUID, date]]:
        """(tenant, day) of runs changed since the state's refresh began (less CHANGE_MARGIN),
        created before its complete_until: the analytics refresh's answer when it asked the
        same (both states move together, unless the SLA rollup is catching up on its own, as
        after migration 0023), else read here."""
        since = state.refreshed_from - CHANGE_MARGIN
        if changed is not None and (changed.since, changed.before) == (
            since,
            state.complete_until,
        ):
            return changed.days
        return await self.days.changed_days(since, state.complete_until)
