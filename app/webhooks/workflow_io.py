"""What the dispatcher hands a delivery workflow (workers/workflows/webhook.py), and the names
both sides use. Imports nothing of the app: workflow code reads it in the sandbox."""

from __future__ import annotations

from dataclasses import dataclass

WEBHOOK_WORKFLOW = "WebhookDelivery"
DELIVER_ACTIVITY = "webhook.deliver"
RECORD_FAILURE_ACTIVITY = "webhook.record_failure"
# workflow.patched id: a last attempt that raised (or timed out) is recorded FAILED.
RECORD_FAILURE_PATCH = "webhook-record-final-failure"
# The attempt did not deliver (no answer, not 2xx): Temporal retries it with backoff.
DELIVERY_FAILED_ERROR = "WebhookDeliveryFailed"


@dataclass(frozen=True)
class DeliveryJob:
    """One delivery row to send; the retry policy comes from the dispatcher's settings, so the
    workflow decides nothing from the clock or the environment."""

    delivery_id: str
    max_attempts: int
    retry_initial_seconds: float
    retry_max_seconds: float
    timeout_seconds: float


def workflow_id(webhook_id: str, seq: int, redelivery_id: str | None = None) -> str:
    """Derived from (webhook, seq), so a notification's delivery is started once; a
    redelivery is a row of its own and runs under its id."""
    base = f"webhook-{webhook_id}-{seq}"
    return base if redelivery_id is None else f"{base}-redelivery-{redelivery_id}"


@dataclass(frozen=True)
class DeliveryFailure:
    """A delivery whose last attempt raised or timed out instead of recording its outcome."""

    delivery_id: str
    error: str
