"""The six AI activities (`ai.generate_text`, ... `ai.optimize_timing`), served by workers on
the AI task queue (`wfs worker --queue ai`) so AI load is isolated from the other steps.

Each looks up the tenant's AI settings, runs the gateway (which answers with the baseline and
its reason when AI is off, too expensive or failing), heartbeats while it waits, and honours
cancellation. The step output is the task's output plus an `ai` record of how it was made;
when the task read only the beginning of a long text, `ai.input_truncated` maps each cut field
to its full length (the task read MAX_TEXT_CHARS of it).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from app.ai.contracts import AiOutcome, AiRequest
from app.ai.gateway import AiGateway, AiInputError
from app.ai.service import AiService
from app.ai.tasks import task_names, truncation
from app.db import SessionFactory
from app.executions.workflow_io import (
    DECIDE_ACTIVITY,
    INPUT_REFUSED,
    DecideInput,
    Decision,
    StepCall,
)
from app.settings import Settings
from workers.heartbeat import heartbeating

HEARTBEAT_SECONDS = 2.0


def step_output(outcome: AiOutcome, truncated: dict[str, int] | None = None) -> dict[str, Any]:
    record: dict[str, Any] = {
        "provider": outcome.provider,
        "model": outcome.model,
        "cached": outcome.cached,
        "fallback_reason": outcome.fallback_reason,
        "cost_usd": str(outcome.cost_usd),
        "saved_usd": str(outcome.saved_usd),
        "latency_ms": outcome.latency_ms,
        "outcome": outcome.outcome,
    }
    if truncated:
        record["input_truncated"] = truncated
    return {**outcome.output, "ai": record}


class AiActivities:
    def __init__(self, gateway: AiGateway, sessions: SessionFactory, settings: Settings) -> None:
        self.gateway, self.sessions, self.settings = gateway, sessions, settings

    def all(self) -> list[Callable[..., Awaitable[Any]]]:
        # The built-in six and the loaded plugins' tasks (`ai.<plugin>.<task>`).
        return [self.decide, *[self._activity(task) for task in task_names()]]

    @activity.defn(name=DECIDE_ACTIVITY)
    async def decide(self, request: DecideInput) -> Decision:
        """Whether an enhancement point should use AI now; the workflow records the answer."""
        async with self.sessions() as session:
            tenant = await AiService(session).tenant_ai(uuid.UUID(request.tenant_id), self.settings)
        enhance, reason = await self.gateway.should_enhance(
            request.tenant_id, request.task, tenant, request.min_tier
        )
        return Decision(enhance=enhance, reason=reason)

    async def run(self, task: str, call: StepCall) -> dict[str, Any]:
        async with self.sessions() as session:
            tenant = await AiService(session).tenant_ai(uuid.UUID(call.tenant_id), self.settings)
        request = AiRequest(
            task=task,
            input=call.input,
            tenant_id=call.tenant_id,
            execution_id=call.execution_id,
            step_id=call.step_id if call.index is None else f"{call.step_id}[{call.index}]",
        )
        try:  # cancelling the activity stops the provider call too
            outcome = await heartbeating(self.gateway.run(request, tenant), HEARTBEAT_SECONDS)
        except AiInputError as exc:  # checked before any provider call: nothing was done
            raise ApplicationError(str(exc), type=INPUT_REFUSED, non_retryable=True) from exc
        # The gateway cut these fields the same way (and logged it); only lengths are read here.
        return step_output(outcome, truncation(task, call.input))

    def _activity(self, task: str) -> Callable[[StepCall], Awaitable[Any]]:
        async def execute(call: StepCall) -> dict[str, Any]:
            return await self.run(task, call)

        execute.__name__ = execute.__qualname__ = f"ai_{task.replace('.', '_')}_activity"
        return activity.defn(name=f"ai.{task}")(execute)
