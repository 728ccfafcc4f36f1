"""WebhookDeliveryWorkflow: delivers one webhook delivery row, retrying with exponential
backoff (the dispatcher in app/webhooks/dispatcher.py starts one per row)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from app.webhooks.workflow_io import DELIVER_ACTIVITY, WEBHOOK_WORKFLOW, DeliveryJob

# The attempt's HTTP timeout plus room for its two short database transactions.
ACTIVITY_MARGIN = timedelta(seconds=30)


@workflow.defn(name=WEBHOOK_WORKFLOW)
class WebhookDeliveryWorkflow:
    @workflow.run
    async def run(self, job: DeliveryJob) -> bool:
        """True when delivered. The activity returns (never raises) on its last attempt, so
        the workflow completes either way: the delivery row tells the outcome."""
        return await workflow.execute_activity(
            DELIVER_ACTIVITY,
            job,
            result_type=bool,
            start_to_close_timeout=timedelta(seconds=job.timeout_seconds) + ACTIVITY_MARGIN,
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=job.retry_initial_seconds),
                backoff_coefficient=2.0,
                maximum_interval=timedelta(seconds=job.retry_max_seconds),
                maximum_attempts=job.max_attempts,
            ),
        )
