"""`events.publish`: an in-app notification on the tenant's live channel.

The message goes to the Redis channel `tenant:<tenant id>:<channel>` (e.g. `notifications`)
that the tenant's connected frontends listen to, and is returned as the step output, so it
also stays in the execution's result and audit trail when nobody is listening.
"""

from __future__ import annotations

from typing import Any

from app.events import channels
from app.models.base import utcnow
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
    delivered = await ctx.publish(channels.tenant(ctx.tenant_id, input["channel"]), message)
    if not delivered and input.get("require_delivery", False):
        raise StepTransientError("the event bus is unreachable")
    return {**message, "delivered": delivered}


ACTIVITIES: list[StepActivity] = [
    define(
        "events.publish",
        "publish an in-app notification on the tenant's live channel (e.g. notifications)",
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
