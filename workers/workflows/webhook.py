"""WebhookDeliveryWorkflow: delivers one webhook delivery row, retrying with exponential
backoff (the dispatcher in app/webhooks/dispatcher.py starts one per row)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from app.webhooks.workflow_io import (
        DELIVER_ACTIVITY,
        RECORD_FAILURE_ACTIVITY,
        RECORD_FAILURE_PATCH,
        WEBHOOK_WORKFLOW,
        DeliveryFailure,
        DeliveryJob,
    )

# The attempt's HTTP timeout plus room for its two short database transactions.
ACTIVITY_MARGIN = timedelta(seconds=30)
# Recording the failure retries through a database outage, for a day at most (then the
# dispatcher's sweep of stalled deliveries records it).
RECORD_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=5)
)
RECORD_TIMEOUT = timedelta(days=1)


@workflow.defn(name=WEBHOOK_WORKFLOW)
class WebhookDeliveryWorkflow:
    @workflow.run
    async def run(self, job: DeliveryJob) -> bool:
        """True when delivered. The activity returns (never raises) on its last attempt, so
        the delivery row tells the outcome; should that attempt raise anyway (the database
        down) or time out, a last activity records the delivery FAILED."""
        try:
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
        except ActivityError as exc:
            if is_cancelled_exception(exc) or not workflow.patched(RECORD_FAILURE_PATCH):
                raise
            reason = str(exc.cause or exc)
            await workflow.execute_activity(
                RECORD_FAILURE_ACTIVITY,
                DeliveryFailure(job.delivery_id, f"the last attempt did not finish: {reason}"),
                schedule_to_close_timeout=RECORD_TIMEOUT,
                start_to_close_timeout=ACTIVITY_MARGIN,
                retry_policy=RECORD_RETRY,
            )
            return False
