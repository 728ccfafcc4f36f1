"""SLA rules: which targets are in force, a run's duration judged when it ends, and the
periodic evaluation (runs open past their target, success rates over their windows).

In force for a run: the tenant's override of the template when there is one, else the `sla`
block of the version the run ran. For a success rate over a window, which spans runs of
several versions: the override, else the template's latest version's block.

Notified once: a breach is a row in sla_breaches before it is a notification, inserted with ON
CONFLICT DO NOTHING against a unique index (one DURATION row per execution; one open
SUCCESS_RATE row per tenant and template), and only the transaction that inserted it appends
the SLA_BREACH notification, in the same transaction. So the sweep and the run's end never
notify twice; one worker at a time runs the round (an advisory try-lock), so a rate that stays
below target is notified when it crosses, and again only after it has recovered (the open row
closed by the round that evaluated it on target) and crossed again.

Lock order, everywhere: the execution row, then the breach row, then the tenant's notification
counter (the recorder and the sweep; the reverse deadlocked with PostgreSQL aborting one).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import SessionFactory
from app.errors import ValidationFailed
from app.ids import global_id
from app.metrics import EVENT_PUBLISH_FAILURES, SLA_BREACHES, SLA_FAILURES
from app.models import Execution, TemplateSla
from app.models.base import utcnow
from app.notifications.service import NotificationService, wake
from app.sla.repository import SlaRepository
from app.sla.spec import SlaSpec

log = structlog.get_logger(__name__)
OVERRIDE, VERSION = "OVERRIDE", "VERSION"
# Runs open past their target recorded per round (oldest first; the next round goes on).
SWEEP_LIMIT = 500
# Templates a tenant may put SLA targets on that the round evaluates (its templates with a
# success-rate target in their latest version, and its overrides): each costs the round a
# count over up to 31 days of the template's runs.
MAX_TARGETS_PER_TENANT = 50
# A round stops here (counted: wfs_sla_failures_total{where="round_budget"}); the next one,
# an interval later, goes on. Open breaches are then closed only for what was evaluated.
ROUND_BUDGET_SECONDS = 30.0
# Success-rate targets counted per query (an OR of index ranges, one per target).
OUTCOME_BATCH = 100
# The event bus's publish: wakes the notifications' live readers after commit.
Publish = Callable[[str, dict[str, Any]], Awaitable[bool]]


@dataclass(frozen=True)
class Target:
    sla: SlaSpec
    source: str  # OVERRIDE or VERSION


@dataclass(frozen=True)
class Notified:
    """A breach notified in a transaction: count it and wake readers after the commit."""

    tenant_id: uuid.UUID
    seq: int
    kind: str


def override_spec(row: TemplateSla) -> SlaSpec | None:
    """A stored override's targets; None (no target) when they no longer pass, should a later
    release tighten the bounds: as SlaSpec.stored for a version's block, never an exception
    (the recorder and the round read it)."""
    return SlaSpec.stored(
        {
            "max_duration_seconds": row.max_duration_seconds,
            "min_success_rate": row.min_success_rate,
            "window_seconds": row.window_seconds,
            "min_runs": row.min_runs,
        }
    )


def in_force(override: TemplateSla | None, version_sla: dict[str, Any] | None) -> Target | None:
    """The override when there is one (None when it no longer validates: it still replaces
    the version's block, as the admin asked), else the version's block."""
    if override is not None:
        spec = override_spec(override)
        return Target(spec, OVERRIDE) if spec is not None else None
    spec = SlaSpec.stored(version_sla)
    return Target(spec, VERSION) if spec is not None else None


async def check_target_cap(
    session: AsyncSession, tenant_id: uuid.UUID, template_id: uuid.UUID
) -> None:
    """Refuse a tenant's SLA target on one more template past MAX_TARGETS_PER_TENANT (its own
    templates whose latest version has a success-rate target, and its overrides): each is
    evaluated every round. Setting again on a template already counted is always allowed."""
    used = await SlaRepository(session).targets_of_tenant(tenant_id, excluding=template_id)
    if used >= MAX_TARGETS_PER_TENANT:
        raise ValidationFailed(
            f"a tenant has SLA targets on at most {MAX_TARGETS_PER_TENANT} templates "
            "(success-rate targets of its templates, and overrides): clear one first",
            details=[
                {
                    "path": "$.sla",
                    "message": f"{used} templates already have targets "
                    f"(at most {MAX_TARGETS_PER_TENANT})",
                }
            ],
        )


def _ratio(completed: int, failed: int) -> float:
    return completed / (completed + failed)


async def _notify(session: AsyncSession, tenant_id: uuid.UUID, kind: str, **data: Any) -> Notified:
    execution_id = data.pop("execution_id", None)
    seq = await NotificationService(session).add(
        tenant_id, "SLA_BREACH", {"kind": kind, **data}, execution_id=execution_id
    )
    return Notified(tenant_id, seq, kind)


async def after_commit(publish: Publish | None, notified: Iterable[Notified]) -> None:
    """Count committed breaches and wake the tenants' notification readers."""
    for n in notified:
        SLA_BREACHES.labels(n.kind).inc()
        log.info("sla.breach", tenant_id=str(n.tenant_id), kind=n.kind, seq=n.seq)
        if publish is not None and not await wake(publish, n.tenant_id, n.seq):
            EVENT_PUBLISH_FAILURES.inc()


