"""Scenario 3, throughput: completed executions per second of a 1-step and a 5-step template
against raw workflows that run the same activity (`data.transform`, the project's own code in
a raw worker) the same number of times.

A round starts N executions from C concurrent clients and ends when Temporal counts all N
completed; the figure is N over that wall time (first start to last completion), so it holds
the start path too: that is what a caller gets. Rounds alternate service, raw, service, raw.
"""

from __future__ import annotations

import time
from argparse import Namespace
from typing import Any

from bench.harness import (
    TRANSFORM_INPUT,
    Bench,
    RawWorker,
    check_all_completed,
    cpu_rows,
    pool,
    raw_scope,
    row,
    service_scope,
    status,
    wait_count,
)
from bench.raw_workflows import StepsInput
from bench.stack import CpuMeter

STEP_COUNTS = (1, 5)


def steps_spec(name: str, steps: int) -> dict[str, Any]:
    return {
        "name": name,
        "title": f"Bench: {steps} data.transform steps",
        "parameters": {"type": "object"},
        "steps": [
            {"id": f"s{i}", "activity": "data.transform", "input": TRANSFORM_INPUT}
            for i in range(steps)
        ],
    }


async def rate(
    bench: Bench, worker: RawWorker, steps: int, args: Namespace
) -> list[dict[str, Any]]:
    """Alternating rounds of n executions per side; completed/s of each side over all rounds."""
    n, apis = args.executions, bench.tenant_apis()
    template = f"bench-steps{steps}-{bench.run_id}"
    await bench.publish_everywhere(steps_spec(template, steps))
    prefix = f"bench-steps{steps}-"
    scopes = {"service": service_scope(template), "raw": raw_scope(worker.task_queue, prefix)}

    async def service(i: int) -> None:
        await apis[i % len(apis)].start(template, {})

    async def raw(i: int) -> None:
        await bench.temporal.start_workflow(
            "BenchSteps",
            StepsInput(steps=steps, step_input=TRANSFORM_INPUT),
            id=f"{prefix}{time.time_ns()}-{i}",
            task_queue=worker.task_queue,
        )

    seconds = {"service": 0.0, "raw": 0.0}
    cpu = {"service": CpuMeter(), "raw": CpuMeter()}
    for done in range(1, args.throughput_rounds + 1):
        for side, call in (("service", service), ("raw", raw)):
            t0 = time.monotonic()
            with cpu[side]:
                await pool(n, args.clients, call)
                query = status(scopes[side], "Completed")
                seconds[side] += await wait_count(bench.temporal, query, n * done, 600) - t0
    total = n * args.throughput_rounds
    for scope in scopes.values():
        await check_all_completed(bench.temporal, scope, total)
    rate = row(
        f"{steps}-step completed/s",
        total / seconds["service"],
        total / seconds["raw"],
        ">= 0.6x raw",
    )
    return [rate, *cpu_rows(cpu["service"], cpu["raw"])]


async def run(bench: Bench, args: Namespace) -> dict[str, Any]:
    async with RawWorker(bench.stack) as worker:
        rows = [r for steps in STEP_COUNTS for r in await rate(bench, worker, steps, args)]
    return {
        "title": (
            f"throughput: {args.throughput_rounds} rounds of {args.executions} executions per "
            f"side and template, started from {args.clients} clients; all completed"
        ),
        "rows": rows,
    }
