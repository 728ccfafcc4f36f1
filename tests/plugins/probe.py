"""A tiny workflow that calls one plugin step activity by name on the plugin's task queue and
returns its output or how it failed, as the template workflow will once plans route plugin
steps to their queue (that routing is the plugin registry's part of issue 14)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from app.executions.workflow_io import StepCall


@dataclass
class Probe:
    activity: str  # "<plugin>.<step>"
    task_queue: str
    input: dict[str, Any] = field(default_factory=dict)
    attempts: int = 1
    heartbeat_seconds: float = 3.0


@workflow.defn(name="PluginProbe")
class PluginProbe:
    @workflow.run
    async def run(self, probe: Probe) -> dict[str, Any]:
        call = StepCall(execution_id="probe", tenant_id="probe", step_id="s", input=probe.input)
        try:
            output = await workflow.execute_activity(
                probe.activity,
                call,
                task_queue=probe.task_queue,
                start_to_close_timeout=timedelta(seconds=120),
                heartbeat_timeout=timedelta(seconds=probe.heartbeat_seconds),
                retry_policy=RetryPolicy(
                    maximum_attempts=probe.attempts, initial_interval=timedelta(milliseconds=50)
                ),
            )
        except ActivityError as exc:
            cause = exc.cause
            if not isinstance(cause, ApplicationError):  # cancelled: the workflow is too
                raise
            return {
                "error": cause.message,
                "type": cause.type,
                "non_retryable": cause.non_retryable,
                "retry_state": exc.retry_state.name if exc.retry_state else None,
            }
        return {"output": output}
