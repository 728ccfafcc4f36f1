"""Inputs and outputs of TemplateWorkflow and its activities.

Plain dataclasses, one in and one out per workflow/activity, so fields can be added later
without breaking running workflows. The API builds RunInput; the worker consumes it. Kept free
of SQLAlchemy and other heavy imports because the workflow sandbox re-imports what it touches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

WORKFLOW_NAME = "TemplateWorkflow"
RECORD_EVENT_ACTIVITY = "execution.record_event"


@dataclass
class RetryPlan:
    max_attempts: int = 3
    initial_interval_seconds: float = 1.0
    backoff: float = 2.0
    max_interval_seconds: float = 60.0


@dataclass
class StepPlan:
    id: str
    activity: str
    input: dict[str, Any] = field(default_factory=dict)
    retry: RetryPlan = field(default_factory=RetryPlan)
    timeout_seconds: float = 300.0


@dataclass
class RunInput:
    execution_id: str
    tenant_id: str
    template_name: str
    template_version: int
    params: dict[str, Any]
    steps: list[StepPlan]
    output: Any = None
    max_wait_seconds: float = 7 * 24 * 3600.0


@dataclass
class StepCall:
    execution_id: str
    tenant_id: str
    step_id: str
    input: dict[str, Any]


@dataclass
class EventRecord:
    """One transition to append to the audit trail (idempotent by key)."""

    execution_id: str
    key: str
    type: str
    status: str
    progress: float
    step_id: str | None = None
    message: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    result: Any = None
    error: str | None = None


@dataclass
class Progress:
    done: int
    total: int
    current_step: str | None
    percent: float
    status: str
