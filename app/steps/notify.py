"""`events.publish`: an in-app notification for the tenant's frontends.

The message is appended to the tenant's notification log (app/notifications, type PUBLISHED,
data `{channel, stepId, data}`), once per execution and step (an idempotency record in the same
transaction, so a retried attempt adds nothing), and the log's live readers are woken: the
`notifications` subscription delivers it even to a frontend that was offline when it was sent.
For compatibility it is also still published on the Redis channel `tenant:<tenant id>:<channel>`
(e.g. `notifications`), which only reaches who listens at that moment, and returned as the step
output, so it stays in the execution's result and audit trail too.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from app.db import SessionFactory
from app.events import channels
from app.models.base import utcnow
from app.models.idempotency import StepIdempotency
from app.notifications.service import NotificationService, wake
from app.steps.base import StepActivity, StepContext, StepTransientError, define


async def publish(input: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    message = {
        "channel": input["channel"],
        "data": input["data"],
        "executionId": ctx.execution_id,
        "stepId": ctx.step_id,
        "at": utcnow().isoformat(),
    }
    if ctx.publish is None:
        raise StepTransientError("no event bus in this worker")
    seq = await _log(ctx.sessions, ctx, message) if ctx.sessions is not None else None
    delivered = await ctx.publish(channels.tenant(ctx.tenant_id, input["channel"]), message)
    if seq is not None:
        await wake(ctx.publish, ctx.tenant_id, seq)  # a lost wake-up: readers poll the log
    if not delivered and input.get("require_delivery", False):
        raise StepTransientError("the event bus is unreachable")
    return {**message, "delivered": delivered}


async def _log(sessions: SessionFactory, ctx: StepContext, message: dict[str, Any]) -> int | None:
    """Append the PUBLISHED notification unless this step recorded it before; its seq, or None
    (recorded before, or no such tenant any more). A database failure retries the step."""
    key = f"events.publish:{ctx.tenant_id}:{ctx.execution_id}:{ctx.step_id}"
    tenant_id, execution_id = _uuid(ctx.tenant_id), _uuid(ctx.execution_id)
    if tenant_id is None:  # a step run outside any tenant (tools, tests): no log to write
        return None
    data = {"channel": message["channel"], "stepId": ctx.step_id, "data": message["data"]}
    try:
        async with sessions() as session:
            if await session.get(StepIdempotency, key) is not None:
                return None
            seq = await NotificationService(session).add(
                tenant_id, "PUBLISHED", data, execution_id=execution_id
            )
            session.add(StepIdempotency(key=key, tenant_id=tenant_id, result={"seq": seq}))
            await session.commit()
            return seq
    except IntegrityError:  # a concurrent attempt recorded it, or the tenant is gone
        return None
    except (SQLAlchemyError, OSError) as exc:
        raise StepTransientError(f"could not record the notification: {exc}") from exc


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


ACTIVITIES: list[StepActivity] = [
    define(
        "events.publish",
        "publish an in-app notification to the tenant's notification log and live channel",
        {
            "type": "object",
            "required": ["channel", "data"],
            "additionalProperties": False,
            "properties": {
                # The service's own channels of the tenant (the executions feed, AI budget
                # warnings) are not for templates: a message there would reach their readers.
                "channel": {
                    "type": "string",
                    "pattern": "^[a-z][a-z0-9_-]{0,40}$",
                    "not": {"enum": list(channels.RESERVED)},
                },
                "data": {"type": "object"},
                "require_delivery": {"type": "boolean"},
            },
        },
        publish,
    )
]
