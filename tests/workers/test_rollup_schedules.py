"""Rollup schedules left behind by a renamed task queue are deleted once nobody serves them,
against the Temporal dev server: a schedule's latest refreshes all timed out AND no worker
polls its queue. A served queue, a recently renamed one and the worker's own stay. A worker's
own schedule deleted by someone else comes back with its next round."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import timedelta

import pytest
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    ScheduleSpec,
    ScheduleState,
    WorkflowExecutionStatus,
)
from temporalio.service import RPCError
from temporalio.worker import Worker

from app.analytics.workflow_io import ROLLUP_WORKFLOW, RollupInput, rollup_schedule_id
from app.cli.runner import keep_rollup_schedules
from app.settings import Settings
from workers.rollup_schedules import (
    STALE_ACTIONS,
    ensure_rollup_schedule,
    prune_rollup_schedules,
)
from workers.rollup_schedules import (
    keep_rollup_schedules as keep_own_and_prune,
)
from workers.workflows.rollup import AnalyticsRollupWorkflow


async def schedule_with_timeouts(client: Client, queue: str, refreshes: int) -> str:
    """A paused rollup schedule for `queue` whose `refreshes` triggered runs time out after a
    second each (nothing on `queue` runs the refresh's activity)."""
    schedule_id = rollup_schedule_id(queue)
    handle = await client.create_schedule(
        schedule_id,
        Schedule(
            action=ScheduleActionStartWorkflow(
                ROLLUP_WORKFLOW,
                RollupInput(),
                id=schedule_id,
                task_queue=queue,
                execution_timeout=timedelta(seconds=1),
            ),
            spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(days=1))]),
            state=ScheduleState(paused=True),
        ),
    )
    for _ in range(refreshes):
        # A run's id ends with the trigger's time in whole seconds: one trigger per second.
        await handle.trigger(overlap=ScheduleOverlapPolicy.ALLOW_ALL)
        await asyncio.sleep(1.1)
    async with asyncio.timeout(60):
        while True:
            recent = (await handle.describe()).info.recent_actions
            statuses = [
                (await client.get_workflow_handle(a.action.workflow_id).describe()).status
                for a in recent
                if hasattr(a.action, "workflow_id")
            ]
            if len(statuses) == refreshes and all(
                s == WorkflowExecutionStatus.TIMED_OUT for s in statuses
            ):
                return schedule_id
            await asyncio.sleep(0.3)


async def listed(client: Client, ids: set[str]) -> None:
    async with asyncio.timeout(30):  # the schedule list is read from visibility
        while ids - {s.id async for s in await client.list_schedules()}:
            await asyncio.sleep(0.2)


async def test_schedules_of_queues_nobody_serves_are_deleted(settings: Settings) -> None:
    assert settings.temporal_address
    client = await Client.connect(settings.temporal_address)
    own, renamed, served, recent = (f"test-{name}-{uuid.uuid4()}" for name in "abcd")
    # The served queue has a worker polling it; its runs time out all the same (no activity).
    worker = Worker(client, task_queue=served, workflows=[AnalyticsRollupWorkflow])
    async with worker:
        made = await asyncio.gather(
            schedule_with_timeouts(client, own, STALE_ACTIONS),
            schedule_with_timeouts(client, renamed, STALE_ACTIONS),
            schedule_with_timeouts(client, served, STALE_ACTIONS),
            schedule_with_timeouts(client, recent, STALE_ACTIONS - 1),
        )
        ids = dict(zip(("own", "renamed", "served", "recent"), made, strict=True))
        await listed(client, set(ids.values()))
        deleted = await prune_rollup_schedules(client, own)
    assert ids["renamed"] in deleted
    assert not {ids["own"], ids["served"], ids["recent"]} & set(deleted)
    await listed(client, {ids["own"], ids["served"], ids["recent"]})
    for name in ("own", "served", "recent"):
        await client.get_schedule_handle(ids[name]).delete()


async def test_a_workers_own_schedule_deleted_by_someone_is_back_after_its_round(
    settings: Settings,
) -> None:
    """Another deployment's worker deleted it (this one was cut off, or between its start-up
    and its first poll): the round run once the worker polls, then hourly, creates it again."""
    assert settings.temporal_address and settings.analytics_rollup_seconds > 0
    client = await Client.connect(settings.temporal_address)
    own = f"test-own-{uuid.uuid4()}"
    handle = client.get_schedule_handle(rollup_schedule_id(own))
    await ensure_rollup_schedule(client, own, settings)  # as the worker does at start-up
    await handle.delete()  # by another deployment's worker
    polling, stop = asyncio.Event(), asyncio.Event()
    rounds = asyncio.create_task(keep_rollup_schedules(client, own, settings, polling, stop))
    try:
        await asyncio.sleep(0.5)
        with pytest.raises(RPCError):  # no round before the worker polls
            await handle.describe()
        polling.set()
        async with asyncio.timeout(30):
            while True:
                try:
                    described = await handle.describe()
                    break
                except RPCError:
                    await asyncio.sleep(0.2)
        action = described.schedule.action
        assert isinstance(action, ScheduleActionStartWorkflow) and action.task_queue == own
        await handle.pause(note="by an operator")  # the next rounds keep it paused
        await keep_own_and_prune(client, own, settings)
        assert (await handle.describe()).schedule.state.paused
    finally:
        stop.set()
        await rounds
        with contextlib.suppress(RPCError):
            await handle.delete()
