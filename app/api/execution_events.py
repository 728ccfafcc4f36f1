"""An execution's events, enhancement records and step states as the API shows them."""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeAlias, cast

import strawberry
from strawberry.scalars import JSON

from app.ai.pricing import usd
from app.executions.events import refused_tasks
from app.models import ExecutionEvent as EventModel
from app.models.states import EventType, Status

# The state machine's own enums (app/models/states.py), published as they are.
strawberry.enum(Status, name="ExecutionStatus")
strawberry.enum(EventType, name="ExecutionEventType")
ExecutionStatus: TypeAlias = Status
ExecutionEventType: TypeAlias = EventType


@strawberry.type(description="One enhancement point's decision, what it used and what it cost.")
class Enhancement:
    task: str
    decision: str = strawberry.field(description="AI or BASELINE.")
    reason: str | None = strawberry.field(
        description="ENHANCE (AI was tried), or why not: TIER, DISABLED, NO_PROVIDER, BUDGET, "
        "PROVIDERS_DOWN, UNAVAILABLE."
    )
    provider: str | None
    model: str | None
    latency_ms: int | None
    cost_usd: Decimal
    fallback: str | None = strawberry.field(
        description="Why a tried point used the baseline: PROVIDER_ERROR, BREAKER_OPEN, "
        "INVALID_OUTPUT, AI_ERROR, INPUT_ERROR, STEP_REJECTED (the step refused the AI output "
        "and ran on its plain input)."
    )
    items: int | None = strawberry.field(description="On a for_each step: the items.")
    enhanced_items: int | None = strawberry.field(
        description="On a for_each step: the items AI improved."
    )

    @classmethod
    def from_record(cls, e: dict[str, Any]) -> Enhancement:
        return cls(
            task=e.get("task", "?"),
            decision=e.get("decision", "BASELINE"),
            reason=e.get("reason"),
            provider=e.get("provider"),
            model=e.get("model"),
            latency_ms=e.get("latency_ms"),
            cost_usd=usd(e.get("cost_usd")),
            fallback=e.get("fallback"),
            items=e.get("items"),
            enhanced_items=e.get("enhanced_items"),
        )


@strawberry.type(description="One transition of an execution; seq is 1, 2, 3... per execution.")
class ExecutionEvent:
    seq: int
    type: ExecutionEventType
    status: ExecutionStatus
    progress: float = strawberry.field(description="Percent of steps done, 0-100.")
    step_id: str | None
    message: str | None
    actor: str | None = strawberry.field(
        description="Who caused it: `system` (or `system:reconciler`), or the caller's role "
        "and who they are: `admin:key:<API key id>`, `operator:sub:<token subject>` (events "
        "recorded before 2026-12 say `admin:<API key id>`)."
    )
    cost_usd: Decimal = strawberry.field(
        description="What the execution's AI calls had cost when this event was recorded, USD."
    )
    enhancement: Enhancement | None = strawberry.field(
        description="On STEP_ENHANCED: the point's decision and cost."
    )
    at: datetime

    @classmethod
    def from_model(cls, m: EventModel) -> ExecutionEvent:
        return cls(
            seq=m.seq,
            type=ExecutionEventType(m.type),
            status=ExecutionStatus(m.status),
            progress=m.progress,
            step_id=m.step_id,
            message=m.message,
            actor=(m.payload or {}).get("actor"),
            cost_usd=usd((m.payload or {}).get("cost_usd")),
            enhancement=_enhancement((m.payload or {}).get("enhancement")),
            at=m.at,
        )

    @classmethod
    def from_message(cls, data: dict[str, Any]) -> ExecutionEvent:
        return cls(
            seq=int(data["seq"]),
            type=ExecutionEventType(data["type"]),
            status=ExecutionStatus(data["status"]),
            progress=float(data["progress"]),
            step_id=data.get("stepId"),
            message=data.get("message"),
            actor=data.get("actor"),
            cost_usd=usd(data.get("costUsd")),
            enhancement=_enhancement(data.get("enhancement")),
            at=datetime.fromisoformat(data["at"]),
        )


def _enhancement(record: dict[str, Any] | None) -> Enhancement | None:
    return Enhancement.from_record(record) if isinstance(record, dict) else None


@strawberry.enum
class StepStatus(enum.Enum):
    WAITING = "WAITING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    SKIPPED = "SKIPPED"
    FAILED = "FAILED"
    COMPENSATED = "COMPENSATED"


@strawberry.type
class StepState:
    id: str
    status: StepStatus
    attempts: int = strawberry.field(description="Runs of the step (a retried execution adds one).")
    started_at: datetime | None
    finished_at: datetime | None
    output: JSON | None
    error: str | None
    enhancements: list[Enhancement]
    items: int | None = strawberry.field(
        default=None, description="A fan-out run as child workflows: its items."
    )
    items_done: int | None = strawberry.field(
        default=None,
        description="A fan-out run as child workflows: the items of its finished slices "
        "(a STEP_PROGRESS event each).",
    )


_STEP_STATUS = {
    "STEP_STARTED": StepStatus.RUNNING,
    "STEP_COMPLETED": StepStatus.COMPLETED,
    "STEP_SKIPPED": StepStatus.SKIPPED,
    "STEP_FAILED": StepStatus.FAILED,
    "STEP_COMPENSATED": StepStatus.COMPENSATED,
}


def step_states(order: list[str], events: list[EventModel]) -> list[StepState]:
    states = {
        sid: StepState(
            id=sid,
            status=StepStatus.WAITING,
            attempts=0,
            started_at=None,
            finished_at=None,
            output=None,
            error=None,
            enhancements=[],
        )
        for sid in order
    }
    for event in events:
        state = states.get(event.step_id or "")
        if state is not None and event.type == "STEP_PROGRESS":  # may commit out of order
            state.items = (event.payload or {}).get("items")
            done = (event.payload or {}).get("items_done")
            state.items_done = max(state.items_done or 0, done or 0)
            continue
        if state is not None and event.type == "STEP_ENHANCED":
            record = (event.payload or {}).get("enhancement", {})
            refused = refused_tasks(record)
            if refused is None:
                state.enhancements.append(Enhancement.from_record(record))
            else:  # the step refused the AI output of these points and ran on its plain input
                for point in state.enhancements:
                    if point.task in refused and point.decision == "AI":
                        point.decision, point.fallback = "BASELINE", "STEP_REJECTED"
            continue
        status = _STEP_STATUS.get(event.type)
        if state is None or status is None:
            continue
        state.status = status
        if event.type == "STEP_STARTED":  # (again, when a retried execution reruns it)
            state.attempts += 1
            state.started_at, state.finished_at, state.error = event.at, None, None
            state.enhancements, state.items, state.items_done = [], None, None
        elif event.type in ("STEP_COMPLETED", "STEP_SKIPPED", "STEP_FAILED"):
            state.finished_at = event.at
            state.output = cast(JSON, (event.payload or {}).get("output"))
            state.error = event.message if event.type == "STEP_FAILED" else None
    return list(states.values())
