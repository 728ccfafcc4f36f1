"""What every log line says about where it comes from, bound once in structlog's contextvars
(app/log_config.py merges them into each line, with the trace id when tracing is on):

- the API binds `request_id` per request or socket (app/api/observe.py) and `tenant_id` once
  the caller is authenticated (app/api/context.py); starting an execution binds its
  `execution_id` (app/api/executions.py);
- workers bind, around each activity, `execution_id` and `tenant_id` from its input, and the
  `workflow_id`, `activity` and `attempt` (ActivityLogContext, on every Temporal client).

`security_event` is the one way to log a refusal (auth failures, rate and size limits, refused
sockets...): event `security.<what>` at warning level with a `reason`, on the `security`
logger, so operators can route or alert on them. A flood is what these describe, so each
(what, tenant or address) is logged at most once per THROTTLE_SECONDS; the next line says how
many were `suppressed` meanwhile (the metrics count every one).
"""

from __future__ import annotations

import time
from typing import Any

import structlog
from temporalio import activity
from temporalio.client import Interceptor as ClientInterceptor
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
)
from temporalio.worker import (
    Interceptor as WorkerInterceptor,
)

_security = structlog.get_logger("security")
IDS = ("execution_id", "tenant_id")
THROTTLE_SECONDS = 10.0
THROTTLE_KEYS = 10_000  # past this many callers in one window, the table starts over
# (what, tenant or address) -> (when its last line was logged, refusals not logged since)
_last: dict[tuple[str, str], tuple[float, int]] = {}


def security_event(what: str, reason: str, **fields: Any) -> None:
    caller = fields.get("tenant_id") or fields.get("address") or ""
    key, now = (what, str(caller)), time.monotonic()
    logged, suppressed = _last.get(key, (float("-inf"), 0))
    if now - logged < THROTTLE_SECONDS:
        _last[key] = (logged, suppressed + 1)
        return
    if len(_last) >= THROTTLE_KEYS:
        _last.clear()
    _last[key] = (now, 0)
    if suppressed:
        fields["suppressed"] = suppressed
    _security.warning(f"security.{what}", reason=reason, **fields)


def bind(**ids: object) -> None:
    """Bind ids for the rest of this task's log lines (None values are left out)."""
    structlog.contextvars.bind_contextvars(**{k: str(v) for k, v in ids.items() if v is not None})


class ActivityLogContext(ClientInterceptor, WorkerInterceptor):
    """On a client, so every worker built with it binds each activity's ids (a client
    interceptor that is also a worker interceptor is inherited by the client's workers)."""

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
