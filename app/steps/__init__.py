"""Standard step activities, registered by the name a template step uses.

`STEP_ACTIVITIES` maps every activity name a template may use to its `StepActivity` (description,
input JSON Schema, `run`). The worker registers one Temporal activity per entry with a `run`;
names in `WORKFLOW_NATIVE` (durable timers, events) have `run=None`: the workflow implements
them. One module per family: data, files, http, email, wait, text (non-AI baselines of the AI
tasks) and notify (`events.publish`); the contract is in `base`.
"""

from app.steps import ai, data, email, files, http, notify, text, wait
from app.steps.base import (
    StepActivity,
    StepContext,
    StepInputError,
    StepInputRefused,
    StepTransientError,
)
from app.steps.data import aggregate, transform

_FAMILIES: list[list[StepActivity]] = [
    data.ACTIVITIES,
    files.ACTIVITIES,
    http.ACTIVITIES,
    email.ACTIVITIES,
    text.TEXT_ACTIVITIES,
    notify.ACTIVITIES,
    wait.ACTIVITIES,
    ai.ACTIVITIES,
]
STEP_ACTIVITIES: dict[str, StepActivity] = {
    activity.name: activity for family in _FAMILIES for activity in family
}
WORKFLOW_NATIVE = frozenset({"wait.timer", "wait.event"})

__all__ = [
    "STEP_ACTIVITIES",
    "WORKFLOW_NATIVE",
    "StepActivity",
    "StepContext",
    "StepInputError",
    "StepInputRefused",
    "StepTransientError",
    "aggregate",
    "transform",
]
