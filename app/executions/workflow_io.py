"""Inputs and outputs of TemplateWorkflow and its activities.

Plain dataclasses, one in and one out per workflow/activity, so fields can be added later
without breaking running workflows. The API builds RunInput; the worker consumes it. Kept free
of SQLAlchemy and other heavy imports because the workflow sandbox re-imports what it touches.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

WORKFLOW_NAME = "TemplateWorkflow"
BATCH_WORKFLOW_NAME = "ForEachBatchWorkflow"
EVENT_SIGNAL = "execution_event"
PAUSE_SIGNAL = "pause"
RESUME_SIGNAL = "resume"
RECORD_EVENT_ACTIVITY = "execution.record_event"
DECIDE_ACTIVITY = "ai.decide"
# ApplicationError types of a step's bad input: refused before the step did anything (the
# workflow may run it again on other input), or found wrong at any point.
INPUT_REFUSED = "StepInputRefused"
INPUT_ERROR = "StepInputError"


@dataclass
class RetryPlan:
    max_attempts: int = 3
    initial_interval_seconds: float = 1.0
    backoff: float = 2.0
    max_interval_seconds: float = 60.0


@dataclass
class CompensatePlan:
    activity: str
    input: dict[str, Any] = field(default_factory=dict)
    timeout_seconds: float = 300.0
    task_queue: str | None = None  # None: the workflow's own queue; a plugin's step: its queue
    # The activity's heartbeat interval (as StepPlan's); None in plans made before it existed,
    # which replay unchanged (no heartbeat timeout).
    heartbeat_seconds: float | None = None


@dataclass
class StepPlan:
    id: str
    activity: str
    input: dict[str, Any] = field(default_factory=dict)
    retry: RetryPlan = field(default_factory=RetryPlan)
    timeout_seconds: float = 300.0
    needs: list[str] = field(default_factory=list)
    when: str | None = None
    for_each: str | None = None
    for_each_concurrency: int = 10
    compensate: CompensatePlan | None = None
    heartbeat_seconds: float | None = None
    enhancements: list[dict[str, Any]] = field(default_factory=list)
    task_queue: str | None = None  # None: the workflow's own queue; AI steps run on the AI queue


@dataclass
class RunLimits:
    """What a template's expressions and steps may cost an execution. These defaults are the
    defaults of the same-named settings (app/settings.py takes them from here) and what
    executions recorded before these fields existed get."""

    max_expression_chars: int = 64 * 1024
    max_rendered_chars: int = 1_000_000
    max_expression_steps: int = 100_000
    max_json_depth: int = 32
    max_for_each_items: int = 10_000
    max_step_input_bytes: int = 1024 * 1024
    # A step's output; a fan-out's item outputs together (they become one step output).
    max_step_output_bytes: int = 1024 * 1024

    @classmethod
    def of(cls, settings: Any) -> RunLimits:
        """From app.settings.Settings (read by name: this module imports no settings)."""
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})


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
    for_each_batch_size: int = 200
    ai_task_queue: str = "ai"  # enhancement points' decisions and AI calls run there
    run_number: int = 1  # 2, 3, ... for retryExecution: event keys get an `r<n>:` prefix
    completed: dict[str, Any] = field(default_factory=dict)  # outputs kept from earlier runs
    limits: RunLimits = field(default_factory=RunLimits)


@dataclass
class ItemEnhancement:
    """An enhancement point of a fan-out step that was decided to enhance: the AI task, how
    its output applies, and each item's rendered task input (None: it did not render)."""

    task: str
    apply: dict[str, str]
    inputs: list[dict[str, Any] | None]


@dataclass
class BatchInput:
    """One slice of a large fan-out, run as a child workflow to bound history size."""

    execution_id: str
    tenant_id: str
    step: StepPlan
    inputs: list[dict[str, Any]]
    first_index: int
    # Enhanced points (their inputs sliced like `inputs`); with any, the child returns
    # {"outputs": [...], "outcomes": [[per item] per point]} instead of the outputs list.
    enhancements: list[ItemEnhancement] = field(default_factory=list)
    ai_task_queue: str = "ai"
    # Bytes of JSON the slice's item outputs may add up to (0: unchecked, slices started
    # before the limit existed).
    max_output_bytes: int = 0


@dataclass
class ExternalEvent:
    """Delivered by `sendExecutionEvent`; a `wait.event` step with the same name consumes it."""

    name: str
    payload: Any = None


@dataclass
class DecideInput:
    tenant_id: str
    task: str
    min_tier: str


@dataclass
class Decision:
    """Whether an enhancement point runs AI, and why (kept in the history: a replay decides
    the same)."""

    enhance: bool
    reason: str  # ENHANCE | TIER | DISABLED | BUDGET | NO_PROVIDER | PROVIDERS_DOWN


@dataclass
class Control:
    """A pause or resume request, with who asked."""

    actor: str
    reason: str | None = None


@dataclass
class StepCall:
    execution_id: str
    tenant_id: str
    step_id: str
    input: dict[str, Any]
    index: int | None = None


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


def run_key(run: int, key: str) -> str:
    """An event key within a run: keys of later runs (retries) carry an `r<n>:` prefix, so
    each run records its own events idempotently. The workflow and the service both use it."""
    return key if run == 1 else f"r{run}:{key}"


def active_point(point: dict[str, Any]) -> bool:
    """Whether an enhancement point runs its AI task and applies the output: `input` present
    (even empty: the task is still called, and may be billed) and a non-empty `apply`."""
    return point.get("input") is not None and bool(point.get("apply"))
