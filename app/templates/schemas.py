"""The template spec (pydantic) and its validation, which reports every problem with its path.

A spec and the params of an execution come from tenants: they are measured against the size and
depth caps before anything recursive reads them, their JSON Schema goes through
app.jsonschemas (no retrieval, linear keywords, a deadline), and the async entry points
(`bounded`) run the checks off the event loop within `validation_timeout_seconds`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from app import jsonschemas
from app.errors import ValidationFailed
from app.executions.workflow_io import CompensatePlan, RetryPlan, StepPlan
from app.settings import Settings
from app.sla.spec import SlaSpec
from app.steps import find_activity
from app.steps.base import LIVENESS_HEARTBEAT_SECONDS
from app.templates.checks import resolved_needs, spec_problems
from app.templates.expressions import Limits
from app.tiers import DEFAULT_ENHANCEMENT_TIER

if TYPE_CHECKING:
    from app.tenants.plugin_access import PluginAccess

T = TypeVar("T")

NAME_PATTERN = r"^[a-z][a-z0-9-]{0,98}[a-z0-9]$"
STEP_ID_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"


class RetrySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(3, ge=1, le=100)
    initial_interval_seconds: float = Field(1.0, gt=0, le=3600)
    backoff: float = Field(2.0, ge=1, le=10)
    max_interval_seconds: float = Field(60.0, gt=0, le=86400)


class CompensateSpec(BaseModel):
    """A cleanup action run when the execution fails or is cancelled after this step ran."""

    model_config = ConfigDict(extra="forbid")

    activity: str
    input: dict[str, Any] = Field(default_factory=dict)
    timeout_seconds: float | None = Field(None, gt=0, le=86400)


class EnhancementSpec(BaseModel):
    """An AI enhancement point: which task may improve this step, from which tier, and the
    non-AI path that runs otherwise (and whenever AI fails)."""

    model_config = ConfigDict(extra="forbid")

    task: str
    min_tier: str = DEFAULT_ENHANCEMENT_TIER
    fallback: str = Field(min_length=1, max_length=300)
    input: dict[str, Any] | None = Field(
        None, description="The AI task's input (expressions over the step's scope)."
    )
    apply: dict[str, str] | None = Field(
        None, description="{step input field: AI output field} set when the point enhances."
    )


class StepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: str = Field(pattern=STEP_ID_PATTERN)
    activity: str
    title: str | None = None
    input: dict[str, Any] = Field(default_factory=dict)
    needs: list[str] | None = Field(
        None, max_length=50, description="Steps this one waits for; absent: the previous step."
    )
    when: str | None = Field(None, description="Expression; the step is SKIPPED when false.")
    for_each: str | None = Field(
        None, description="Expression giving a list; the step runs once per `item` (and `index`)."
    )
    for_each_concurrency: int = Field(10, ge=1, le=100)
    retry: RetrySpec | None = None
    timeout_seconds: float | None = Field(None, gt=0, le=86400)
    compensate: CompensateSpec | None = None
    enhancements: list[EnhancementSpec] = Field(default_factory=list, max_length=10)


class ParamMigration(BaseModel):
    """How params of the previous version map onto this version's parameters."""

    model_config = ConfigDict(extra="forbid")

    rename: dict[str, str] = Field(default_factory=dict)
    defaults: dict[str, Any] = Field(default_factory=dict)
    drop: list[str] = Field(default_factory=list)


class TemplateSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    title: str = Field(min_length=1, max_length=200)
    description: str = ""
    tags: list[str] = Field(default_factory=list, max_length=20)
    category: str | None = Field(None, max_length=50)
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    steps: list[StepSpec] = Field(min_length=1, max_length=200)
    output: Any = None
    example_params: dict[str, Any] | None = None
    param_migration: ParamMigration | None = None
    sla: SlaSpec | None = Field(
        None, description="Service-level targets of the runs (docs/analytics.md, SLAs)."
    )

    def plan(
        self, *, default_timeout: float, default_attempts: int, ai_task_queue: str | None = None
    ) -> list[StepPlan]:
        """The steps as the workflow runs them, with defaults and dependencies filled in. A
        plugin step runs on its plugin's queue, by default within the plugin's timeout."""
        needs = resolved_needs(self)
        plans = []
        for step in self.steps:
            retry = step.retry or RetrySpec(max_attempts=default_attempts)
            compensate = step.compensate
            entry = find_activity(step.activity)
            queue = entry.task_queue if entry is not None else None
            timeout = entry.timeout_seconds if entry is not None else None
            plans.append(
                StepPlan(
                    id=step.id,
                    activity=step.activity,
                    input=step.input,
                    retry=RetryPlan(**retry.model_dump()),
                    timeout_seconds=step.timeout_seconds or timeout or default_timeout,
                    needs=needs[step.id],
                    when=step.when,
                    for_each=step.for_each,
                    for_each_concurrency=step.for_each_concurrency,
                    compensate=CompensatePlan(
                        activity=compensate.activity,
                        input=compensate.input,
                        # As a step's: its own, else its activity's (a plugin's), else the default.
                        timeout_seconds=compensate.timeout_seconds
                        or _timeout_of(compensate.activity)
                        or default_timeout,
                        task_queue=plugin_queue(compensate.activity),
                        heartbeat_seconds=heartbeat_of(compensate.activity),
                    )
                    if compensate
                    else None,
                    heartbeat_seconds=heartbeat_of(step.activity),
                    enhancements=[e.model_dump() for e in step.enhancements],
                    task_queue=queue
                    or (ai_task_queue if step.activity.startswith("ai.") else None),
                )
            )
        return plans


