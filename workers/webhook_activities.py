"""The webhook delivery activity: one attempt per call (app/webhooks/sender.py); a failed
attempt raises a retryable error so that Temporal's retry policy (exponential backoff, set by
the dispatcher in DeliveryJob) makes the next one."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from app.db import SessionFactory
from app.settings import Settings
from app.webhooks.sender import WebhookSender
from app.webhooks.workflow_io import (
    DELIVER_ACTIVITY,
    DELIVERY_FAILED_ERROR,
    RECORD_FAILURE_ACTIVITY,
    DeliveryFailure,
    DeliveryJob,
)


class WebhookActivities:
    def __init__(self, sessions: SessionFactory, settings: Settings) -> None:
        self.sender = WebhookSender(sessions, settings)

    def all(self) -> list[Callable[..., Awaitable[Any]]]:
        return [self.deliver, self.record_failure]

    @activity.defn(name=DELIVER_ACTIVITY)
    async def deliver(self, job: DeliveryJob) -> bool:
        """True when delivered; False when it ended otherwise (410, webhook gone or disabled)."""
        attempt = activity.info().attempt
        outcome = await self.sender.attempt(
            uuid.UUID(job.delivery_id), attempt, final=attempt >= job.max_attempts
        )
        if outcome.retry and attempt < job.max_attempts:
            raise ApplicationError(outcome.error or "not delivered", type=DELIVERY_FAILED_ERROR)
        return outcome.delivered

    @activity.defn(name=RECORD_FAILURE_ACTIVITY)
    async def record_failure(self, failure: DeliveryFailure) -> None:
        """Mark the delivery FAILED (its last attempt raised or timed out)."""
        await self.sender.fail(uuid.UUID(failure.delivery_id), failure.error)
