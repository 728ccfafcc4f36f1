"""Builds and runs the Temporal worker with its dependencies (database, event bus)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import structlog
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from app.ai.gateway import AiGateway
from app.db import SessionFactory
from app.executions.recorder import Publisher
from app.plugins.registry import activate as activate_plugins
from app.settings import Settings
from workers.activities import TemplateActivities
from workers.ai_activities import AiActivities
from workers.analytics_activities import AnalyticsActivities
from workers.health import HealthServer
from workers.log_context import ActivityLogContext
from workers.rollup_schedules import PRUNE_INTERVAL_SECONDS as PRUNE_INTERVAL_SECONDS
from workers.rollup_schedules import ensure_rollup_schedule as ensure_rollup_schedule
from workers.rollup_schedules import keep_rollup_schedules as keep_rollup_schedules
from workers.webhook_activities import WebhookActivities
from workers.workflows import ForEachBatchWorkflow, TemplateWorkflow, WebhookDeliveryWorkflow
from workers.workflows.rollup import AnalyticsRollupWorkflow

log = structlog.get_logger(__name__)
# PRUNE_INTERVAL_SECONDS, ensure_rollup_schedule and keep_rollup_schedules are imported for
# app/cli/runner.py, the one module of app that may import workers.main.

# Modules the workflow sandbox may reuse instead of re-importing on every run; opentelemetry
# for Temporal's tracing interceptor, which runs inside the sandbox when tracing is on.
PASSTHROUGH = (
    "app",
    "jinja2",
    "markupsafe",
    "structlog",
    "pydantic",
    "pydantic_core",
    "opentelemetry",
)


def build_worker(
    client: Client,
    task_queue: str,
    sessions: SessionFactory,
    publisher: Publisher,
    settings: Settings,
) -> Worker:
    activate_plugins(settings)  # plans made here (admission) route plugin steps to their queue
    activities = TemplateActivities(sessions, publisher, settings)
    # Deliveries started on this queue before WEBHOOK_TASK_QUEUE existed finish here; new ones
    # run on the webhook worker (build_webhook_worker).
    webhooks = WebhookActivities(sessions, settings)
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[
            TemplateWorkflow,
            ForEachBatchWorkflow,
            WebhookDeliveryWorkflow,
            AnalyticsRollupWorkflow,
        ],
        activities=[
            *activities.all(),
            *webhooks.all(),
            *AnalyticsActivities(sessions).all(),
        ],
        workflow_runner=sandboxed_runner(),
        max_concurrent_workflow_task_polls=10,
        graceful_shutdown_timeout=graceful_shutdown(settings),
        interceptors=[ActivityLogContext()],
    )


def graceful_shutdown(settings: Settings) -> timedelta:
    """How long a stopping worker lets running activities finish (then they are cancelled and
    retried elsewhere): WORKER_GRACEFUL_SHUTDOWN_SECONDS, under Kubernetes' grace period."""
    return timedelta(seconds=settings.worker_graceful_shutdown_seconds)


def sandboxed_runner() -> SandboxedWorkflowRunner:
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH)
    )


def build_webhook_worker(client: Client, sessions: SessionFactory, settings: Settings) -> Worker:
    """The delivery workflows and their activities, on WEBHOOK_TASK_QUEUE: an endpoint that
    takes its full timeout holds one of this worker's WEBHOOK_MAX_CONCURRENT_DELIVERIES slots,
    never one of the activities that run executions."""
    return Worker(
        client,
        task_queue=settings.webhook_task_queue,
        workflows=[WebhookDeliveryWorkflow],
        activities=WebhookActivities(sessions, settings).all(),
        workflow_runner=sandboxed_runner(),
        max_concurrent_activities=settings.webhook_max_concurrent_deliveries,
        graceful_shutdown_timeout=graceful_shutdown(settings),
        interceptors=[ActivityLogContext()],
    )


def build_ai_worker(
    client: Client, gateway: AiGateway, sessions: SessionFactory, settings: Settings
) -> Worker:
    """Only the AI activities, on the AI queue: workflows and other steps stay elsewhere.
    The loaded plugins' AI tasks are among them (registered before the gateway is built)."""
    activate_plugins(settings)
    return Worker(
        client,
        task_queue=settings.ai_task_queue,
        activities=AiActivities(gateway, sessions, settings).all(),
        max_concurrent_activities=50,
        graceful_shutdown_timeout=graceful_shutdown(settings),
        interceptors=[ActivityLogContext()],
    )


async def run_until(
    worker: Worker,
    stop: asyncio.Event,
    health_port: int | None = None,
    polling: asyncio.Event | None = None,
) -> None:
    """Poll until `stop`, then drain (graceful_shutdown); with health_port, serve the probe
    endpoints there meanwhile (every interface, like /metrics: the kubelet probes the pod).
    `polling` is set once the worker has started polling."""
    health = HealthServer(worker, stop, "0.0.0.0", health_port) if health_port else None
    if health is not None:
        await health.start()
    try:
        async with worker:
            log.info("worker.started", task_queue=worker.task_queue)
            if polling is not None:
                polling.set()
            await stop.wait()
        log.info("worker.stopped", task_queue=worker.task_queue)
    finally:
        if health is not None:
            await health.close()
