"""Long-running roles (API server, Temporal worker) as coroutines that stop on an Event.

Shared by `wfs api`, `wfs worker` and `wfs dev` (app/cli/dev_roles.py runs them in child
processes, or all in one with `--processes 1`), and by the tests, which run them in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Awaitable, Callable, Iterator

import structlog
import uvicorn
from temporalio.client import Client
from temporalio.worker import Worker

from app.db import SessionFactory, make_engine, make_sessionmaker
from app.events.bus import EventBus
from app.plugins.registry import activate as activate_plugins
from app.settings import Settings
from app.steps.backends import check_storage
from app.temporal import check_search_attributes, connect

log = structlog.get_logger(__name__)


class _Server(uvicorn.Server):
    # The caller owns signals (and stops the server via should_exit); uvicorn's own capture
    # would re-raise SIGINT after serve() returns.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def run_api(
    settings: Settings, stop: asyncio.Event, ready: asyncio.Event | None = None
) -> None:
    # Here, not at the top: a worker process never needs the API (Strawberry and the schema,
    # ~0.4 s of CPU per process), and `wfs dev` starts four of them at once.
    from app.api.app import create_app

    await asyncio.to_thread(check_storage, settings)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,
        access_log=False,
        ws="websockets-sansio",
        # uvicorn would buffer socket frames up to 16 MiB before the app's own 4413 check.
        ws_max_size=settings.max_request_bytes + 4096,
        lifespan="on",
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started and not task.done():  # noqa: ASYNC110 (uvicorn exposes a flag)
        await asyncio.sleep(0.05)
    if task.done():
        await task
        raise RuntimeError(f"API could not start on {settings.api_host}:{settings.api_port}")
    settle_heap()
    if ready is not None:
        ready.set()
    await stop.wait()
    server.should_exit = True
    await task


def settle_heap() -> None:
    """Move everything alive after start-up out of the collector's reach.

    A full collection holds the GIL while it walks every object: ~250 ms with the ~400,000
    objects of a started process, a stall of the event loop that one large tenant document can
    trigger. Frozen objects are skipped (3 us after this), and what start-up built lives as
    long as the process anyway. Idempotent; each role calls it once it is up.
    """
    gc.collect()
    gc.freeze()


async def run_worker(
    settings: Settings, stop: asyncio.Event, task_queue: str | None = None
) -> None:
    """A worker for one task queue; the AI queue gets the AI activities and their upkeep, the
    webhook queue the webhook deliveries."""
    queue = task_queue or settings.temporal_task_queue
    if queue == settings.ai_task_queue:
        await run_ai_worker(settings, stop)
        return
    if queue == settings.webhook_task_queue:
        await run_webhook_worker(settings, stop)
        return
    # workers import app, never the reverse
    from workers.main import build_worker, ensure_rollup_schedule

    await asyncio.to_thread(check_storage, settings)
    await asyncio.to_thread(activate_plugins, settings)  # before build_worker needs them
    assert settings.database_url and settings.redis_url and settings.temporal_address
    client = await connect(settings)
    await check_search_attributes(client)
    engine = make_engine(settings.database_url)
    bus = EventBus(settings.redis_url)
    await bus.start()
    sessions = make_sessionmaker(engine)
    await ensure_rollup_schedule(client, queue, settings)
    polling = asyncio.Event()
    upkeep = [
        asyncio.create_task(admit_queued(sessions, client, bus, settings, stop)),
        asyncio.create_task(reconcile_lost(sessions, client, bus, settings, stop)),
        asyncio.create_task(dispatch_webhooks(sessions, client, settings, stop)),
        asyncio.create_task(purge_step_records(sessions, settings, stop)),
        asyncio.create_task(evaluate_slas(sessions, bus, settings, stop)),
        asyncio.create_task(keep_rollup_schedules(client, queue, settings, polling, stop)),
    ]
    try:
        worker = build_worker(client, queue, sessions, bus, settings)
        await serve_worker(worker, settings, stop, polling)
    finally:
        stop.set()
        await asyncio.gather(*upkeep)
        await bus.close()
        await engine.dispose()


async def serve_worker(
    worker: Worker,
    settings: Settings,
    stop: asyncio.Event,
    polling: asyncio.Event | None = None,
) -> None:
    """Run a built worker until `stop`, with its probe endpoints on WORKER_HEALTH_PORT when
    set (workers/health.py); on `stop` it drains for WORKER_GRACEFUL_SHUTDOWN_SECONDS.
    `polling` is set once it polls."""
    from workers.main import run_until

    settle_heap()
    await run_until(worker, stop, health_port=settings.worker_health_port, polling=polling)


async def keep_rollup_schedules(
    client: Client, queue: str, settings: Settings, polling: asyncio.Event, stop: asyncio.Event
) -> None:
    """Once the worker polls, then hourly: ensure this queue's analytics rollup schedule
    (another deployment's worker may have deleted it meanwhile), and delete the other queues'
    that no worker serves (a renamed queue's): workers/rollup_schedules.py."""
    from workers.main import PRUNE_INTERVAL_SECONDS
    from workers.main import keep_rollup_schedules as keep

    waiting = asyncio.ensure_future(polling.wait())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait([waiting, stopping], return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    stopping.cancel()
    await every(
        PRUNE_INTERVAL_SECONDS,
        lambda: keep(client, queue, settings),
        "analytics.rollup_schedules",
        stop,
    )


async def admit_queued(
    sessions: SessionFactory, client: Client, bus: EventBus, settings: Settings, stop: asyncio.Event
) -> None:
    """Every few seconds, start queued executions that have a free slot (a safety net: the
    event recorder admits the next one as soon as an execution ends)."""
    from app.executions.admission import sweep

    await every(10, lambda: sweep(sessions, client, bus, settings), "admission.sweep", stop)


async def reconcile_lost(
    sessions: SessionFactory, client: Client, bus: EventBus, settings: Settings, stop: asyncio.Event
) -> None:
    """Every `reconcile_interval_seconds`, finish executions whose workflow was terminated,
    timed out or lost without recording its end (app/executions/reconciler.py)."""
    from app.executions.reconciler import Reconciler

    reconciler = Reconciler(sessions, client, bus, settings)
    await every(settings.reconcile_interval_seconds, reconciler.run_round, "reconcile", stop)


async def evaluate_slas(
    sessions: SessionFactory, bus: EventBus, settings: Settings, stop: asyncio.Event
) -> None:
    """Every `sla_evaluate_interval_seconds`, record runs open past their duration target and
    success rates below their minimum, each notified once (app/sla/service.py)."""
    from app.sla.service import SlaMonitor

    monitor = SlaMonitor(sessions, bus.publish)
    await every(settings.sla_evaluate_interval_seconds, monitor.run_round, "sla.evaluate", stop)


async def purge_step_records(
    sessions: SessionFactory, settings: Settings, stop: asyncio.Event
) -> None:
    """Every `reconcile_interval_seconds`, delete a batch of step idempotency records past
    STEP_IDEMPOTENCY_RETENTION_DAYS (app/steps/idempotency.py)."""
    from app.steps import idempotency

    days = settings.step_idempotency_retention_days
    await every(
        settings.reconcile_interval_seconds,
        lambda: idempotency.purge(sessions, days),
        "step_idempotency.purge",
        stop,
    )


async def dispatch_webhooks(
    sessions: SessionFactory, client: Client, settings: Settings, stop: asyncio.Event
) -> None:
    """Every `webhook_dispatch_interval_seconds`, turn new notifications into webhook
    deliveries and start their workflows (app/webhooks/dispatcher.py)."""
    from app.webhooks.dispatcher import Dispatcher

    dispatcher = Dispatcher(sessions, client, settings)
    await every(settings.webhook_dispatch_interval_seconds, dispatcher.run_round, "webhooks", stop)


async def every(
    seconds: float, job: Callable[[], Awaitable[object]], name: str, stop: asyncio.Event
) -> None:
    """Run `job` now and then every `seconds` until `stop`; a failed round is logged and the
    next one retries."""
    while not stop.is_set():
        try:
            await job()
        except Exception as exc:
            log.warning(f"{name}_failed", error=str(exc))
        try:
            await asyncio.wait_for(stop.wait(), seconds)
        except TimeoutError:
            pass


async def run_ai_worker(settings: Settings, stop: asyncio.Event) -> None:
    from app.ai.wiring import build_gateway, upkeep
    from workers.main import build_ai_worker

    assert settings.database_url and settings.temporal_address
    client = await connect(settings)
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    await asyncio.to_thread(activate_plugins, settings)  # their AI tasks and providers first
    gateway = build_gateway(settings, sessions)
    maintenance = asyncio.create_task(upkeep(gateway, settings, stop))
    try:
        await serve_worker(build_ai_worker(client, gateway, sessions, settings), settings, stop)
    finally:
        stop.set()
        await maintenance
        await gateway.ledger.redis.aclose()
        await engine.dispose()


async def run_webhook_worker(settings: Settings, stop: asyncio.Event) -> None:
    """The worker of WEBHOOK_TASK_QUEUE: webhook delivery workflows and their attempts (the
    dispatcher that starts them runs in the main-queue workers)."""
    from workers.main import build_webhook_worker

    assert settings.database_url and settings.temporal_address
    client = await connect(settings)
    engine = make_engine(settings.database_url)
    try:
        worker = build_webhook_worker(client, make_sessionmaker(engine), settings)
        await serve_worker(worker, settings, stop)
    finally:
        await engine.dispose()


async def run_plugin_worker(settings: Settings, stop: asyncio.Event, plugin: str) -> None:
    """The worker of one plugin (workers/plugin_worker.py): its steps on its own task queue,
    each call in a sandbox process. Needs only Temporal: no database, Redis or AI keys."""
    from workers.plugin_worker import describe_plugin, serve_plugin

    assert settings.temporal_address
    # A plugin that is not installed or does not load stops the worker before it connects.
    manifest = await describe_plugin(plugin, settings)
    client = await connect(settings)
    settle_heap()
    await serve_plugin(client, manifest, settings, stop)