async def duration_breach(session: AsyncSession, execution: Execution) -> Notified | None:
    """Judge an ended run against its duration target, in the recorder's transaction (with
    the terminal event). Records and notifies a breach once per execution (the sweep may have
    recorded it while the run was open); None when within target, without one, or already
    notified. One query when there is no breach: the targets in force."""
    repo = SlaRepository(session)
    override, version_sla = await repo.targets_of_run(
        execution.tenant_id, execution.template_id, execution.template_version_id
    )
    target = in_force(override, version_sla)
    if target is None or target.sla.max_duration_seconds is None:
        return None
    end = execution.finished_at or utcnow()
    seconds = (end - execution.created_at).total_seconds()
    if seconds <= target.sla.max_duration_seconds:
        return None
    return await _record_duration(
        session,
        execution.id,
        execution.tenant_id,
        execution.template_id,
        seconds,
        target,
        status=execution.status,
        at=end,
    )


async def _record_duration(
    session: AsyncSession,
    execution_id: uuid.UUID,
    tenant_id: uuid.UUID,
    template_id: uuid.UUID,
    seconds: float,
    target: Target,
    *,
    status: str,
    at: datetime,
) -> Notified | None:
    limit = target.sla.max_duration_seconds
    assert limit is not None
    inserted = await SlaRepository(session).add_breach(
        tenant_id=tenant_id,
        template_id=template_id,
        kind="DURATION",
        execution_id=execution_id,
        observed=seconds,
        target=limit,
        started_at=at,
    )
    if inserted is None:
        return None
    return await _notify(
        session,
        tenant_id,
        "DURATION",
        execution_id=execution_id,
        templateId=global_id("Template", template_id),
        source=target.source,
        status=status,
        maxDurationSeconds=limit,
        durationSeconds=round(seconds, 3),
    )


