"""What every log line says about where it comes from, bound once in structlog's contextvars
(app/log_config.py merges them into each line, with the trace id when tracing is on):

- the API binds `request_id` per request or socket (app/api/observe.py) and `tenant_id` once
  the caller is authenticated (app/api/context.py); starting an execution binds its
  `execution_id` (app/api/executions.py);
- workers bind, around each activity, `execution_id` and `tenant_id` from its input, and the
  `workflow_id`, `activity` and `attempt` (workers/log_context.py, on every worker).

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

_security = structlog.get_logger("security")
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
