"""The log context of activities (app/log_context.py says what every line carries): around
each activity, `execution_id` and `tenant_id` from its input, and its `workflow_id`, `activity`
and `attempt`, bound for every line it logs, a library's included."""

from __future__ import annotations

from typing import Any

import structlog
from temporalio import activity
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

IDS = ("execution_id", "tenant_id")


class ActivityLogContext(Interceptor):
    """Given to every Worker (workers/main.py)."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _BindActivityIds(next)


class _BindActivityIds(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        ids: dict[str, Any] = {
            "workflow_id": info.workflow_id,
            "activity": info.activity_type,
            "attempt": info.attempt,
        }
        # One dataclass in (STYLE.md): an execution's activities carry its ids.
        first = input.args[0] if input.args else None
        for name in IDS:
            value = getattr(first, name, None)
            if isinstance(value, str):
                ids[name] = value
        with structlog.contextvars.bound_contextvars(**ids):
            return await super().execute_activity(input)
