"""A subscription survives Redis restarting mid-execution: it gets every event, in order, once.

This stack (API + worker) uses its own Valkey so the test can stop and restart it, and a long
poll interval, so recovery must come from the bus's reconnect-and-resync, not from polling.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.embedded import EmbeddedValkey
from app.settings import Settings
from tests.conftest import TenantKeys, make_tenant
from tests.support import GraphQLClient, Subscription, free_port

OPS = Path(__file__).resolve().parents[2] / "graphql" / "operations"


@pytest.fixture
async def restartable(
    settings: Settings, sessions, state_dir: Path
) -> AsyncIterator[tuple[str, EmbeddedValkey]]:  # type: ignore[no-untyped-def]
    from app.cli.runner import run_api, run_worker

    valkey = EmbeddedValkey(state_dir / f"valkey-{uuid.uuid4().hex[:6]}", port=free_port())
    redis_url = await asyncio.to_thread(valkey.start)
    own = settings.model_copy(
        update={
            "redis_url": redis_url,
            "api_port": free_port(),
            "temporal_task_queue": f"restart-{uuid.uuid4().hex[:8]}",
            "subscription_poll_seconds": 60.0,
        }
    )
    stop, ready = asyncio.Event(), asyncio.Event()
    tasks = [
        asyncio.create_task(run_api(own, stop, ready)),
        asyncio.create_task(run_worker(own, stop)),
    ]
    await asyncio.wait_for(ready.wait(), 30)
    try:
        yield f"http://127.0.0.1:{own.api_port}", valkey
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await asyncio.to_thread(valkey.stop)


async def test_subscription_survives_redis_restart(restartable, sessions) -> None:  # type: ignore[no-untyped-def]
    base, valkey = restartable
    keys: TenantKeys = await make_tenant(sessions, "premium")
    client = GraphQLClient(base, keys.admin)
    data = await client.data(
        (OPS / "StartExecution.graphql").read_text(),
        {
            "input": {
                "templateName": "order-summary",
                "params": {
                    "customer": "Linus",
                    "items": [{"sku": "k", "qty": 1, "price": 1}],
                    "wait_seconds": 4,
                },
            }
        },
    )
    execution_id = data["startExecution"]["id"]
    sub = Subscription(base.replace("http", "ws") + "/graphql", keys.admin)
    await sub.connect()
    await sub.start((OPS / "ExecutionUpdates.graphql").read_text(), {"id": execution_id})
    seen = []
    while not any(e["stepId"] == "hold" and e["type"] == "STEP_STARTED" for e in seen):
        msg = await sub.next()
        seen.append(msg["payload"]["data"]["executionUpdates"])

    # Redis goes away while the timer runs; events recorded meanwhile are never published.
    port = valkey.port
    await asyncio.to_thread(valkey.stop)
    await asyncio.sleep(5)
    await asyncio.to_thread(valkey.start)
    assert valkey.port == port

    items, final = await sub.collect(timeout=60)
    await sub.close()
    seen += [i["data"]["executionUpdates"] for i in items]
    assert final["type"] == "complete", final
    seqs = [e["seq"] for e in seen]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    assert seen[-1]["type"] == "COMPLETED"
    assert [e["type"] for e in seen].count("STEP_COMPLETED") == 3
