"""The notification log: one numbered row per thing a tenant wants to hear about, read in order.

Writers (each inside its own transaction, the caller commits and then calls `wake`):
- the recorder (app/executions/recorder.py), for COMPLETED, FAILED and CANCELLED events, in the
  transaction that records the event, so an execution's end and its notification commit together;
- the AI budget (app/ai/budget.py), once a month per tenant each when the soft threshold is
  crossed and when the budget is exhausted;
- the `events.publish` step (app/steps/notify.py), with the step's channel and data;
- SLAs (app/sla): a run over its duration target (with its terminal event, or from the worker's
  sweep while still open) and a success rate that fell below target (the worker's round).

Ordering: readers resume with an integer `afterSeq` and must see every row exactly once, in
order. The executions feed (app/executions/feed.py) has no sequence across executions and
resumes by time with an overlap, which costs duplicates on resume; a bigserial would have gaps
that commit out of order (a reader at seq 7 could miss 6 committing later). So each tenant has
a counter row (`notification_counters`) that the insert increments in the same statement
(`NotificationRepository.add`: one round trip). The increment holds the counter's row lock
until the writer's transaction ends, so the tenant's next writer gets seq N+1 only after N is
committed (or rolled back, and then reuses N): seqs are visible in order and without gaps, and
`seq > afterSeq` in PostgreSQL is a complete answer. The price is that one tenant's writers
serialise on that row between their insert and their commit, which is why the recorder inserts
at commit time (`Recorder.commit`), never earlier in its transaction.

Live delivery: after commit a writer publishes `{"tenantId", "seq"}` on the tenant's
`notifications:<tenant id>` channel (app/events/channels.py). It carries no data: subscribers
read PostgreSQL after their last seq, so a lost wake-up (Redis down) only delays a
notification until the next Resync or poll, never loses it.

Row shape (`app.models.Notification`; what `NotificationService.read_after` returns to other
services such as webhooks): tenant_id (UUID), seq (int, from 1, per tenant, no gaps except
those retention leaves at the old end), type (one of NOTIFICATION_TYPES), execution_id (UUID or
None; EXECUTION_* and PUBLISHED carry it), data (dict, at most MAX_DATA_BYTES as JSON; larger
data is replaced by {"truncated": true, "bytes": n}), created_at (UTC datetime):
- EXECUTION_*: {"status", "templateId" (the template's GraphQL id, app/ids.py), "error" (FAILED
  only, at most 1,000 characters)};
- BUDGET_THRESHOLD / BUDGET_EXHAUSTED: {"month", "limitUsd", "spentUsd"} (Decimal strings);
- PUBLISHED: {"channel", "stepId", "data"} (the step's channel name and data object);
- SLA_BREACH (app/sla): {"kind": "DURATION" | "SUCCESS_RATE", "templateId", "source":
  "OVERRIDE" | "VERSION"}, plus for DURATION (execution_id set) "status" (RUNNING while still
  open), "maxDurationSeconds", "durationSeconds", and for SUCCESS_RATE "minSuccessRate",
  "successRate", "runs", "failed", "windowSeconds".

Retention: rows older than NOTIFICATION_RETENTION_DAYS are deleted by the worker's periodic
reconciler round (`purge`); counters stay, so seqs never restart.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import ValidationFailed
from app.events import channels
from app.jsonschemas import storable
from app.jsonschemas.bounds import compact_size
from app.models import Notification
from app.models.base import utcnow
from app.models.notification import NOTIFICATION_TYPES
from app.notifications.repository import NotificationRepository
from app.pagination import Page, check_first, decode_cursor, keyset_page

MAX_DATA_BYTES = 16_384
_DATA_DEPTH = 64
READ_LIMIT = 500
PURGE_BATCH = 5_000


def bounded(data: dict[str, Any]) -> dict[str, Any]:
    """`data` as the log stores it: storable in jsonb, and at most MAX_DATA_BYTES."""
    data = storable(data, _DATA_DEPTH)
    size = compact_size(data)
    return data if size <= MAX_DATA_BYTES else {"truncated": True, "bytes": size}


def check_types(types: Sequence[str] | None) -> list[str] | None:
    if types is None:
        return None
    unknown = sorted(set(types) - set(NOTIFICATION_TYPES))
    if unknown:
        raise ValidationFailed(f"unknown notification types: {', '.join(unknown[:5])}")
    return list(dict.fromkeys(types))


class NotificationService:
    def __init__(self, session: AsyncSession) -> None:
        self.repo = NotificationRepository(session)

    async def add(
        self,
        tenant_id: uuid.UUID,
        type: str,
        data: dict[str, Any],
        *,
        execution_id: uuid.UUID | None = None,
        at: datetime | None = None,
    ) -> int:
        """Append to the tenant's log in the caller's transaction; returns its seq. The caller
        commits, then calls `wake`."""
        if type not in NOTIFICATION_TYPES:
            raise ValueError(f"unknown notification type {type!r}")
        return await self.repo.add(tenant_id, type, execution_id, bounded(data), at or utcnow())

    async def read_after(
        self,
        tenant_id: uuid.UUID,
        after_seq: int,
        types: Sequence[str] | None = None,
        limit: int = READ_LIMIT,
    ) -> list[Notification]:
        """The tenant's notifications after `after_seq` (of `types`), oldest first, at most
        `limit`: call again with the last seq until fewer come back. Every committed row is
        returned once (see the module docstring); the interface for other readers (webhooks)."""
        return await self.repo.after(
            tenant_id, max(after_seq, 0), check_types(types), min(limit, READ_LIMIT)
        )

    async def head(self, tenant_id: uuid.UUID) -> int:
        """The tenant's last seq: reading after it returns only what comes next."""
        return await self.repo.head(tenant_id)

    async def history(
        self,
        tenant_id: uuid.UUID,
        *,
        first: int | None,
        after: str | None,
        types: Sequence[str] | None,
    ) -> Page[Notification]:
        """A page of the tenant's notifications, newest first."""
        limit = check_first(first)
        cursor = decode_cursor(after, "int")
        rows = await self.repo.before(
            tenant_id, cursor[0] if cursor else None, check_types(types), limit + 1
        )
        return keyset_page(rows, limit, key=lambda n: [n.seq])

    async def purge(self, retention_days: float, now: datetime | None = None) -> int:
        """Delete one batch of notifications older than the retention; returns how many."""
        cutoff = (now or utcnow()) - timedelta(days=retention_days)
        return await self.repo.delete_older_than(cutoff, PURGE_BATCH)


def wake_message(tenant_id: uuid.UUID | str, seq: int) -> dict[str, Any]:
    return {"tenantId": str(tenant_id), "seq": seq}


async def wake(
    publish: Callable[[str, dict[str, Any]], Awaitable[bool]], tenant_id: uuid.UUID | str, seq: int
) -> bool:
    """Tell live subscribers that the tenant's log reached `seq` (after commit) through
    `publish` (the event bus's); False when Redis is unreachable."""
    return await publish(channels.notifications(tenant_id), wake_message(tenant_id, seq))
