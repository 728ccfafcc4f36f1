"""Standard step activities: pure business logic the worker's activities call.

`STEP_ACTIVITIES` maps each activity name a template may use to a short description. Names
handled by the workflow itself (durable timers) are in `WORKFLOW_NATIVE`.
"""

from app.steps.data import aggregate, transform

STEP_ACTIVITIES: dict[str, str] = {
    "data.transform": "reshape records: pick, rename, set, upper, lower, strip, filter, sort",
    "data.aggregate": "count, sum, min, max and average of fields over a list of records",
    "wait.timer": "durable timer: waits `seconds` (survives worker restarts)",
}
WORKFLOW_NATIVE = frozenset({"wait.timer"})

__all__ = ["STEP_ACTIVITIES", "WORKFLOW_NATIVE", "aggregate", "transform"]
