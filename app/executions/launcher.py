"""The launcher: the only code that talks to Temporal about an execution's workflow.

Start (with its run input, search attributes and the tier's task priority), signal, cancel
and describe. Every call has an RPC deadline, so no caller waits on Temporal without bound,
and failures reach callers in two kinds only: `WorkflowGone` (Temporal does not know the
workflow: never started, closed and removed, or lost) and `EngineUnavailable` (anything else;
Temporal's own text, which can name internal hosts and ids, is logged, never shown).
Callers hold no database lock and no transaction while they call it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import structlog
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import (
    Priority,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from app.executions.workflow_io import WORKFLOW_NAME, RunInput, RunLimits, StepPlan
from app.metrics import EXECUTIONS_STARTED
from app.models import Execution
from app.settings import Settings
from app.templates.schemas import TemplateSpec
from app.temporal import TEMPLATE_KEY, TENANT_KEY, TIER_KEY
from app.tiers import priority_key

log = structlog.get_logger(__name__)
RPC_TIMEOUT = timedelta(seconds=10)
# The run id of a run whose start did not say it (it was already started by an earlier
# attempt): describes then ask about the latest run of the workflow id.
UNKNOWN_RUN = "already-started"


class WorkflowGone(Exception):
    """Temporal does not know the execution's workflow (NOT_FOUND)."""


class EngineUnavailable(Exception):
    """Temporal could not be reached or refused the call; details are in the log. `status`:
    the RPC status name, or the exception's type when there was no answer at all."""

    def __init__(self, message: str, status: str) -> None:
        super().__init__(message)
        self.status = status

    @property
    def unreachable(self) -> bool:
        """No answer (as opposed to an answer refusing the call)."""
        return self.status in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RuntimeError")


@dataclass(frozen=True)
class RunPlan:
    """Which run of an execution starts next, and the step outputs it keeps."""

    number: int = 1
    completed: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Launch:
    """Everything a start needs besides the execution row."""

    tenant_name: str
    tier: str
    template_name: str
    version_id: uuid.UUID
    version_number: int
    spec: TemplateSpec
    plan: RunPlan = RunPlan()


def task_priority(tier: str, tenant_name: str) -> Priority:
    """Temporal task priority of a tenant's workflows: its tier's key, itself as fairness key."""
    return Priority(priority_key=priority_key(tier), fairness_key=tenant_name)


