"""The tenant-wide execution feed (catch-up window, de-duplication, SQL) and dashboard counts.

There is no sequence across executions, so the feed is ordered and resumed by time: every
event carries `at`, and the feed sends the tenant's events with `at` after a *floor*, in
(at, execution, seq) order from PostgreSQL and live from Redis in between.

`at` is taken when a worker records an event, before its transaction commits, so commits can
reach PostgreSQL out of `at` order (and workers' clocks differ a little). A floor exactly at the
last `at` seen could therefore skip an event committed a moment later with a slightly earlier
`at`. The feed keeps its floor `OVERLAP` behind what it has seen and remembers what it sent
above the floor, so within one subscription nothing is lost or sent twice (as long as commits
lag their `at` by less than `OVERLAP`). A client resuming with `since` gets the events after
`since - OVERLAP`: the only duplicates the feed ever sends are those (dedupe by execution and
seq).

Re-reads ("sweeps") happen at the start, after a Resync from the bus, when a live event does
not follow on from the last one sent for its execution, and at least every poll interval.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import SessionFactory
from app.errors import ValidationFailed
from app.models import Execution, ExecutionEvent
from app.models.base import utcnow

OVERLAP = timedelta(seconds=5)
MAX_REPLAY = timedelta(hours=24)
SWEEP_BATCH = 500

EventKey = tuple[uuid.UUID, int]  # (execution id, seq)
Position = tuple[datetime, uuid.UUID, int]  # (at, execution id, seq): the feed's order


class FeedRepository:
    """SQL behind the dashboard subscriptions (executionsFeed, queueStatus)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def events_after(
        self,
        tenant_id: uuid.UUID,
        floor: datetime,
        after: Position | None,
        limit: int,
    ) -> list[tuple[ExecutionEvent, Execution]]:
        """The tenant's events with `at` > floor (and after `after`), in feed order."""
        query = (
            select(ExecutionEvent, Execution)
            .join(Execution, Execution.id == ExecutionEvent.execution_id)
            .where(
                Execution.tenant_id == tenant_id,
                # Recording an event always updates its execution row (last_seq), so updated_at
                # >= every event's at: this skips the executions that have been quiet since.
                Execution.updated_at >= floor,
                ExecutionEvent.at > floor,
            )
            .order_by(ExecutionEvent.at, ExecutionEvent.execution_id, ExecutionEvent.seq)
            .limit(limit)
        )
        if after is not None:
            query = query.where(
                tuple_(ExecutionEvent.at, ExecutionEvent.execution_id, ExecutionEvent.seq) > after
            )
        rows = await self.session.execute(query)
        return [(event, execution) for event, execution in rows.tuples()]

    async def status_counts(
        self, tenant_id: uuid.UUID, statuses: tuple[str, ...]
    ) -> dict[str, int]:
        """How many of the tenant's executions are in each of `statuses` (0 when none)."""
        rows = await self.session.execute(
            select(Execution.status, func.count())
            .where(Execution.tenant_id == tenant_id, Execution.status.in_(statuses))
            .group_by(Execution.status)
        )
        counts = dict.fromkeys(statuses, 0)
        counts.update({status: int(n) for status, n in rows.tuples()})
        return counts


class Offer(enum.Enum):
    """What to do with a live event: send it, ignore it, or re-read PostgreSQL first."""

    SEND = "send"
    SKIP = "skip"
    SWEEP = "sweep"


class ExecutionFeed:
    """One subscription's position in its tenant's feed: what it sent and where to re-read."""

    def __init__(
        self, sessions: SessionFactory, tenant_id: uuid.UUID, since: datetime | None
    ) -> None:
        now = utcnow()
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=UTC)  # DateTime without an offset is UTC here
        if since is not None and since < now - MAX_REPLAY:
            raise ValidationFailed(
                "since must be within the last 24 hours; read older events with "
                "executions { events }"
            )
        self._sessions, self.tenant_id = sessions, tenant_id
        self.floor = (since or now) - OVERLAP  # events at or before it count as done
        self._high = self._mark = self.floor  # newest `at` sent; _high as of the last sweep
        self._sent: dict[EventKey, datetime] = {}  # events sent with `at` above the floor
        self._last: dict[uuid.UUID, tuple[int, datetime]] = {}  # last (seq, at) sent per execution

    async def sweep(self) -> AsyncIterator[tuple[ExecutionEvent, Execution]]:
        """Events in PostgreSQL above the floor not sent yet, in feed order."""
        self._settle()
        after: Position | None = None
        while True:
            async with self._sessions() as session:
                rows = await FeedRepository(session).events_after(
                    self.tenant_id, self.floor, after, SWEEP_BATCH
                )
            for event, execution in rows:
                if (event.execution_id, event.seq) not in self._sent:
                    self._record(event.execution_id, event.seq, event.at)
                    yield event, execution
            if len(rows) < SWEEP_BATCH:
                self._mark = self._high
                return
            last = rows[-1][0]
            after = (last.at, last.execution_id, last.seq)

    def offer(self, message: dict[str, Any]) -> Offer:
        """Decide about a live bus message; SEND means it is now recorded as sent."""
        try:
            if message["tenantId"] != str(self.tenant_id):
                return Offer.SKIP  # never another tenant's event, whatever the channel carried
            execution_id, seq = uuid.UUID(message["executionId"]), int(message["seq"])
            at = datetime.fromisoformat(message["at"])
        except (KeyError, TypeError, ValueError):
            return Offer.SWEEP  # a message we cannot read: PostgreSQL has the event
        if (execution_id, seq) in self._sent or at <= self.floor:
            return Offer.SKIP  # sent already (or recorded again by a retried activity)
        last = self._last.get(execution_id)
        if seq != (last[0] + 1 if last is not None else 1):
            return Offer.SWEEP  # a gap, or an execution met mid-way: re-read to keep seq order
        self._record(execution_id, seq, at)
        return Offer.SEND

    def _record(self, execution_id: uuid.UUID, seq: int, at: datetime) -> None:
        self._sent[(execution_id, seq)] = at
        last = self._last.get(execution_id)
        if last is None or seq > last[0]:
            self._last[execution_id] = (seq, at)
        self._high = max(self._high, at)

    def _settle(self) -> None:
        """Move the floor up to OVERLAP behind what the previous sweep had seen; forget below it.

        Using the previous sweep's mark (not the newest event) means every event committed
        since that sweep, with an `at` up to OVERLAP older than anything seen then, is above
        the floor of this one.
        """
        floor = max(self.floor, self._mark - OVERLAP)
        if floor == self.floor:
            return
        self.floor = floor
        self._sent = {k: at for k, at in self._sent.items() if at > floor}
        self._last = {k: v for k, v in self._last.items() if v[1] > floor}
