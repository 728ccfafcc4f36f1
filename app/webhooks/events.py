"""Webhook event names (what a tenant subscribes to) and the payload sent for a notification."""

from __future__ import annotations

from typing import Any

from app.ids import global_id
from app.models import Notification

# Notification type (app/models/notification.py) -> the event name receivers see.
EVENT_OF_TYPE: dict[str, str] = {
    "EXECUTION_COMPLETED": "execution.completed",
    "EXECUTION_FAILED": "execution.failed",
    "EXECUTION_CANCELLED": "execution.cancelled",
    "BUDGET_THRESHOLD": "budget.threshold",
    "BUDGET_EXHAUSTED": "budget.exhausted",
    "PUBLISHED": "events.published",
    "SLA_BREACH": "sla.breach",
}
WEBHOOK_EVENTS: tuple[str, ...] = tuple(EVENT_OF_TYPE.values())


def execution_global_id(notification: Notification) -> str | None:
    """The execution's GraphQL id, as `execution(id:)` takes it; None without an execution."""
    if notification.execution_id is None:
        return None
    return global_id("Execution", notification.execution_id)


def payload(notification: Notification) -> dict[str, Any]:
    """`{type, timestamp, data: {seq, ...the notification's data, executionId}}`; executionId is
    null for budget and success-rate events."""
    return {
        "type": EVENT_OF_TYPE[notification.type],
        "timestamp": notification.created_at.isoformat().replace("+00:00", "Z"),
        "data": {
            "seq": notification.seq,
            **notification.data,
            "executionId": execution_global_id(notification),
        },
    }
