"""Idempotency records for steps with outside effects (an email must not go out twice).

`step_idempotency` maps a key to the result the first successful run returned. `once()` returns
the stored result when the key is known, else runs the effect and records its result. The
record is written after the effect, so a crash in between can still repeat it (at least once,
deduplicated): the effect should carry the key too where the far side can use it (Message-ID).

Retention: every `events.publish` and email step adds a row, so the worker deletes records
older than STEP_IDEMPOTENCY_RETENTION_DAYS in batches (`purge`, from the reconciler's
upkeep loop). A record only matters while Temporal may still retry the step's activity, so
the retention must exceed the longest execution.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import SQLAlchemyError

from app.db import SessionFactory, bound_statement_time
from app.metrics import UPKEEP_FAILURES
from app.models.base import utcnow
from app.models.idempotency import StepIdempotency

log = structlog.get_logger(__name__)
PURGE_BATCH = 5_000
PURGE_TIMEOUT_SECONDS = 10.0


async def recall(sessions: SessionFactory, key: str) -> StepIdempotency | None:
    async with sessions() as session:
        return await session.get(StepIdempotency, key)


async def remember(sessions: SessionFactory, key: str, tenant_id: str, result: Any) -> None:
    """Record `result` under `key`; a record that is already there wins (ON CONFLICT DO NOTHING)."""
    statement = (
        insert(StepIdempotency)
        .values(key=key, tenant_id=uuid.UUID(tenant_id), result=result, created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["key"])
    )
    async with sessions() as session:
        await session.execute(statement)
        await session.commit()


async def once(
    sessions: SessionFactory | None,
    key: str,
    tenant_id: str,
    effect: Callable[[], Awaitable[Any]],
) -> tuple[Any, bool]:
    """`(result, deduplicated)`: the stored result for `key`, or `effect()`'s, now recorded.

    Without `sessions` the effect simply runs. When recording fails after the effect succeeded,
    the result is still returned: failing the step would make Temporal repeat the effect, which
    is exactly what the record is for avoiding.
    """
    if sessions is None:
        return await effect(), False
    stored = await recall(sessions, key)
    if stored is not None:
        return stored.result, True
    result = await effect()
    try:
        await remember(sessions, key, tenant_id, result)
    except (SQLAlchemyError, OSError) as exc:
        log.warning("step.idempotency_record_failed", key=key, tenant_id=tenant_id, error=str(exc))
    return result, False


async def purge(
    sessions: SessionFactory,
    retention_days: float,
    *,
    now: datetime | None = None,
    timeout_seconds: float = PURGE_TIMEOUT_SECONDS,
) -> int:
    """Delete up to PURGE_BATCH records older than `retention_days`; returns how many.
    Never raises: a failure or a DELETE slower than `timeout_seconds` (locked rows) is logged
    and counted (wfs_upkeep_failures_total), and the next round tries again."""
    cutoff = (now or utcnow()) - timedelta(days=retention_days)
    oldest = (
        select(StepIdempotency.key).where(StepIdempotency.created_at < cutoff).limit(PURGE_BATCH)
    )
    try:
        async with sessions() as session:
            await bound_statement_time(session, timeout_seconds)
            result = await session.execute(
                delete(StepIdempotency).where(StepIdempotency.key.in_(oldest))
            )
            await session.commit()
    except (SQLAlchemyError, OSError) as exc:
        UPKEEP_FAILURES.labels(job="step_idempotency.purge").inc()
        log.warning("step.idempotency_purge_failed", error=str(exc))
        return 0
    deleted = int(result.rowcount or 0)  # type: ignore[attr-defined]
    if deleted:
        log.info("step.idempotency_purged", count=deleted)
    return deleted
