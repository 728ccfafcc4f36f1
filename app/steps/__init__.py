"""Standard step activities, registered by the name a template step uses.

`STEP_ACTIVITIES` maps every activity name a template may use to its `StepActivity` (description,
input JSON Schema, `run`). The worker registers one Temporal activity per entry with a `run`;
names in `WORKFLOW_NATIVE` (durable timers, events) have `run=None`: the workflow implements
them. One module per family: data, files, http, email, wait, text (non-AI baselines of the AI
tasks) and notify (`events.publish`); the contract is in `base`.

Plugins add steps at start (app/plugins/registry.py) to `PLUGIN_ACTIVITIES`, named
`<plugin>.<step>`, with `run=None` (their own worker serves them on `task_queue`);
`find_activity` looks a name up in both, so template checks and plans know every step.
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
# Steps and AI steps the loaded plugins add; filled once at process start, never by tenants.
PLUGIN_ACTIVITIES: dict[str, StepActivity] = {}


def find_activity(name: str) -> StepActivity | None:
    """The built-in or plugin step activity of that name (None: unknown)."""
    return STEP_ACTIVITIES.get(name) or PLUGIN_ACTIVITIES.get(name)


def activity_names() -> list[str]:
    """Every step activity name a template may use, sorted."""
    return sorted({*STEP_ACTIVITIES, *PLUGIN_ACTIVITIES})


__all__ = [
    "PLUGIN_ACTIVITIES",
    "STEP_ACTIVITIES",
    "WORKFLOW_NATIVE",
    "StepActivity",
    "StepContext",
    "StepInputError",
    "StepInputRefused",
    "StepTransientError",
    "activity_names",
    "aggregate",
    "find_activity",
    "transform",
]
