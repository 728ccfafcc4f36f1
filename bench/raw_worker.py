"""A raw Temporal worker: bench/raw_workflows.py and the project's own step activities.

    python -m bench.raw_worker TASK_QUEUE   (DATABASE_URL, REDIS_URL, TEMPORAL_ADDRESS set)

It mirrors the service's worker where it matters for a comparison (workers/main.py: the same
activity class, 10 workflow-task pollers, the sandboxed runner) and prints `ready` once polling.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from temporalio.client import Client
from temporalio.worker import Worker

from app.db import make_engine, make_sessionmaker
from app.events.bus import EventBus
from app.settings import Settings
from bench.raw_workflows import BenchSteps
from workers.activities import TemplateActivities


async def main(task_queue: str) -> None:
    settings = Settings()
    assert settings.database_url and settings.redis_url and settings.temporal_address
    client = await Client.connect(settings.temporal_address)
    engine = make_engine(settings.database_url)
    # data.transform neither reads the database nor publishes; the class needs both anyway.
    sessions, bus = make_sessionmaker(engine), EventBus(settings.redis_url)
    activities = TemplateActivities(sessions, bus, settings)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    worker = Worker(
        client,
        task_queue=task_queue,
        workflows=[BenchSteps],
        activities=activities.all(),
        max_concurrent_workflow_task_polls=10,
    )
    async with worker:
        print("ready", flush=True)
        await stop.wait()
    await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
    sys.stdout.flush()
    os._exit(0)  # temporalio can abort at interpreter exit (sdk-python #300)