class Budget:
    """The round's time budget (monotonic clock)."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.hit = False

    def spent(self) -> bool:
        if not self.hit and time.monotonic() >= self.deadline:
            self.hit = True
            SLA_FAILURES.labels("round_budget").inc()
            log.warning("sla.round_budget_spent")
        return self.hit


class SlaMonitor:
    """The worker's periodic SLA round (`run_round`, every SLA_EVALUATE_INTERVAL_SECONDS).

    One worker at a time runs it: the round holds a transaction-level advisory lock (a
    try-lock: another worker's round in progress means this one is skipped), so the counts
    are not repeated on every worker and a breach is opened and closed by one evaluation.
    The lock's transaction stays open, idle, for the round. Measured here: such a session
    keeps a backend_xmin even in READ COMMITTED (docs/library-notes.md), so vacuum cannot
    remove rows deleted after the round started until it ends; the round's time budget
    (ROUND_BUDGET_SECONDS) bounds that. A session-level lock on an autocommit connection
    would not, but a lock left on a pooled connection by a failed unlock would stop every
    later round."""

    def __init__(
        self,
        sessions: SessionFactory,
        publish: Publish | None,
        budget_seconds: float = ROUND_BUDGET_SECONDS,
    ) -> None:
        self.sessions, self.publish = sessions, publish
        self.budget_seconds = budget_seconds

    async def run_round(self, now: datetime | None = None, *, wait: bool = False) -> list[Notified]:
        """Record runs open past their duration target, then evaluate success rates; returns
        the breaches it notified ([] when another worker's round holds the lock; `wait`:
        wait for it instead, as tests and one-off callers do)."""
        now = now or utcnow()
        async with self.sessions() as leader:
            if not await SlaRepository(leader).take_round_lock(wait=wait):
                log.info("sla.round_skipped", reason="another worker's round is running")
                return []
            budget = Budget(self.budget_seconds)
            return [
                *await self.sweep_open(now, budget),
                *await self.evaluate_rates(now, budget),
            ]

    async def sweep_open(self, now: datetime, budget: Budget | None = None) -> list[Notified]:
        """Each breach commits on its own: a notification holds its tenant's log counter
        until commit, and one tenant's recorder must not wait for a whole sweep.

        Lock order as the recorder's (execution row, breach row, notification counter): the
        run's row first, FOR NO KEY UPDATE SKIP LOCKED and still open, else it is skipped (a
        recorder is ending it and judges its duration itself)."""
        budget = budget or Budget(self.budget_seconds)
        async with self.sessions() as session:
            rows = await SlaRepository(session).open_past_target(now, SWEEP_LIMIT)
        notified = []
        for row in rows:
            if budget.spent():
                break
            target = Target(
                SlaSpec(max_duration_seconds=row.target), OVERRIDE if row.overridden else VERSION
            )
            async with self.sessions() as session:
                if not await SlaRepository(session).lock_open_run(row.execution_id):
                    continue
                found = await _record_duration(
                    session,
                    row.execution_id,
                    row.tenant_id,
                    row.template_id,
                    (now - row.created_at).total_seconds(),
                    target,
                    status="RUNNING",
                    at=now,
                )
                await session.commit()
            if found is not None:
                notified.append(found)
                await after_commit(self.publish, [found])
        return notified

    async def _rate_targets(
        self, repo: SlaRepository, now: datetime, budget: Budget
    ) -> dict[tuple[uuid.UUID, uuid.UUID], tuple[Target, int, int]]:
        """(tenant, template) -> (target, completed, failed) over the target's window, for
        every pair with a success-rate target in force and runs in its window. The counts are
        grouped: one query per OUTCOME_BATCH version targets (every tenant's runs), one per
        OUTCOME_BATCH overrides (the tenant's runs); the two kinds are never mixed, since a
        run would then count once for two different windows. Stops at the budget."""
        overrides = await repo.overrides()
        overridden = {(o.tenant_id, o.template_id) for o in overrides}
        versions: dict[uuid.UUID, SlaSpec] = {}
        for template_id, block in (await repo.latest_version_slas()).items():
            spec = SlaSpec.stored(block)
            if spec is not None and spec.min_success_rate is not None:
                versions[template_id] = spec
        found: dict[tuple[uuid.UUID, uuid.UUID], tuple[Target, int, int]] = {}
        by_version = [
            (t, None, now - timedelta(seconds=spec.window_seconds)) for t, spec in versions.items()
        ]
        for batch in _batches(by_version, OUTCOME_BATCH):
            if budget.spent():
                return found
            for template_id, tenant_id, completed, failed in await repo.outcomes(batch):
                if (tenant_id, template_id) not in overridden:
                    target = Target(versions[template_id], VERSION)
                    found[tenant_id, template_id] = (target, completed, failed)
        specs = {}
        for o in overrides:
            spec = override_spec(o)
            if spec is not None and spec.min_success_rate is not None:
                specs[o.tenant_id, o.template_id] = spec
        by_override = [
            (template_id, tenant_id, now - timedelta(seconds=spec.window_seconds))
            for (tenant_id, template_id), spec in specs.items()
        ]
        for batch in _batches(by_override, OUTCOME_BATCH):
            if budget.spent():
                return found
            for template_id, tenant_id, completed, failed in await repo.outcomes(batch):
                target = Target(specs[tenant_id, template_id], OVERRIDE)
                found[tenant_id, template_id] = (target, completed, failed)
        return found

    async def evaluate_rates(self, now: datetime, budget: Budget | None = None) -> list[Notified]:
        """Open a breach (and notify) for each pair whose rate is below target over at least
        min_runs ended runs, unless one is open; close the open ones this round found on
        target (or, after a whole round, without a target or runs in its window any more).
        Each breach commits on its own (see sweep_open)."""
        budget = budget or Budget(self.budget_seconds)
        async with self.sessions() as session:
            evaluated = await self._rate_targets(SlaRepository(session), now, budget)
        notified, breaching = [], set()
        for (tenant_id, template_id), (target, completed, failed) in evaluated.items():
            spec = target.sla
            assert spec.min_success_rate is not None
            runs = completed + failed
            if runs < spec.min_runs or _ratio(completed, failed) >= spec.min_success_rate:
                continue
            breaching.add((tenant_id, template_id))
            if budget.spent():
                continue
            async with self.sessions() as session:
                found = await _record_rate(
                    session, tenant_id, template_id, target, failed, runs, now
                )
                await session.commit()
            if found is not None:
                notified.append(found)
                await after_commit(self.publish, [found])
        async with self.sessions() as session:
            repo = SlaRepository(session)
            for pair in await repo.open_rate_breaches():
                if pair in breaching or (budget.hit and pair not in evaluated):
                    continue
                await repo.close_rate_breach(*pair, now)
            await session.commit()
        return notified


def _batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


async def _record_rate(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    template_id: uuid.UUID,
    target: Target,
    failed: int,
    runs: int,
    now: datetime,
) -> Notified | None:
    spec = target.sla
    assert spec.min_success_rate is not None
    rate = (runs - failed) / runs
    inserted = await SlaRepository(session).add_breach(
        tenant_id=tenant_id,
        template_id=template_id,
        kind="SUCCESS_RATE",
        observed=rate,
        target=spec.min_success_rate,
        runs=runs,
        window_seconds=spec.window_seconds,
        started_at=now,
    )
    if inserted is None:
        return None
    return await _notify(
        session,
        tenant_id,
        "SUCCESS_RATE",
        templateId=global_id("Template", template_id),
        source=target.source,
        minSuccessRate=spec.min_success_rate,
        successRate=round(rate, 6),
        runs=runs,
        failed=failed,
        windowSeconds=spec.window_seconds,
    )
