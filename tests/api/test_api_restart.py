"""A client that reconnects with afterSeq after the API process restarted loses no event."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from app.settings import Settings
from tests.conftest import make_tenant
from tests.support import GraphQLClient, Subscription, free_port

OPS = Path(__file__).resolve().parents[2] / "graphql" / "operations"


async def test_resume_after_api_restart(settings: Settings, sessions: Any, server: str) -> None:
    from app.cli.runner import run_api

    keys = await make_tenant(sessions, "pro")
    own = settings.model_copy(update={"api_port": free_port()})
    base = f"http://127.0.0.1:{own.api_port}"

    async def api() -> tuple[asyncio.Event, asyncio.Task[None]]:
        stop, ready = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(run_api(own, stop, ready))
        await asyncio.wait_for(ready.wait(), 30)
        return stop, task

    stop, task = await api()
    client = GraphQLClient(base, keys.admin)
    started = await client.data(
        (OPS / "StartExecution.graphql").read_text(),
        {
            "input": {
                "templateName": "order-summary",
                "params": {
                    "customer": "R",
                    "items": [{"sku": "a", "qty": 1, "price": 1}],
                    "wait_seconds": 3,
                },
            }
        },
    )
    execution_id = started["startExecution"]["id"]
    sub = Subscription(base.replace("http", "ws") + "/graphql", keys.admin)
    await sub.connect()
    await sub.start((OPS / "ExecutionUpdates.graphql").read_text(), {"id": execution_id})
    seen = [(await sub.next())["payload"]["data"]["executionUpdates"] for _ in range(3)]
    stop.set()  # the API goes away mid-execution (the worker keeps going)
    await task
    await sub.close()
    await asyncio.sleep(1)

    stop, task = await api()
    try:
        again = Subscription(base.replace("http", "ws") + "/graphql", keys.admin)
        await again.connect()
        await again.start(
            (OPS / "ExecutionUpdates.graphql").read_text(),
            {"id": execution_id, "afterSeq": seen[-1]["seq"]},
        )
        items, final = await again.collect()
        await again.close()
    finally:
        stop.set()
        await task
    rest = [i["data"]["executionUpdates"] for i in items]
    assert final["type"] == "complete"
    seqs = [e["seq"] for e in seen + rest]
    assert seqs == list(range(1, len(seqs) + 1))
    assert rest[-1]["type"] == "COMPLETED"
