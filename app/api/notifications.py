"""The tenant's notification log (app/notifications): the `notifications` subscription (catch up
after afterSeq from PostgreSQL, then live, each once and in order) and the history connection."""

from __future__ import annotations

import enum
import uuid
from collections.abc import AsyncGenerator
from datetime import datetime
from typing import Any, cast

import strawberry
from strawberry.scalars import JSON

from app.api.context import Context
from app.api.executions import Execution
from app.api.relay import Connection
from app.events import channels
from app.events.bus import Event
from app.models import Notification as NotificationModel
from app.notifications.service import READ_LIMIT, NotificationService, check_types


@strawberry.enum(description="What a notification is about.")
class NotificationType(enum.Enum):
    EXECUTION_COMPLETED = "EXECUTION_COMPLETED"
    EXECUTION_FAILED = "EXECUTION_FAILED"
    EXECUTION_CANCELLED = "EXECUTION_CANCELLED"
    BUDGET_THRESHOLD = strawberry.enum_value(
        "BUDGET_THRESHOLD", description="This month's AI spend crossed the soft threshold."
    )
    BUDGET_EXHAUSTED = strawberry.enum_value(
        "BUDGET_EXHAUSTED",
        description="This month's AI budget cannot pay for the next AI call: AI steps fall "
        "back to their baselines until the month ends or the budget is raised.",
    )
    PUBLISHED = strawberry.enum_value(
        "PUBLISHED", description="An `events.publish` step's message: data {channel, stepId, data}."
    )
    SLA_BREACH = strawberry.enum_value(
        "SLA_BREACH",
        description="A template's SLA was missed (docs/analytics.md, SLAs): a run took longer "
        "than its max duration (once per run), or the success rate over the window fell below "
        "the minimum (once per crossing).",
    )


@strawberry.type(description="One entry of your tenant's notification log.")
class Notification:
    seq: int = strawberry.field(
        description="Position in your tenant's log: 1, 2, 3, ... with no gaps; resume after it."
    )
    type: NotificationType
    created_at: datetime
    data: JSON = strawberry.field(
        description="EXECUTION_*: {status, error (FAILED)}; BUDGET_*: {month, limitUsd, "
        "spentUsd}; PUBLISHED: {channel, stepId, data}; SLA_BREACH: {kind (DURATION or "
        "SUCCESS_RATE), templateId, source (OVERRIDE or VERSION), DURATION: status, "
        "maxDurationSeconds, durationSeconds; SUCCESS_RATE: minSuccessRate, successRate, runs, "
        "failed, windowSeconds}. At most 16 KB; larger data is "
        "{truncated: true, bytes}."
    )
    execution_pk: strawberry.Private[uuid.UUID | None]

    @classmethod
    def from_model(cls, m: NotificationModel) -> Notification:
        return cls(
            seq=m.seq,
            type=NotificationType(m.type),
            created_at=m.created_at,
            data=cast(JSON, m.data),
            execution_pk=m.execution_id,
        )

    @strawberry.field(
        description="The execution it is about, as it is now; null for budget notifications "
        "and once the execution is deleted."
    )
    async def execution(self, info: strawberry.Info[Context, None]) -> Execution | None:
        if self.execution_pk is None:
            return None
        found = await info.context.loaders.executions.load(self.execution_pk)
        return Execution.from_model(found) if found is not None else None


def _type_names(types: list[NotificationType] | None) -> list[str] | None:
    return check_types([t.value for t in types]) if types is not None else None


def _wake_seq(data: dict[str, Any]) -> int | None:
    try:
        return int(data["seq"])
    except (KeyError, TypeError, ValueError):
        return None


@strawberry.type
class NotificationQuery:
    @strawberry.field(description="Your tenant's notifications, newest first.")
    async def notifications(
        self,
        info: strawberry.Info[Context, None],
        first: int | None = 20,
        after: str | None = None,
        types: list[NotificationType] | None = None,
    ) -> Connection[Notification]:
        principal = info.context.principal()
        async with info.context.session() as s:
            page = await NotificationService(s).history(
                principal.tenant_id, first=first, after=after, types=_type_names(types)
            )
        return Connection.build(
            [Notification.from_model(n) for n in page.items],
            page.cursors,
            page.has_next,
            after is not None,
        )


@strawberry.type
class NotificationSubscription:
    @strawberry.subscription(
        description=(
            "Your tenant's notifications (executions ending, AI budget warnings, events.publish "
            "messages), each once and in seq order; never completes. With afterSeq: first "
            "those after it still kept (from PostgreSQL), then live ones; 0 for everything "
            "kept. Without: only what comes next. Resume with the seq of the last one you "
            "saw: nothing is lost and nothing comes twice. types: only these."
        )
    )
    async def notifications(
        self,
        info: strawberry.Info[Context, None],
        after_seq: int | None = None,
        types: list[NotificationType] | None = None,
    ) -> AsyncGenerator[Notification, None]:
        ctx = info.context
        tenant_id = ctx.principal().tenant_id
        wanted = _type_names(types)
        poll = ctx.deps.settings.subscription_poll_seconds
        async with ctx.deps.bus.subscribe(channels.notifications(tenant_id)) as live:
            # Subscribed before reading PostgreSQL, so nothing falls between the two.
            last = max(after_seq, 0) if after_seq is not None else None
            woken = 0  # the highest seq a wake-up announced: committed before it was sent
            while True:
                target = woken
                while True:
                    async with ctx.session() as s:
                        service = NotificationService(s)
                        if last is None:
                            last = await service.head(tenant_id)
                        rows = await service.read_after(tenant_id, last, wanted, READ_LIMIT)
                    for row in rows:
                        ctx.fresh_loaders()
                        yield Notification.from_model(row)
                        last = row.seq
                    if len(rows) < READ_LIMIT:
                        break
                # Every seq up to `target` was visible to the reads: those not yielded are of
                # other types, so the next read starts past them.
                last = max(last, target)
                # Wake-ups past `last` re-read PostgreSQL; so do a Resync (Redis was away: a
                # wake-up may be lost) and a quiet `poll` interval.
                while True:
                    item = await live.get(timeout=poll)
                    if not isinstance(item, Event):
                        break
                    seq = _wake_seq(item.data)
                    if seq is None or seq > last:
                        woken = max(woken, seq or 0)
                        break
