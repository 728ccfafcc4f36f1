"""Retention of SLA breach rows (SLA_BREACH_RETENTION_DAYS): the worker's upkeep deletes a batch
of the oldest each reconciler round, as it does notifications (app/executions/reconciler.py).

What counts as old: a DURATION breach by when it was found (`started_at`); a SUCCESS_RATE breach
by when its rate recovered (`ended_at`), so a report over the longest window finds every rate
breach that overlaps it. An open breach is never deleted, as it is what keeps the next
evaluation rounds from notifying again: a SUCCESS_RATE breach whose rate is still below target,
and a DURATION breach whose run is still open (RUNNING or PAUSED for longer than the retention:
deleted, `open_past_target` would find the run again and notify and record it anew). Both are found
through `ix_sla_breaches_started_at` (a breach ends after it starts, so an old end has an old
start), in batches, so one round's DELETE stays short however large the backlog.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, delete, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Execution, SlaBreach
from app.models.base import utcnow
from app.sla.repository import OPEN_RUN

PURGE_BATCH = 5_000


async def delete_breaches_before(session: AsyncSession, cutoff: datetime, limit: int) -> int:
    """Delete up to `limit` breach rows that ended before `cutoff` (a DURATION breach ends when
    it is found); returns how many. Open SUCCESS_RATE rows, and DURATION rows of runs still
    open, stay."""
    run_open = exists().where(Execution.id == SlaBreach.execution_id, OPEN_RUN)
    oldest = (
        select(SlaBreach.id)
        .where(
            SlaBreach.started_at < cutoff,
            or_(
                and_(SlaBreach.kind == "DURATION", ~run_open),
                and_(SlaBreach.kind != "DURATION", SlaBreach.ended_at < cutoff),
            ),
        )
        .limit(limit)
    )
    result = await session.execute(delete(SlaBreach).where(SlaBreach.id.in_(oldest)))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def purge_breaches(
    session: AsyncSession, retention_days: float, now: datetime | None = None
) -> int:
    """Delete one batch of breaches older than the retention; the caller commits."""
    cutoff = (now or utcnow()) - timedelta(days=retention_days)
    return await delete_breaches_before(session, cutoff, PURGE_BATCH)
