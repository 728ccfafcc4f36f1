"""The analytics rollup schedules: each worker keeps its own queue's, and removes those that
no worker serves any more.

Each worker keeps an `analytics-rollup-<task queue>` schedule for its own queue
(`ensure_rollup_schedule`). It is per queue on purpose: a worker on another
queue (a test's, a second deployment's sharing the namespace, with its own database) must
neither move nor delete the main queue's schedule, and the queue decides which workers (so
which database) run a refresh. One schedule per namespace would refresh one deployment only.

The cost: a queue renamed (TEMPORAL_TASK_QUEUE changed, a deployment removed) leaves its
schedule behind. It keeps starting a refresh that no worker picks up, which sits for its
one-hour execution timeout and times out, forever. So every worker, once an hour, looks at the
other `analytics-rollup-*` schedules and deletes one when both say nobody serves its queue:

- its latest STALE_ACTIONS (3) refreshes all timed out (with the 1-hour timeout and overlaps
  skipped, that is two hours at least without a refresh completing), and
- Temporal lists no poller of workflow tasks on its queue now (DescribeTaskQueue).

A queue whose workers are merely slow or restarting keeps pollers or completes refreshes, and
a question Temporal did not answer deletes nothing. A worker never deletes its own queue's
schedule.

Another deployment's worker may still delete a schedule that is needed: its deployment lost
Temporal for hours but kept running, or it restarted after an outage and a prune ran between
its `ensure_rollup_schedule` and its first poll. So the hourly round (`keep_rollup_schedules`)
first ensures the worker's OWN schedule, and the worker runs a round as soon as it polls: a
schedule deleted that way is back within the hour (PRUNE_INTERVAL_SECONDS).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable
from datetime import timedelta

import structlog
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleListDescription,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    WorkflowExecutionStatus,
)
from temporalio.service import RPCError

from app.analytics.workflow_io import (
    ROLLUP_SCHEDULE_ID,
    ROLLUP_WORKFLOW,
    RollupInput,
    rollup_schedule_id,
)
from app.settings import Settings
from app.temporal_queues import TaskQueueInspector

log = structlog.get_logger(__name__)

STALE_ACTIONS = 3  # the latest refreshes that must all have timed out
PRUNE_INTERVAL_SECONDS = 3600.0


async def ensure_rollup_schedule(client: Client, task_queue: str, settings: Settings) -> None:
    """Create the analytics rollup schedule, or bring it to these settings (interval, task
    queue): every ANALYTICS_ROLLUP_SECONDS one AnalyticsRollupWorkflow, skipped while the
    previous one runs. 0 deletes it (for deployments that refresh otherwise)."""
    schedule_id = rollup_schedule_id(task_queue)
    handle = client.get_schedule_handle(schedule_id)
    every = settings.analytics_rollup_seconds
    if every <= 0:
        with contextlib.suppress(RPCError):
            await handle.delete()
        return
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            ROLLUP_WORKFLOW,
            RollupInput(),
            id=schedule_id,
            task_queue=task_queue,
            execution_timeout=timedelta(hours=1),
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(seconds=every))]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )
    try:
        await client.create_schedule(schedule_id, schedule)
    except ScheduleAlreadyRunningError:
        # Keeps its state: a schedule an operator paused stays paused through the hourly round.
        await handle.update(
            lambda current: ScheduleUpdate(
                schedule=dataclasses.replace(schedule, state=current.description.schedule.state)
            )
        )


async def keep_rollup_schedules(client: Client, own_queue: str, settings: Settings) -> list[str]:
    """One round: ensure this worker's own schedule (recreated if someone deleted it), then
    delete the other queues' schedules that nobody serves; returns the deleted ids."""
    await ensure_rollup_schedule(client, own_queue, settings)
    return await prune_rollup_schedules(client, own_queue)


async def _rollup_schedules(client: Client, own_queue: str) -> list[ScheduleListDescription]:
    """Every analytics rollup schedule of the namespace but this queue's."""
    own = rollup_schedule_id(own_queue)
    found = []
    async for listed in await client.list_schedules():
        if listed.id.startswith(f"{ROLLUP_SCHEDULE_ID}-") and listed.id != own:
            found.append(listed)
    return found


async def _all_timed_out(client: Client, started: Iterable[str]) -> bool:
    """Whether each of these workflow ids (latest run) timed out."""
    for workflow_id in started:
        described = await client.get_workflow_handle(workflow_id).describe()
        if described.status != WorkflowExecutionStatus.TIMED_OUT:
            return False
    return True


async def _unserved(
    client: Client, inspector: TaskQueueInspector, listed: ScheduleListDescription
) -> str | None:
    """The schedule's task queue when nobody serves it (see the module's docstring), else
    None. Raises RPCError when Temporal does not answer."""
    recent = sorted(listed.info.recent_actions, key=lambda a: a.started_at) if listed.info else []
    started = [
        a.action.workflow_id
        for a in recent
        if isinstance(a.action, ScheduleActionExecutionStartWorkflow)
    ]
    if len(started) < STALE_ACTIONS:
        return None
    action = (await client.get_schedule_handle(listed.id).describe()).schedule.action
    if not isinstance(action, ScheduleActionStartWorkflow) or not action.task_queue:
        return None
    queue = action.task_queue
    if not await _all_timed_out(client, started[-STALE_ACTIONS:]):
        return None
    workflow = (await inspector.describe(queue)).workflow
    if workflow is None or workflow.pollers:  # not answered, or served now
        return None
    return queue


async def prune_rollup_schedules(client: Client, own_queue: str) -> list[str]:
    """Delete the other queues' rollup schedules that nobody serves; returns their ids."""
    inspector = TaskQueueInspector(client, cache_seconds=0)
    deleted = []
    for listed in await _rollup_schedules(client, own_queue):
        try:
            queue = await _unserved(client, inspector, listed)
            if queue is None:
                continue
            await client.get_schedule_handle(listed.id).delete()
        except RPCError as exc:  # gone meanwhile, or Temporal busy: the next round sees it
            log.warning(
                "analytics.rollup_schedule_prune_failed", schedule_id=listed.id, error=str(exc)
            )
            continue
        log.warning("analytics.rollup_schedule_pruned", schedule_id=listed.id, task_queue=queue)
        deleted.append(listed.id)
    return deleted
