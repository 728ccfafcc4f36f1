"""Analytics rules: which window, grouping and filter a caller may ask about; the impact of
AI on a template's runs; execution statistics with trends (the buckets and their previous
periods); resource usage of an execution or of a template's runs."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields, replace
from datetime import UTC, date, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.analytics.forecast import ForecastService
from app.analytics.repository import GroupStats, ImpactRepository
from app.analytics.rollup_repository import (
    CHANGE_MARGIN,
    ROLLUP_CHUNK_DAYS,
    ChangedDays,
    RollupRepository,
    day_start,
    whole_days,
)
from app.analytics.sla_rollup import SlaRollupRefresh
from app.analytics.stats_repository import CALENDAR, Figures, StatsRepository, StatsScope
from app.analytics.usage_repository import RunFigures, StepFigures, UsageRepository
from app.errors import NotFound, ValidationFailed
from app.executions.repository import ExecutionCriteria
from app.executions.service import ExecutionFilter, ExecutionService
from app.models import Template
from app.settings import Settings
from app.templates.service import TemplateService

MAX_SPAN = timedelta(days=366)


@dataclass(frozen=True)
class TemplateImpactReport:
    template: Template
    since: datetime
    until: datetime
    enhanced: GroupStats
    baseline: GroupStats


def checked_window(
    since: datetime, until: datetime, most: timedelta = MAX_SPAN, hint: str = ""
) -> tuple[datetime, datetime]:
    """[since, until) with naive times read as UTC; VALIDATION_FAILED unless since < until
    and the span is at most `most` (MAX_SPAN unless a query allows less; `hint` is added to
    the refusal, e.g. how to ask for a longer period)."""
    since, until = (t if t.tzinfo else t.replace(tzinfo=UTC) for t in (since, until))
    if until <= since:
        raise ValidationFailed(
            "`to` must be after `from`", details=[{"path": "$.to", "message": "not after from"}]
        )
    if until - since > most:
        raise ValidationFailed(
            f"the window may span at most {most.days} days{hint}",
            details=[{"path": "$.to", "message": f"more than {most.days} days after from"}],
        )
    return since, until


class ImpactService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.repo = ImpactRepository(session)

    async def template_impact(
        self, tenant_id: uuid.UUID, template_id: uuid.UUID, since: datetime, until: datetime
    ) -> TemplateImpactReport:
        """The tenant's runs of a template it can read, created in [since, until): enhanced
        (AI applied at least once) against baseline. Another tenant's runs never count."""
        since, until = checked_window(since, until)
        template = await TemplateService(self.session).get(tenant_id, template_id)
        groups = await self.repo.template_groups(tenant_id, template.id, since, until)
        return TemplateImpactReport(
            template=template,
            since=since,
            until=until,
            enhanced=groups.get(True, GroupStats()),
            baseline=groups.get(False, GroupStats()),
        )


