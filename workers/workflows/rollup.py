"""AnalyticsRollupWorkflow: one refresh of the daily analytics rollups, started by the
`analytics-rollup-<task queue>` schedule every ANALYTICS_ROLLUP_SECONDS (workers/main.py
creates or updates it when a worker starts; the schedule skips a run while the previous one
is still going). Its activity adds at most ROLLUP_CHUNK_DAYS days per committed transaction and
stops after ROLLUP_BUDGET; the next run continues a catch-up (a first fill of a large database
may take a few runs). Options changed here apply to new runs (each scheduled run is one)."""

from __future__ import annotations

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from app.analytics.workflow_io import (
        ROLLUP_ACTIVITY,
        ROLLUP_HEARTBEAT_TIMEOUT,
        ROLLUP_TIMEOUT,
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
            # A first fill or a catch-up goes chunk by chunk, committing each, until caught up
            # or ROLLUP_BUDGET (20 of these 30 minutes) is used; a timed-out or retried
            # attempt, or the next scheduled run, goes on from the last chunk committed.
            start_to_close_timeout=ROLLUP_TIMEOUT,
            heartbeat_timeout=ROLLUP_HEARTBEAT_TIMEOUT,
            retry_policy=RetryPolicy(maximum_attempts=3),
        )