def _timeout_of(activity: str) -> float | None:
    """The activity's own timeout (a plugin step's, with its grace), if it has one."""
    entry = find_activity(activity)
    return entry.timeout_seconds if entry is not None else None


def plugin_queue(activity: str) -> str | None:
    """The queue of a plugin's step (None for every built-in one)."""
    entry = find_activity(activity)
    return entry.task_queue if entry is not None and entry.plugin is not None else None


def heartbeat_of(activity: str) -> float | None:
    """The heartbeat interval a step's activity keeps: its own, or the liveness default for
    every activity run by a worker (`ai.*` included); None for the workflow's own waits."""
    entry = find_activity(activity)
    if entry is None:
        return None
    if entry.run is None and entry.task_queue is None and not activity.startswith("ai."):
        return None
    return entry.heartbeat_seconds or LIVENESS_HEARTBEAT_SECONDS


def _problem(path: str, message: str) -> dict[str, str]:
    return {"path": path, "message": message}


# --- limits ----------------------------------------------------------------------------------

_DEFAULTS = Settings.model_construct()  # the documented defaults, for callers without settings


def check_spec_limits(data: Any, settings: Settings | None = None) -> None:
    """Refuse a spec larger or deeper than the settings allow (before anything parses it)."""
    limits = settings or _DEFAULTS
    _refuse_over(data, "the spec", limits.max_spec_bytes, "max_spec_bytes", limits)


def check_params_limits(params: Any, settings: Settings | None = None) -> None:
    """Refuse params larger or deeper than the settings allow (before validation reads them)."""
    limits = settings or _DEFAULTS
    _refuse_over(params, "params", limits.max_params_bytes, "max_params_bytes", limits)


def _refuse_over(value: Any, what: str, max_bytes: int, setting: str, limits: Settings) -> None:
    problems = jsonschemas.limit_problems(
        value,
        what=what,
        max_bytes=max_bytes,
        bytes_setting=setting,
        max_depth=limits.max_json_depth,
    )
    if problems:
        raise ValidationFailed(problems[0]["message"], details=problems)


def validation_deadline(settings: Settings | None = None) -> float:
    """When the validation that starts now must be done (time.monotonic())."""
    return time.monotonic() + (settings or _DEFAULTS).validation_timeout_seconds


async def bounded(
    fn: Callable[..., T],
    *args: Any,
    deadline: float,
    settings: Settings | None = None,
    tenant: uuid.UUID | None = None,
) -> T:
    """`fn(*args)` off the event loop until `deadline`; past it, a clear ValidationFailed
    (the work stops at its next JSON Schema keyword). `tenant`, the one who sent the work,
    gets its fair share of the validation pool (None: trusted work, no share)."""
    try:
        return await jsonschemas.run_bounded(fn, *args, deadline=deadline, tenant=tenant)
    except jsonschemas.ValidationTimeout as exc:
        seconds = (settings or _DEFAULTS).validation_timeout_seconds
        message = (
            f"validation did not finish within {seconds:g} s "
            "(setting validation_timeout_seconds): simplify the schema or the value"
        )
        raise ValidationFailed(message, details=[_problem("$", message)]) from exc


# --- validation ------------------------------------------------------------------------------


def validate_spec(
    data: Any, settings: Settings | None = None, plugins: PluginAccess | None = None
) -> TemplateSpec:
    """Parse and check a spec; raises ValidationFailed listing every problem found. The caps
    are `settings`' (their defaults without); `plugins` says which plugins' steps the tenant
    may use (None: any loaded plugin's)."""
    check_spec_limits(data, settings)
    try:
        spec = TemplateSpec.model_validate(data)
    except PydanticValidationError as exc:
        shape = [
            _problem(
                "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"]),
                e["msg"],
            )
            for e in exc.errors()
        ]
        raise ValidationFailed(
            f"invalid template spec ({len(shape)} problems)", details=shape
        ) from exc

    jsonschemas.check_deadline()
    limits = Limits.of(settings) if settings is not None else None
    problems = [
        _problem(path, message) for path, message in spec_problems(spec, limits, plugins=plugins)
    ]
    jsonschemas.check_deadline()
    schema_problems = [
        _problem("$.parameters" + p["path"][1:], p["message"])
        for p in jsonschemas.schema_problems(spec.parameters)
    ]
    problems += schema_problems
    if not schema_problems and spec.example_params is not None:
        for p in param_problems(spec.parameters, spec.example_params):
            problems.append(_problem("$.example_params" + p["path"][1:], p["message"]))
    if problems:
        raise ValidationFailed(
            f"invalid template spec ({len(problems)} problems)", details=problems
        )
    return spec


def param_problems(schema: dict[str, Any], params: Any) -> list[dict[str, str]]:
    """Every way params break the template's JSON Schema, each with its JSON path."""
    return jsonschemas.instance_problems(jsonschemas.json_validator(schema, formats=True), params)
