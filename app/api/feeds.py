"""Dashboard subscriptions: `executionsFeed` (every event of the caller's executions) and
`queueStatus` (Temporal task queues with the caller's running and pending counts)."""

from __future__ import annotations

import asyncio
import enum
import uuid
from collections.abc import AsyncGenerator, Callable, Coroutine
from datetime import datetime
from typing import Any

import strawberry

from app.api.context import Context
from app.api.execution_events import ExecutionEvent
from app.api.executions import Execution
from app.errors import ValidationFailed
from app.events import channels
from app.events.bus import Resync
from app.executions.feed import OVERLAP, ExecutionFeed, FeedRepository, Offer
from app.models import Execution as ExecutionModel
from app.models import ExecutionEvent as EventModel
from app.models.base import utcnow
from app.temporal_queues import QueueSnapshot, TaskTypeStatus, inspector_for
from app.tenants.service import Principal

MIN_INTERVAL, MAX_INTERVAL = 1, 60


@strawberry.type(description="One event of one of your executions, with that execution.")
class ExecutionsFeedItem:
    execution: Execution = strawberry.field(
        description="The execution as it is when this item is sent (not as of the event)."
    )
    event: ExecutionEvent


@strawberry.enum
class TaskQueuePurpose(enum.Enum):
    WORKFLOWS = "WORKFLOWS"
    AI = "AI"
    WEBHOOKS = "WEBHOOKS"


@strawberry.type(description="Workers polling one task type of a queue, and its backlog.")
class TaskQueueTasks:
    pollers: int = strawberry.field(description="Workers that polled this task type recently.")
    backlog: int | None = strawberry.field(
        description="Approximate number of tasks waiting; null when Temporal does not say."
    )
    backlog_age_seconds: float | None = strawberry.field(
        description="How long the oldest waiting task has waited; null when unknown."
    )

    @classmethod
    def from_status(cls, status: TaskTypeStatus | None) -> TaskQueueTasks | None:
        if status is None:
            return None
        return cls(
            pollers=len(status.pollers),
            backlog=status.backlog,
            backlog_age_seconds=status.backlog_age_seconds,
        )


@strawberry.type(
    description="A Temporal task queue of this service. Pollers and backlog are the whole "
    "service's; running and pending count only your executions."
)
class QueueStatus:
    name: str
    purpose: TaskQueuePurpose
    backlog: int | None = strawberry.field(
        description="Approximate workflow plus activity tasks waiting; null when unknown."
    )
    pollers: int | None = strawberry.field(
        description="Distinct workers polling the queue; null when Temporal could not be asked."
    )
    workflow_tasks: TaskQueueTasks | None = strawberry.field(
        description="Workflow tasks; null when Temporal could not be asked."
    )
    activity_tasks: TaskQueueTasks | None = strawberry.field(
        description="Activity tasks; null when Temporal could not be asked."
    )
    running: int | None = strawberry.field(
        description="Your RUNNING executions (they run on the WORKFLOWS queue; null for AI "
        "and WEBHOOKS)."
    )
    pending: int | None = strawberry.field(
        description="Your PENDING executions (WORKFLOWS queue; null for AI and WEBHOOKS)."
    )
    at: datetime

    @classmethod
    def build(
        cls,
        snapshot: QueueSnapshot,
        purpose: TaskQueuePurpose,
        counts: dict[str, int] | None,
        at: datetime,
    ) -> QueueStatus:
        return cls(
            name=snapshot.name,
            purpose=purpose,
            backlog=snapshot.backlog,
            pollers=snapshot.pollers,
            workflow_tasks=TaskQueueTasks.from_status(snapshot.workflow),
            activity_tasks=TaskQueueTasks.from_status(snapshot.activity),
            running=counts["RUNNING"] if counts is not None else None,
            pending=counts["PENDING"] if counts is not None else None,
            at=at,
        )


def _swept_item(ctx: Context, event: EventModel, execution: ExecutionModel) -> ExecutionsFeedItem:
    ctx.fresh_loaders().executions.prime(execution.id, execution)
    return ExecutionsFeedItem(
        execution=Execution.from_model(execution), event=ExecutionEvent.from_model(event)
    )


class _Shared:
    """One answer per key per second for every subscriber in this process: a tenant with
    hundreds of `queueStatus` subscriptions costs one PostgreSQL count and two Temporal
    describes a second, not hundreds."""

    def __init__(self, ttl: float = 1.0) -> None:
        self.ttl = ttl
        self._answers: dict[object, tuple[float, asyncio.Task[list[QueueStatus]]]] = {}

    async def get(
        self, key: object, make: Callable[[], Coroutine[Any, Any, list[QueueStatus]]]
    ) -> list[QueueStatus]:
        now = asyncio.get_running_loop().time()
        found = self._answers.get(key)
        if found is None or found[0] <= now or (found[1].done() and found[1].exception()):
            for stale in [k for k, (until, _) in self._answers.items() if until <= now]:
                del self._answers[stale]
            found = (now + self.ttl, asyncio.ensure_future(make()))
            self._answers[key] = found
        return await asyncio.shield(found[1])


