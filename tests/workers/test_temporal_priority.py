"""Temporal task priority and fairness, measured on the embedded dev server (Server 1.32).

Each test builds a backlog on a fresh task queue while no worker polls it, then drains it with
one worker that runs one workflow task at a time. A probe workflow finishes in its first task,
so the order of close times is the order in which the server dispatched the backlog.

- priority: an enterprise execution started behind ten free ones is dispatched first;
- fairness: a tenant's three executions started behind another tenant's twelve (same tier)
  alternate with them instead of waiting for all twelve;
- control: a dev server with the priority matcher and fairness off dispatches the same
  backlogs (nearly) first in, first out, so the tests above measure the server, not this
  harness;
- activities inherit their workflow's priority and fairness key.

The priorities are the ones `app.executions.launcher.task_priority` gives real executions.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity, workflow
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, WorkflowExecutionDescription
from temporalio.common import Priority
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from app.embedded import EmbeddedTemporal
from app.executions.launcher import task_priority
from app.tiers import priority_key

Backlog = list[tuple[str, Priority]]


@workflow.defn(name="PriorityProbe")
class PriorityProbe:
    @workflow.run
    async def run(self, label: str) -> str:
        return label


@activity.defn(name="priority_probe.echo")
async def echo_priority(_: str) -> list[str]:
    priority = activity.info().priority
    return [str(priority.priority_key), priority.fairness_key or ""]


@workflow.defn(name="InheritProbe")
class InheritProbe:
    @workflow.run
    async def run(self, label: str) -> list[str]:
        return await workflow.execute_activity(
            echo_priority, label, start_to_close_timeout=timedelta(seconds=10)
        )


def probe_worker(client: Client, task_queue: str) -> Worker:
    # Unsandboxed: the probes are trivial and deterministic, and the sandbox would re-import
    # this test module (pytest and all) for every run.
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[PriorityProbe, InheritProbe],
        activities=[echo_priority],
        workflow_runner=UnsandboxedWorkflowRunner(),
        max_concurrent_workflow_tasks=1,
        max_concurrent_activities=1,
        max_cached_workflows=0,  # no sticky queue: every task comes from the normal backlog
    )


async def backlog_stats(client: Client, task_queue: str) -> tuple[int, dict[int, int]]:
    """(workflow tasks backlogged, per priority key) of task_queue, from the server."""
    response = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            report_stats=True,
        )
    )
    per_key = {
        key: stats.approximate_backlog_count
        for key, stats in response.stats_by_priority_key.items()
        if stats.approximate_backlog_count
    }
    return response.stats.approximate_backlog_count, per_key


async def dispatch_order(
    client: Client, backlog: Backlog
) -> tuple[list[str], dict[int, int], dict[str, WorkflowExecutionDescription]]:
    """Start backlog (label, priority) in order with nobody polling, then drain it.

    Returns the labels in dispatch order, the server's backlog per priority key just before
    the worker started, and each workflow's description.
    """
    task_queue = f"priority-{uuid.uuid4()}"
    handles = {
        label: await client.start_workflow(
            PriorityProbe.run,
            label,
            id=f"{task_queue}/{label}",
            task_queue=task_queue,
            priority=priority,
        )
        for label, priority in backlog
    }
    # History hands each workflow task to matching asynchronously: a task arriving after the
    # worker's first poll would be dispatched late whatever its priority. The server caches
    # these stats for about 5 s, so a first look taken too early costs 5 s.
    await asyncio.sleep(0.2)
    deadline = time.monotonic() + 15
    while (stats := await backlog_stats(client, task_queue))[0] < len(backlog):
        assert time.monotonic() < deadline, f"backlog never reached {len(backlog)}: {stats}"
        await asyncio.sleep(0.05)
    async with probe_worker(client, task_queue):
        await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles.values())), 30)
    described = {label: await h.describe() for label, h in handles.items()}
    closed = sorted((d.close_time, label) for label, d in described.items() if d.close_time)
    assert len(closed) == len(backlog)
    return [label for _, label in closed], stats[1], described


def free_flood_then_enterprise() -> Backlog:
    flood = [(f"free{i}", task_priority("free", "t-free-flood")) for i in range(10)]
    return [*flood, ("enterprise", task_priority("enterprise", "t-enterprise"))]


def big_tenant_then_small_tenant() -> Backlog:
    big = [(f"big{i}", task_priority("free", "t-free-big")) for i in range(12)]
    small = [(f"small{i}", task_priority("free", "t-free-small")) for i in range(3)]
    return big + small


def positions(order: list[str], prefix: str) -> list[int]:
    return [i for i, label in enumerate(order) if label.startswith(prefix)]


@pytest.fixture
async def temporal(services: Any) -> Client:
    return await Client.connect(services.temporal_address)


async def test_enterprise_is_dispatched_before_a_free_backlog(temporal: Client) -> None:
    order, backlogged, described = await dispatch_order(temporal, free_flood_then_enterprise())

    assert order[0] == "enterprise", order
    # The server filed the tasks under their tiers' keys and records them on the execution.
    assert backlogged == {priority_key("enterprise"): 1, priority_key("free"): 10}
    recorded = described["enterprise"].raw_description.workflow_execution_info.priority
    assert (recorded.priority_key, recorded.fairness_key) == (
        priority_key("enterprise"),
        "t-enterprise",
    )


async def test_tenants_of_one_tier_share_it(temporal: Client) -> None:
    order, _, described = await dispatch_order(temporal, big_tenant_then_small_tenant())

    # Round robin between the two tenants: the small tenant's k-th execution is dispatched
    # within the first 2k+2, not after the big tenant's twelve (one slot of slack).
    small = positions(order, "small")
    assert all(pos <= 2 * k + 2 for k, pos in enumerate(small)), order
    recorded = described["small0"].raw_description.workflow_execution_info.priority
    assert (recorded.priority_key, recorded.fairness_key) == (
        priority_key("free"),
        "t-free-small",
    )


async def test_activities_inherit_priority_and_fairness_key(temporal: Client) -> None:
    task_queue = f"inherit-{uuid.uuid4()}"
    async with probe_worker(temporal, task_queue):
        result = await temporal.execute_workflow(
            InheritProbe.run,
            "x",
            id=task_queue,
            task_queue=task_queue,
            priority=task_priority("premium", "t-premium"),
            execution_timeout=timedelta(seconds=30),
        )
    assert result == [str(priority_key("premium")), "t-premium"]


@pytest.fixture
async def classic_client(state_dir: Path) -> AsyncIterator[Client]:
    """A second dev server with the classic matcher: no priorities, no fairness."""
    server = EmbeddedTemporal(
        state_dir / f"temporal-classic-{uuid.uuid4().hex[:6]}",
        headless=True,
        dynamic_config={"matching.useNewMatcher": False, "matching.enableFairness": False},
    )
    address = await asyncio.to_thread(server.start)
    try:
        yield await Client.connect(address)
    finally:
        await asyncio.to_thread(server.stop)


async def test_control_without_priorities_and_fairness_is_first_in_first_out(
    classic_client: Client,
) -> None:
    # Nearly first in, first out: neighbours are sometimes swapped.
    order, backlogged, _ = await dispatch_order(classic_client, free_flood_then_enterprise())
    assert order.index("enterprise") >= len(order) - 2, order
    assert backlogged == {3: 11}  # every task filed under the default priority
    order, _, _ = await dispatch_order(classic_client, big_tenant_then_small_tenant())
    assert min(positions(order, "small")) >= 12 - 1, order