def search_attributes(tenant_name: str, template_name: str, tier: str) -> TypedSearchAttributes:
    """What the Temporal UI and CLI filter executions by."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(TENANT_KEY, tenant_name),
            SearchAttributePair(TEMPLATE_KEY, template_name),
            SearchAttributePair(TIER_KEY, tier),
        ]
    )


_PLANS: dict[tuple[uuid.UUID, float, int, str], list[StepPlan]] = {}
_PLANS_KEPT = 512


def _steps(launch: Launch, settings: Settings) -> list[StepPlan]:
    """The version's plan: the same for every run of it under the same settings (a
    published version never changes), so it is derived once per process. Bounded."""
    key = (
        launch.version_id,
        settings.step_default_timeout_seconds,
        settings.step_default_max_attempts,
        settings.ai_task_queue,
    )
    plan = _PLANS.get(key)
    if plan is None:
        if len(_PLANS) >= _PLANS_KEPT:
            _PLANS.pop(next(iter(_PLANS)))
        plan = _PLANS[key] = launch.spec.plan(
            default_timeout=settings.step_default_timeout_seconds,
            default_attempts=settings.step_default_max_attempts,
            ai_task_queue=settings.ai_task_queue,
        )
    return plan


def build_run_input(execution: Execution, launch: Launch, settings: Settings) -> RunInput:
    return RunInput(
        execution_id=str(execution.id),
        tenant_id=str(execution.tenant_id),
        template_name=launch.template_name,
        template_version=launch.version_number,
        params=execution.params,
        steps=list(_steps(launch, settings)),
        output=launch.spec.output,
        max_wait_seconds=settings.max_wait_seconds,
        for_each_batch_size=settings.for_each_batch_size,
        ai_task_queue=settings.ai_task_queue,
        run_number=launch.plan.number,
        completed=launch.plan.completed,
        limits=RunLimits.of(settings),
    )


class Launcher:
    def __init__(self, temporal: Client, settings: Settings) -> None:
        self.temporal, self.settings = temporal, settings

    async def start(self, execution: Execution, launch: Launch) -> str:
        """Start the execution's workflow for the run `launch.plan` names; its run id."""
        try:
            handle = await self.temporal.start_workflow(
                WORKFLOW_NAME,
                build_run_input(execution, launch, self.settings),
                id=execution.workflow_id,
                task_queue=self.settings.temporal_task_queue,
                search_attributes=search_attributes(
                    launch.tenant_name, launch.template_name, launch.tier
                ),
                priority=task_priority(launch.tier, launch.tenant_name),
                # A retry reuses the workflow id. Its previous run recorded FAILED as its last
                # act and may still be closing; only that run can be open here, so end it
                # rather than lose the retry to WorkflowAlreadyStartedError.
                id_conflict_policy=WorkflowIDConflictPolicy.TERMINATE_EXISTING
                if launch.plan.number > 1
                else WorkflowIDConflictPolicy.FAIL,
                rpc_timeout=RPC_TIMEOUT,
            )
        except WorkflowAlreadyStartedError:  # an earlier attempt of this start got through
            return UNKNOWN_RUN
        except Exception as exc:
            raise self._unavailable(execution, "start", exc) from exc
        EXECUTIONS_STARTED.labels(launch.tier).inc()
        return handle.first_execution_run_id or UNKNOWN_RUN

    async def signal(self, execution: Execution, name: str, arg: Any) -> None:
        await self._call(
            execution, "signal", lambda h: h.signal(name, arg, rpc_timeout=RPC_TIMEOUT)
        )

    async def cancel(self, execution: Execution) -> None:
        """Ask the workflow to cancel (it compensates and records CANCELLED). Temporal
        accepts a cancel of a closed workflow silently: callers ask `status` first."""
        await self._call(execution, "cancel", lambda h: h.cancel(rpc_timeout=RPC_TIMEOUT))

    async def status(
        self, workflow_id: str, run_id: str | None = None
    ) -> WorkflowExecutionStatus | None:
        """The status of that run (the latest when `run_id` is None or not a run id); a run
        that continued as new answers for the chain's latest run. Raises WorkflowGone,
        EngineUnavailable."""
        handle = self.temporal.get_workflow_handle(workflow_id, run_id=_run_id(run_id))
        described = await self._rpc(
            workflow_id, "describe", handle.describe(rpc_timeout=RPC_TIMEOUT)
        )
        if described.status == WorkflowExecutionStatus.CONTINUED_AS_NEW:
            latest = self.temporal.get_workflow_handle(workflow_id)
            described = await self._rpc(
                workflow_id, "describe", latest.describe(rpc_timeout=RPC_TIMEOUT)
            )
        return described.status

    async def running(self, execution: Execution) -> bool:
        """Whether the execution's workflow runs (False when Temporal does not know it)."""
        try:
            status = await self.status(execution.workflow_id)
        except WorkflowGone:
            return False
        return status in (WorkflowExecutionStatus.RUNNING, WorkflowExecutionStatus.CONTINUED_AS_NEW)

    async def _call(self, execution: Execution, action: str, call: Any) -> None:
        handle: WorkflowHandle[Any, Any] = self.temporal.get_workflow_handle(execution.workflow_id)
        await self._rpc(execution.workflow_id, action, call(handle))

    async def _rpc(self, workflow_id: str, action: str, call: Any) -> Any:
        try:
            return await call
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise WorkflowGone(workflow_id) from exc
            raise self._unavailable(workflow_id, action, exc) from exc
        except RuntimeError as exc:  # temporalio raises this when it cannot connect at all
            raise self._unavailable(workflow_id, action, exc) from exc

    @staticmethod
    def _unavailable(target: Execution | str, action: str, exc: Exception) -> EngineUnavailable:
        workflow_id = target if isinstance(target, str) else target.workflow_id
        status = exc.status.name if isinstance(exc, RPCError) else type(exc).__name__
        log.warning(
            "temporal.call_failed",
            workflow_id=workflow_id,
            action=action,
            status=status,
            error=str(exc),
        )
        return EngineUnavailable(f"{action} failed ({status})", status)


def _run_id(value: str | None) -> str | None:
    """A real run id, or None for the markers (UNKNOWN_RUN, admission's claim)."""
    if value is None or len(value) != 36 or value.count("-") != 4:
        return None
    return value
