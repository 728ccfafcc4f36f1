"""Scenario 2, start under load: N starts from C concurrent clients across tenants, against
raw `start_workflow` from C concurrent clients on the same server.

The service's tenants are the demo tenants plus, with `--tenants` above 4, enterprise tenants
created through the CLI (`wfs tenant create`, `wfs apikey create`), each client starting as the
next tenant in turn. The two sides alternate in halves (service, raw, service, raw) so that a
burst of load from other users of the machine hits both.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from argparse import Namespace
from datetime import timedelta
from typing import Any

from bench.harness import UNPOLLED, Api, Bench, cpu_rows, latency_rows, pool, row
from bench.stack import CpuMeter, Stack, wfs_binary
from bench.start_latency import PARAMS, TEMPLATE

GOALS = {99: "< 500 ms"}


async def cli(stack: Stack, *argv: str) -> str:
    """A `wfs` command against the bench's stack (it finds it through STATE_DIR)."""
    env = dict(os.environ, STATE_DIR=str(stack.state_dir), LOG_LEVEL="warning")
    proc = await asyncio.create_subprocess_exec(
        wfs_binary(), *argv, env=env, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"wfs {' '.join(argv)} failed ({proc.returncode})")
    return out.decode()


async def add_tenant(bench: Bench, name: str) -> Api:
    await cli(bench.stack, "tenant", "create", name, "--tier", "enterprise")
    key = (await cli(bench.stack, "apikey", "create", "--tenant", name)).strip().splitlines()[-1]
    return Api(bench.stack.api_url, key)


async def run(bench: Bench, args: Namespace) -> dict[str, Any]:
    extra = [f"bench-{bench.run_id}-{i}" for i in range(max(0, args.tenants - len(bench.apis)))]
    apis = bench.tenant_apis()[: args.tenants]
    apis += await asyncio.gather(*(add_tenant(bench, name) for name in extra))
    queue = f"{UNPOLLED}{bench.run_id}"

    async def service(i: int) -> None:
        await apis[i % len(apis)].start(TEMPLATE, PARAMS)

    async def raw(i: int) -> None:
        await bench.temporal.start_workflow(
            "BenchUnpolled",
            id=f"bench-{uuid.uuid4().hex}",
            task_queue=queue,
            execution_timeout=timedelta(minutes=1),
        )

    half = args.starts // 2
    service_ms: list[float] = []
    raw_ms: list[float] = []
    seconds = {"service": 0.0, "raw": 0.0}
    cpu = {"service": CpuMeter(), "raw": CpuMeter()}
    for size in (half, args.starts - half):
        for side, call, out in (("service", service, service_ms), ("raw", raw, raw_ms)):
            t0 = time.perf_counter()
            with cpu[side]:
                out += await pool(size, args.clients, call)
            seconds[side] += time.perf_counter() - t0
    for api in apis[len(bench.apis) :]:
        await api.close()
    rate = row(
        "starts/s",
        args.starts / seconds["service"],
        args.starts / seconds["raw"],
        ">= 100/s",
    )
    return {
        "title": (
            f"start under load: {args.starts} starts from {args.clients} clients "
            f"over {len(apis)} tenants, in two alternating halves"
        ),
        "rows": [
            rate,
            *latency_rows("start", service_ms, raw_ms, GOALS),
            *cpu_rows(cpu["service"], cpu["raw"]),
        ],
    }
