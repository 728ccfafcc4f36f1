"""Scenario 4, concurrency: N executions open at once, each waiting (a `wait.event` step), then
all released; every one must complete. Against N raw workflows waiting for a signal.

Peak memory per process is sampled while each side runs (bench/stack.py: RSS, PSS summed for
PostgreSQL's processes), so the service's figures are those of its own phase.
"""

from __future__ import annotations

import time
from argparse import Namespace
from typing import Any

from bench.harness import (
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
from bench.raw_workflows import GO_SIGNAL, StepsInput
from bench.stack import CpuMeter, MemorySampler

EVENT = "go"


def wait_spec(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "title": "Bench: wait for an event",
        "parameters": {"type": "object"},
        "steps": [
            {
                "id": "hold",
                "activity": "wait.event",
                "input": {"event": EVENT, "timeout_seconds": 3600},
            }
        ],
    }


async def phases(
    bench: Bench, n: int, clients: int, scope: str, start: Any, release: Any
) -> dict[str, float]:
    """Start n, wait until all n are open, release all, wait until all n completed."""
    t0 = time.monotonic()
    await pool(n, clients, start)
    opened = await wait_count(bench.temporal, status(scope, "Running"), n, max(300, n / 5))
    t1 = time.monotonic()
    await pool(n, clients, release)
    done = await wait_count(bench.temporal, status(scope, "Completed"), n, max(300, n / 5))
    await check_all_completed(bench.temporal, scope, n)
    return {"open": opened - t0, "release": done - t1}


async def run(bench: Bench, args: Namespace) -> dict[str, Any]:
    n, apis = args.open, bench.tenant_apis()
    template = f"bench-wait-{bench.run_id}"
    await bench.publish_everywhere(wait_spec(template))
    ids: list[str] = [""] * n

    async def start(i: int) -> None:
        ids[i] = await apis[i % len(apis)].start(template, {})

    async def release(i: int) -> None:
        await apis[i % len(apis)].send_event(ids[i], EVENT)

    service_cpu, raw_cpu = CpuMeter(), CpuMeter()
    async with MemorySampler([bench.stack.pid]) as service_mem:
        with service_cpu:
            service = await phases(bench, n, args.clients, service_scope(template), start, release)
    async with RawWorker(bench.stack) as worker:
        prefix = f"bench-wait-{bench.run_id}-"

        async def raw_start(i: int) -> None:
            await bench.temporal.start_workflow(
                "BenchSteps",
                StepsInput(wait=True),
                id=f"{prefix}{i}",
                task_queue=worker.task_queue,
            )

        async def raw_release(i: int) -> None:
            await bench.temporal.get_workflow_handle(f"{prefix}{i}").signal(GO_SIGNAL)

        scope = raw_scope(worker.task_queue, prefix)
        async with MemorySampler([bench.stack.pid, worker.pid]) as raw_mem:
            with raw_cpu:
                raw = await phases(bench, n, args.clients, scope, raw_start, raw_release)
    s_mib, r_mib = service_mem.mib(), raw_mem.mib()
    # The service's Python processes: `wfs dev` (the supervisor, or everything with
    # DEV_PROCESSES=1) and its role processes (API, worker, AI worker).
    app = sum(v for k, v in s_mib.items() if k.startswith(("wfs ", "app.cli.dev_roles")))
    rows = [
        row(f"start {n} until all open, s", service["open"], raw["open"]),
        row("release until all completed, s", service["release"], raw["release"]),
        row(f"completed of {n}", n, n, "all"),
        row("API + workers peak RSS MiB", app, r_mib.get("bench.raw_worker"), "< 1024 MiB"),
    ]
    for name in sorted(set(s_mib) | set(r_mib)):
        rows.append(row(f"peak MiB: {name}", s_mib.get(name), r_mib.get(name)))
    rows += cpu_rows(service_cpu, raw_cpu)
    return {
        "title": f"concurrency: {n} executions open at once per side, then released",
        "rows": rows,
        "notes": [
            "raw side: the raw worker process (bench.raw_worker) in the worker rows; "
            "postgres is the sum of PSS of its processes"
        ],
    }