_SHARED_STATUS = _Shared()


async def _queue_statuses(ctx: Context, principal: Principal) -> list[QueueStatus]:
    return await _SHARED_STATUS.get(
        principal.tenant_id, lambda: _read_queue_statuses(ctx, principal)
    )


async def _read_queue_statuses(ctx: Context, principal: Principal) -> list[QueueStatus]:
    settings = ctx.deps.settings
    inspector = inspector_for(ctx.deps.temporal)

    async def counts() -> dict[str, int]:
        async with ctx.session() as s:
            return await FeedRepository(s).status_counts(
                principal.tenant_id, ("PENDING", "RUNNING")
            )

    main, ai, webhooks, own = await asyncio.gather(
        inspector.describe(settings.temporal_task_queue),
        inspector.describe(settings.ai_task_queue),
        inspector.describe(settings.webhook_task_queue),
        counts(),
    )
    at = utcnow()
    return [
        QueueStatus.build(main, TaskQueuePurpose.WORKFLOWS, own, at),
        QueueStatus.build(ai, TaskQueuePurpose.AI, None, at),
        QueueStatus.build(webhooks, TaskQueuePurpose.WEBHOOKS, None, at),
    ]


@strawberry.type
class FeedSubscription:
    @strawberry.subscription(
        description=(
            "Every event of every one of your executions (all event types, as in "
            "executionUpdates), each with the execution's current status, progress and "
            "template; never completes. First the events recorded after `since` minus "
            f"{OVERLAP.seconds} seconds (default: now; at most 24 hours ago), from PostgreSQL "
            "in (at, execution, seq) order, then live ones; events of one execution arrive "
            "in seq order. Resume with the `at` of the last event you saw: nothing is lost, "
            f"and only events of those last {OVERLAP.seconds} seconds can come again "
            "(dedupe by execution id and seq)."
        )
    )
    async def executions_feed(
        self, info: strawberry.Info[Context, None], since: datetime | None = None
    ) -> AsyncGenerator[ExecutionsFeedItem, None]:
        ctx = info.context
        principal = ctx.principal()
        feed = ExecutionFeed(ctx.deps.sessions, principal.tenant_id, since)
        poll = ctx.deps.settings.subscription_poll_seconds
        loop = asyncio.get_running_loop()
        async with ctx.deps.bus.subscribe(
            channels.tenant(principal.tenant_id, channels.EXECUTIONS)
        ) as live:
            # Subscribed before reading PostgreSQL, so nothing falls between the two.
            while True:
                async for event, execution in feed.sweep():
                    yield _swept_item(ctx, event, execution)
                # Live events go straight through while they follow on; a Resync, a gap or
                # `poll` seconds (busy or not) re-read PostgreSQL above the feed's floor.
                deadline = loop.time() + poll
                while (remaining := deadline - loop.time()) > 0:
                    item = await live.get(timeout=remaining)
                    if item is None:  # the poll interval is over, or the bus closed
                        await asyncio.sleep(max(0.0, deadline - loop.time()))
                        break
                    if isinstance(item, Resync):
                        break
                    offer = feed.offer(item.data)
                    if offer is Offer.SWEEP:
                        break
                    if offer is Offer.SKIP:
                        continue
                    loaders = ctx.fresh_loaders()
                    current = await loaders.executions.load(uuid.UUID(item.data["executionId"]))
                    if current is not None:  # tenant-scoped: None if not the caller's
                        yield ExecutionsFeedItem(
                            execution=Execution.from_model(current),
                            event=ExecutionEvent.from_message(item.data),
                        )

    @strawberry.subscription(
        description=(
            "The service's task queues (WORKFLOWS, AI and WEBHOOKS) every intervalSeconds "
            "(1-60): "
            "Temporal's pollers and approximate backlog, and your running and pending "
            "executions from PostgreSQL; never completes."
        )
    )
    async def queue_status(
        self, info: strawberry.Info[Context, None], interval_seconds: int = 5
    ) -> AsyncGenerator[list[QueueStatus], None]:
        ctx = info.context
        principal = ctx.principal()
        if not MIN_INTERVAL <= interval_seconds <= MAX_INTERVAL:
            raise ValidationFailed(
                f"intervalSeconds must be {MIN_INTERVAL}-{MAX_INTERVAL}, not {interval_seconds}"
            )
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            yield await _queue_statuses(ctx, principal)
            # A fixed schedule: the time spent asking does not stretch the interval.
            next_at = max(next_at + interval_seconds, loop.time())
            await asyncio.sleep(next_at - loop.time())
