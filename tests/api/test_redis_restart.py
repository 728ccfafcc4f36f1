"""A subscription survives Redis restarting mid-execution: it gets every event, in order, once.

This stack (API + worker) uses its own Valkey so the test can stop and restart it, and a long
poll interval, so recovery must come from the bus's reconnect-and-resync, not from polling.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.conftest import TenantKeys, make_tenant
from tests.support import GraphQLClient, Subscription

OPS = Path(__file__).resolve().parents[2] / "graphql" / "operations"


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