GROUP_BY = ("DAY", "WEEK", "TEMPLATE", "STATUS", "TIER")
# A window may hold this many DAY buckets (366 days); keyed groups (templates) are cut to the
# MAX_KEYED_BUCKETS largest by current total, and the answer says so.
MAX_KEYED_BUCKETS = 200
EARLIEST = datetime(1971, 1, 1, tzinfo=UTC)
LATEST = datetime(9998, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class StatsBucket:
    """One group: its key, its time span (the bucket's for DAY/WEEK, else the window), its
    figures now and over its previous period."""

    key: str
    start: datetime
    end: datetime
    previous_start: datetime
    previous_end: datetime
    current: Figures
    previous: Figures
    template_id: uuid.UUID | None = None


@dataclass(frozen=True)
class StatsReport:
    since: datetime
    until: datetime
    group_by: str
    buckets: list[StatsBucket]
    truncated: bool


def stats_scope(
    tenant_id: uuid.UUID | None,
    since: datetime,
    until: datetime,
    group_by: str,
    criteria: ExecutionCriteria,
) -> StatsScope:
    """The window and grouping checked: a known groupBy, [since, until) as checked_window,
    and no startedAfter/startedBefore (the window is from/to, and its previous period must not
    be cut)."""
    if group_by not in GROUP_BY:
        raise ValidationFailed(f"groupBy must be one of {', '.join(GROUP_BY)}")
    since, until = checked_window(since, until)
    if since < EARLIEST or until > LATEST:
        # The previous period (and a week's Monday) must stay a date Python can hold.
        raise ValidationFailed(
            f"from and to must be between {EARLIEST.date()} and {LATEST.date()}",
            details=[{"path": "$.from", "message": "out of range"}],
        )
    if criteria.created_from is not None or criteria.created_before is not None:
        raise ValidationFailed(
            "filter.startedAfter/startedBefore do not apply here: the window is from/to"
        )
    return StatsScope(
        tenant_id,
        since,
        until,
        group_by,
        statuses=criteria.statuses,
        template_ids=criteria.template_ids,
        params_contains=criteria.params_contains,
    )


def _calendar_starts(scope: StatsScope) -> list[datetime]:
    """Every DAY (UTC) or WEEK (ISO, Monday) bucket start that meets the window."""
    day = scope.since.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if scope.group_by == "WEEK":
        day -= timedelta(days=day.weekday())
    starts = []
    while day < scope.until:
        starts.append(day)
        day += scope.shift
    return starts


class StatsService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.repo = StatsRepository(session)

    async def scope(
        self,
        tenant_id: uuid.UUID | None,
        since: datetime,
        until: datetime,
        group_by: str,
        request: ExecutionFilter | None,
        settings: Settings,
    ) -> StatsScope:
        """What a caller asks about, checked. A tenant (tenant_id) asks about its own
        executions with the executions filter; the platform operator (None) about every
        tenant's, but reads no tenant's templates or params: no TEMPLATE grouping, no
        template or params filter (VALIDATION_FAILED)."""
        request = request or ExecutionFilter()
        if tenant_id is None and (
            group_by == "TEMPLATE"
            or request.template_name is not None
            or request.template_id is not None
            or request.params_contains is not None
        ):
            raise ValidationFailed(
                "a platform credential reads no tenant's templates or params: group by DAY, "
                "WEEK, STATUS or TIER and filter by status"
            )
        executions = ExecutionService(self.session)
        # Without a template name nothing is looked up, so no tenant is needed.
        criteria = await executions.criteria(tenant_id or uuid.UUID(int=0), request, settings)
        return stats_scope(tenant_id, since, until, group_by, criteria)

    async def execution_stats(self, scope: StatsScope) -> StatsReport:
        """Buckets with their previous periods. DAY/WEEK: every calendar bucket that meets the
        window, clipped to it (a window starting at noon has a half first day, compared with
        the half day before), zeros included. TEMPLATE/STATUS/TIER: every key with runs in
        the window or the window before (a key gone to zero is a trend too)."""
        rows = await self.repo.figures(scope)
        shift, empty = scope.shift, Figures()
        if scope.group_by in CALENDAR:
            buckets = []
            for start in _calendar_starts(scope):
                lo, hi = max(start, scope.since), min(start + shift, scope.until)
                buckets.append(
                    StatsBucket(
                        key=start.date().isoformat(),
                        start=lo,
                        end=hi,
                        previous_start=lo - shift,
                        previous_end=hi - shift,
                        current=rows.get(("current", start), empty),
                        previous=rows.get(("previous", start), empty),
                    )
                )
            return StatsReport(scope.since, scope.until, scope.group_by, buckets, False)
        keys = sorted(
            {key for _, key in rows},
            key=lambda k: (-rows.get(("current", k), empty).total, str(k)),
        )
        truncated = len(keys) > MAX_KEYED_BUCKETS
        keys = keys[:MAX_KEYED_BUCKETS]
        if scope.group_by == "TIER" and scope.tenant_id is not None and not keys:
            tier = await self.repo.tier_of(scope.tenant_id)
            keys = [tier] if tier else []  # a tenant's one tier, even without runs
        names: dict[uuid.UUID, str] = {}
        if scope.group_by == "TEMPLATE":
            names = await self.repo.template_names([uuid.UUID(k) for k in keys])
        buckets = [
            StatsBucket(
                key=names.get(uuid.UUID(k), k) if scope.group_by == "TEMPLATE" else k,
                start=scope.since,
                end=scope.until,
                previous_start=scope.since - shift,
                previous_end=scope.until - shift,
                current=rows.get(("current", k), empty),
                previous=rows.get(("previous", k), empty),
                template_id=uuid.UUID(k) if scope.group_by == "TEMPLATE" else None,
            )
            for k in keys
        ]
        return StatsReport(scope.since, scope.until, scope.group_by, buckets, truncated)


# A template's usage reads every step event of its runs in the window (bench/analytics.py).
MAX_USAGE_SPAN = timedelta(days=92)


@dataclass(frozen=True)
class UsageReport:
    """Resource usage of one execution or of a template's runs in a window."""

    runs: RunFigures
    steps: list[StepFigures]
    template: Template | None = None
    since: datetime | None = None
    until: datetime | None = None


class UsageService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.repo = UsageRepository(session)

    async def record_attempt(self, execution_id: uuid.UUID, step_id: str, attempt: int) -> None:
        """A step's activity runs again (attempt >= 2): keep the count for resource usage."""
        if attempt >= 2:
            await self.repo.record_attempt(execution_id, step_id[:120], attempt)

    async def execution(self, tenant_id: uuid.UUID, execution_id: uuid.UUID) -> UsageReport:
        """One of the tenant's executions (NOT_FOUND for anyone else's)."""
        where = self.repo.one(tenant_id, execution_id)
        runs = await self.repo.runs(where)
        if not runs.executions:
            raise NotFound("execution not found")
        return UsageReport(runs, await self.repo.steps(tenant_id, where))

    async def template(
        self, tenant_id: uuid.UUID, template_id: uuid.UUID, since: datetime, until: datetime
    ) -> UsageReport:
        """The tenant's runs of a template it can read, created in [since, until) (at most
        MAX_USAGE_SPAN); another tenant's runs never count."""
        since, until = checked_window(since, until, MAX_USAGE_SPAN)
        template = await TemplateService(self.session).get(tenant_id, template_id)
        runs = await self.repo.runs(self.repo.window(tenant_id, template.id, since, until))
        steps: list[StepFigures] = []
        if runs.executions:
            steps = await self._template_steps(tenant_id, template.id, since, until)
        return UsageReport(runs, steps, template, since, until)

    async def _template_steps(
        self, tenant_id: uuid.UUID, template_id: uuid.UUID, since: datetime, until: datetime
    ) -> list[StepFigures]:
        """Whole days the rollup holds from step_usage_rollup, the rest from the events."""
        complete_until = await RollupRepository(self.session).complete_until()
        days = whole_days(since, until, complete_until)
        raw = [(since, until)]
        parts: list[StepFigures] = []
        if days is not None:
            parts += await self.repo.rolled_steps(tenant_id, template_id, *days)
            raw = [(since, day_start(days[0])), (day_start(days[1]), until)]
        for lo, hi in raw:
            if lo < hi:
                where = self.repo.window(tenant_id, template_id, lo, hi)
                parts += await self.repo.steps(tenant_id, where)
        return merge_steps(parts)


def merge_steps(parts: list[StepFigures]) -> list[StepFigures]:
    """Sum the figures of the same step, listed in the order the steps first ran."""
    merged: dict[str, StepFigures] = {}
    for part in parts:
        seen = merged.get(part.step_id)
        if seen is None:
            merged[part.step_id] = part
            continue
        sums = {
            f.name: getattr(seen, f.name) + getattr(part, f.name)
            for f in fields(StepFigures)
            if f.name not in ("step_id", "activity", "first")
        }
        merged[part.step_id] = replace(
            seen,
            activity=seen.activity or part.activity,
            first=min(seen.first, part.first),
            **sums,
        )
    return sorted(merged.values(), key=lambda s: (s.first == 0, s.first, s.step_id))


@dataclass(frozen=True)
class RollupRefresh:
    """What one refresh (one chunk, one transaction) did; `skipped` when another refresh
    held the lock; `more` when a rollup still has days to catch up (call again)."""

    skipped: bool = False
    complete_until: date | None = None
    days: int = 0  # tenant-days (or all tenants' days) rebuilt, a chunk's days without runs too
    rows: int = 0
    estimates: int = 0  # template_cost_estimates rows written (0 when kept)
    estimates_kept: bool = False  # not recomputed: nothing changed, or a catch-up goes on
    started: datetime | None = None  # the moment it describes (refreshed_from)
    more: bool = False


class RollupService:
    """Keeps the daily rollup (app/models/analytics.py) current; the analytics rollup schedule
    (workers/analytics.py) calls `refresh` every ANALYTICS_ROLLUP_SECONDS, and again while it
    answers `more`. The caller commits after each call."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.repo = RollupRepository(session)

    async def refresh(self, chunk_days: int = ROLLUP_CHUNK_DAYS) -> RollupRefresh:
        """One chunk: roll up at most `chunk_days` of the days completed since the last
        refresh (the first: from the oldest execution's day, up to today, UTC), rebuild the
        earlier days of executions changed since the last one began (less CHANGE_MARGIN),
        the SLA rollup's chunk likewise, then recompute the templates' cost estimates
        (unless nothing changed, or either rollup still misses days: the last chunk does it).

        The state saved (complete_until: the chunk's end, refreshed_from: this transaction's
        start) is exact for every day before it, so readers stay correct between chunks and
        the next chunk picks up the changes made meanwhile."""
        if not await self.repo.lock():
            return RollupRefresh(skipped=True)
        started = await self.repo.now()
        today = started.astimezone(UTC).date()
        state = await self.repo.state()
        chunk = await self.repo.next_chunk(
            state.complete_until if state is not None else None, today, chunk_days
        )
        end = chunk[1] if chunk is not None else today
        days = rows = 0
        if chunk is not None:
            rows += await self.repo.rebuild(*chunk)
            days += (end - chunk[0]).days
        changed = None
        if state is not None:
            since = state.refreshed_from - CHANGE_MARGIN
            found = await self.repo.changed_days(since, state.complete_until)
            changed = ChangedDays(since, state.complete_until, found)
            for tenant_id, day in found:
                rows += await self.repo.rebuild(day, day + timedelta(days=1), tenant_id)
                days += 1
        more = end < today
        sla = await SlaRollupRefresh(self.session).refresh(started, today, chunk_days, changed)
        catching_up = more or sla.more
        # Template.costEstimate's table, from the rollup just made current (its pairs): not
        # while a catch-up has days left (each chunk would read every run after it; the last
        # chunk recomputes them), and kept when the last refresh left them current and
        # nothing changed since (no day added, no execution changed: it was most of an idle
        # refresh's time). estimates_from says which moment they describe (costEstimate's
        # asOf); a chunk of a catch-up leaves it.
        kept = (
            not catching_up
            and state is not None
            and state.estimates_from == state.refreshed_from
            and days == 0
            and not await self.repo.changed_since(state.refreshed_from - CHANGE_MARGIN)
        )
        estimates = 0
        if not (catching_up or kept):
            estimates = await ForecastService(self.session).refresh_cost_estimates(started, end)
        await self.repo.save_state(end, started, estimates_from=None if catching_up else started)
        return RollupRefresh(
            complete_until=end,
            days=days,
            rows=rows + sla.rows,
            estimates=estimates,
            estimates_kept=kept or catching_up,
            started=started,
            more=catching_up,
        )
