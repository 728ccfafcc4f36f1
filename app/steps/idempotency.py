"""Idempotency records for steps with outside effects (an email must not go out twice).

`step_idempotency` maps a key to the result the first successful run returned. `once()` returns
the stored result when the key is known, else runs the effect and records its result. The
record is written after the effect, so a crash in between can still repeat it (at least once,
deduplicated): the effect should carry the key too where the far side can use it (Message-ID).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import SQLAlchemyError

from app.db import SessionFactory
from app.models.base import utcnow
from app.models.idempotency import StepIdempotency

log = structlog.get_logger(__name__)


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
