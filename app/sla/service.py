"""SLA rules: which targets are in force, a run's duration judged when it ends, and the
periodic evaluation (runs open past their target, success rates over their windows).

In force for a run: the tenant's override of the template when there is one, else the `sla`
block of the version the run ran. For a success rate over a window, which spans runs of
several versions: the override, else the template's latest version's block.

Notified once: a breach is a row in sla_breaches before it is a notification, inserted with ON
CONFLICT DO NOTHING against a unique index (one DURATION row per execution; one open
SUCCESS_RATE row per tenant and template), and only the transaction that inserted it appends
the SLA_BREACH notification, in the same transaction. So the sweep and the run's end, or two
workers' evaluation rounds, never notify twice; a rate that stays below target is notified when
it crosses, and again only after it has recovered (the open row closed) and crossed again.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import SessionFactory
from app.ids import global_id
from app.metrics import EVENT_PUBLISH_FAILURES, SLA_BREACHES
from app.models import Execution, TemplateSla
from app.models.base import utcnow
from app.notifications.service import NotificationService, wake
from app.sla.repository import SlaRepository
from app.sla.spec import SlaSpec

log = structlog.get_logger(__name__)
OVERRIDE, VERSION = "OVERRIDE", "VERSION"
# Runs open past their target recorded per round (oldest first; the next round goes on).
SWEEP_LIMIT = 500
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


def override_spec(row: TemplateSla) -> SlaSpec:
    return SlaSpec(
        max_duration_seconds=row.max_duration_seconds,
        min_success_rate=row.min_success_rate,
        window_seconds=row.window_seconds,
        min_runs=row.min_runs,
    )


def in_force(override: TemplateSla | None, version_sla: dict[str, Any] | None) -> Target | None:
    if override is not None:
        return Target(override_spec(override), OVERRIDE)
    spec = SlaSpec.stored(version_sla)
    return Target(spec, VERSION) if spec is not None else None


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


class SlaMonitor:
    """The worker's periodic SLA round (`run_round`, every SLA_EVALUATE_INTERVAL_SECONDS)."""

    def __init__(self, sessions: SessionFactory, publish: Publish | None) -> None:
        self.sessions, self.publish = sessions, publish

    async def run_round(self, now: datetime | None = None) -> list[Notified]:
        """Record runs open past their duration target, then evaluate success rates; returns
        the breaches it notified."""
        now = now or utcnow()
        return [*await self.sweep_open(now), *await self.evaluate_rates(now)]

    async def sweep_open(self, now: datetime) -> list[Notified]:
        """Each breach commits on its own: a notification holds its tenant's log counter
        until commit, and one tenant's recorder must not wait for a whole sweep."""
        async with self.sessions() as session:
            rows = await SlaRepository(session).open_past_target(now, SWEEP_LIMIT)
        notified = []
        for row in rows:
            target = Target(
                SlaSpec(max_duration_seconds=row.target), OVERRIDE if row.overridden else VERSION
            )
            async with self.sessions() as session:
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
        self, repo: SlaRepository, now: datetime
    ) -> dict[tuple[uuid.UUID, uuid.UUID], tuple[Target, int, int]]:
        """(tenant, template) -> (target, completed, failed) over the target's window, for
        every pair with a success-rate target in force and runs in its window."""
        overrides = await repo.overrides()
        overridden = {(o.tenant_id, o.template_id) for o in overrides}
        found: dict[tuple[uuid.UUID, uuid.UUID], tuple[Target, int, int]] = {}
        for template_id, block in (await repo.latest_version_slas()).items():
            spec = SlaSpec.stored(block)
            if spec is None or spec.min_success_rate is None:
                continue
            since = now - timedelta(seconds=spec.window_seconds)
            for tenant_id, completed, failed in await repo.outcomes_since(template_id, since):
                if (tenant_id, template_id) not in overridden:
                    found[tenant_id, template_id] = (Target(spec, VERSION), completed, failed)
        for o in overrides:
            if o.min_success_rate is None:
                continue
            since = now - timedelta(seconds=o.window_seconds)
            for tenant_id, completed, failed in await repo.outcomes_since(
                o.template_id, since, o.tenant_id
            ):
                found[tenant_id, o.template_id] = (
                    Target(override_spec(o), OVERRIDE),
                    completed,
                    failed,
                )
        return found

    async def evaluate_rates(self, now: datetime) -> list[Notified]:
        """Open a breach (and notify) for each pair whose rate is below target over at least
        min_runs ended runs, unless one is open; close the open ones that are not (any more).
        Each breach commits on its own (see sweep_open)."""
        async with self.sessions() as session:
            evaluated = await self._rate_targets(SlaRepository(session), now)
        notified, breaching = [], set()
        for (tenant_id, template_id), (target, completed, failed) in evaluated.items():
            spec = target.sla
            assert spec.min_success_rate is not None
            runs = completed + failed
            if runs < spec.min_runs or _ratio(completed, failed) >= spec.min_success_rate:
                continue
            breaching.add((tenant_id, template_id))
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
                if pair not in breaching:
                    await repo.close_rate_breach(*pair, now)
            await session.commit()
        return notified


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
