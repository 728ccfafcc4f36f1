"""`wait.*`: steps the workflow runs itself (durable timers and signals), so `run` is None.

Their schemas still describe the input, so templates are checked like any other step.
`wait.timer {seconds}` sleeps durably (survives worker restarts). `wait.event {event,
timeout_seconds, on_timeout}` waits for the named event sent to the execution; after
`timeout_seconds` it fails the step (`on_timeout: fail`, the default) or continues with
`{"received": false}` (`continue`).
"""

from __future__ import annotations

from app.steps.base import StepActivity, define

ACTIVITIES: list[StepActivity] = [
    define(
        "wait.timer",
        "durable timer: waits `seconds` (survives worker restarts)",
        {
            "type": "object",
            "required": ["seconds"],
            "additionalProperties": False,
            "properties": {"seconds": {"type": "number", "minimum": 0}},
        },
        None,
    ),
    define(
        "wait.event",
        "wait for a named event sent to the execution, up to `timeout_seconds`",
        {
            "type": "object",
            "required": ["event", "timeout_seconds"],
            "additionalProperties": False,
            "properties": {
                "event": {"type": "string", "minLength": 1, "maxLength": 200},
                "timeout_seconds": {"type": "number", "exclusiveMinimum": 0},
                "on_timeout": {"enum": ["fail", "continue"], "default": "fail"},
            },
        },
        None,
    ),
]
