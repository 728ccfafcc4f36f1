"""The bus side of execution events: channel names and the wire shape of an event."""

from __future__ import annotations

from typing import Any

from app.models import Execution, ExecutionEvent


def refused_tasks(enhancement: dict[str, Any]) -> list[str] | None:
    """The tasks whose AI output a step refused, when this STEP_ENHANCED record says a step
    ran on its plain input instead (workers/workflows/step_calls.py run_refusable); else
    None. A fan-out's point records carry `items` and no `tasks`."""
    if enhancement.get("fallback") != "STEP_REJECTED":
        return None
    tasks = enhancement.get("tasks")
    return tasks if isinstance(tasks, list) else None


def event_message(event: ExecutionEvent, execution: Execution) -> dict[str, Any]:
    return {
        "executionId": str(execution.id),
        "tenantId": str(execution.tenant_id),
        "seq": event.seq,
        "type": event.type,
        "status": event.status,
        "progress": event.progress,
        "stepId": event.step_id,
        "message": event.message,
        "actor": (event.payload or {}).get("actor"),
        "costUsd": (event.payload or {}).get("cost_usd"),
        "enhancement": (event.payload or {}).get("enhancement"),
        "at": event.at.isoformat(),
    }
