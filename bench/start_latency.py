"""Scenario 1, start latency: one `startExecution` at a time against raw `start_workflow`.

Each round starts the standard `order-summary` template through the API (params validated,
admission, the row committed, the workflow started) and, right after, a raw `start_workflow` of
a workflow no worker polls (it times out by itself a minute later), so both see the same load.
"""

from __future__ import annotations

import time
import uuid
from argparse import Namespace
from datetime import timedelta
from typing import Any

from bench.harness import UNPOLLED, Bench, latency_rows

TEMPLATE = "order-summary"
PARAMS = {"customer": "bench", "items": [{"sku": "A-1", "qty": 2, "price": 9.5}], "wait_seconds": 1}
GOALS = {50: "<= 2x raw", 99: "<= 1.5x raw"}


async def run(bench: Bench, args: Namespace) -> dict[str, Any]:
    api = bench.apis["demo-enterprise"]
    queue = f"{UNPOLLED}{bench.run_id}"
    service_ms: list[float] = []
    raw_ms: list[float] = []
    await api.start(TEMPLATE, PARAMS)  # warm: first-use caches are not what a user meets twice
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        await api.start(TEMPLATE, PARAMS)
        service_ms.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        await bench.temporal.start_workflow(
            "BenchUnpolled",
            id=f"bench-{uuid.uuid4().hex}",
            task_queue=queue,
            execution_timeout=timedelta(minutes=1),
        )
        raw_ms.append((time.perf_counter() - t0) * 1000)
    return {
        "title": f"start latency: {args.rounds} sequential starts each, interleaved",
        "rows": latency_rows("start", service_ms, raw_ms, GOALS),
    }
