"""AnalyticsRollupWorkflow: one refresh of the daily analytics rollups, started by the
`analytics-rollup-<task queue>` schedule every ANALYTICS_ROLLUP_SECONDS (workers/main.py
creates or updates it when a worker starts; the schedule skips a run while the previous one
is still going)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from app.analytics.workflow_io import (
        ROLLUP_ACTIVITY,
        ROLLUP_WORKFLOW,
        RollupInput,
        RollupResult,
    )


@workflow.defn(name=ROLLUP_WORKFLOW)
class AnalyticsRollupWorkflow:
    @workflow.run
    async def run(self, inp: RollupInput) -> RollupResult:
        return await workflow.execute_activity(
            ROLLUP_ACTIVITY,
            inp,
            result_type=RollupResult,
            # The first refresh rolls up every past day (~60 s for 1 M runs and 10 M events here).
            start_to_close_timeout=timedelta(minutes=30),
            retry_policy=RetryPolicy(maximum_attempts=3),
        )
