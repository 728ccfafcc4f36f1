"""The plugin worker (workers/plugin_worker.py) on the real Temporal dev server: plugin steps
as activities on the plugin's queue, each misbehaviour a clear Temporal error (retryable or
not, per the step's retry policy), the worker serving on after each, and the main worker
completing a built-in execution while a plugin call hangs.

The probe workflow (tests/plugins/probe.py) calls the activity by name: until the template
plan routes `example.*` steps to `plugin-example` (the plugin registry's work), that is how a
template workflow would call it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psutil
import pytest
from prometheus_client import REGISTRY
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from app.settings import Settings
from tests.api.test_execution_flow import wait_terminal
from tests.conftest import TenantKeys
from tests.plugins.probe import PluginProbe, Probe
from tests.support import GraphQLClient
from tests.workers.test_control import start
from tests.workers.test_template_graph import publish
from workers.plugin_worker import build_plugin_worker, describe_plugin

BUILTIN = {
    "name": "builtin-beside-plugin",
    "title": "Built-in steps only",
    "parameters": {"type": "object"},
    "steps": [
        {"id": "a", "activity": "data.transform", "input": {"data": {"n": 1}, "ops": []}},
        {"id": "b", "activity": "data.transform", "needs": ["a"], "input": {"data": {}, "ops": []}},
    ],
}


class Rig:
    def __init__(self, client: Client, plugin_queue: str, probe_queue: str) -> None:
        self.client = client
        self.plugin_queue = plugin_queue
        self.probe_queue = probe_queue

    async def start(self, step: str, input: dict[str, Any], attempts: int = 1) -> WorkflowHandle:
        return await self.client.start_workflow(
            PluginProbe.run,
            Probe(f"example.{step}", self.plugin_queue, input, attempts),
            id=f"probe-{uuid.uuid4().hex}",
            task_queue=self.probe_queue,
        )

    async def call(self, step: str, input: dict[str, Any], attempts: int = 1) -> dict[str, Any]:
        return await (await self.start(step, input, attempts)).result()


@pytest.fixture(scope="module")
async def rig(settings: Settings) -> AsyncIterator[Rig]:
    """The example plugin's worker (its limits lowered, as an operator would) and a worker for
    the probe workflow, each on a queue of this module."""
    limited = settings.model_copy(
        update={"plugin_limits": {"example": {"cpu_seconds": 1, "memory_mb": 160}}}
    )
    assert settings.temporal_address
    client = await Client.connect(settings.temporal_address)
    manifest = await describe_plugin("example", limited)
    plugin_queue = f"test-plugin-{uuid.uuid4().hex[:8]}"
    probe_queue = f"test-probe-{uuid.uuid4().hex[:8]}"
    plugin_worker = build_plugin_worker(client, manifest, limited, task_queue=plugin_queue)
    probe_worker = Worker(
        client,
        task_queue=probe_queue,
        workflows=[PluginProbe],
        workflow_runner=UnsandboxedWorkflowRunner(),
    )
    async with plugin_worker, probe_worker:
        yield Rig(client, plugin_queue, probe_queue)


def counted(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_each_failure_is_a_clear_temporal_error_and_the_worker_serves_on(rig: Rig) -> None:
    kills_before = counted("wfs_plugin_limit_kills_total", plugin="example", limit="cpu")
    results = await asyncio.gather(
        rig.call("misbehave", {"mode": "crash"}, attempts=2),
        rig.call("misbehave", {"mode": "loop"}),
        rig.call("misbehave", {"mode": "memory"}),
        rig.call("misbehave", {"mode": "network", "port": 5432}, attempts=3),
        rig.call("misbehave", {"mode": "nonsense"}, attempts=3),
        rig.call("misbehave", {"mode": "raise"}, attempts=2),
    )
    crash, loop, memory, network, invalid, raised = results
    # Retryable: retried per the policy (2 attempts), then failed with the last reason.
    assert crash == {
        "error": "plugin step example.misbehave: plugin process crashed (signal 6, SIGABRT)",
        "type": "PluginCrashed",
        "non_retryable": False,
        "retry_state": "MAXIMUM_ATTEMPTS_REACHED",
    }
    assert raised["retry_state"] == "MAXIMUM_ATTEMPTS_REACHED", raised
    assert raised["error"].endswith("RuntimeError: the example plugin was told to fail")
    assert loop["error"] == "plugin step example.misbehave exceeded its CPU limit (1 s)", loop
    assert loop["type"] == "PluginLimitExceeded"
    assert memory["error"].endswith("exceeded its memory limit (160 MB)"), memory
    # Permanent: no retry however many attempts the policy allows.
    assert network["retry_state"] == "NON_RETRYABLE_FAILURE", network
    assert network["type"] == "PluginSandboxRefused"
    assert "127.0.0.1:5432 (not in its declared network)" in network["error"]
    assert invalid["retry_state"] == "NON_RETRYABLE_FAILURE", invalid
    assert invalid["type"] == "StepInputRefused"
    assert invalid["error"].startswith("invalid input for example.misbehave: $.mode:")

    # The same worker answers the next calls.
    stats = await rig.call("word_stats", {"text": "a b a", "top": 1})
    assert stats == {"output": {"words": 3, "distinct": 2, "top": [["a", 2]]}}
    assert counted("wfs_plugin_limit_kills_total", plugin="example", limit="cpu") > kills_before
    assert counted(
        "wfs_plugin_calls_total", plugin="example", step="word_stats", outcome="ok"
    ) >= 1


def sandbox_children() -> list[psutil.Process]:
    me = psutil.Process()
    return [
        p
        for p in me.children(recursive=True)
        if "app.plugins.sandbox_child" in " ".join(p.cmdline() or [])
        and p.status() != psutil.STATUS_ZOMBIE
    ]


async def test_main_worker_completes_while_a_plugin_call_hangs_and_cancel_kills_it(
    rig: Rig, client: GraphQLClient, tenant: TenantKeys, sessions: Any
) -> None:
    hanging = await rig.start("misbehave", {"mode": "sleep", "seconds": 600})
    async with asyncio.timeout(60):  # its sandbox process is up and sleeping
        while not sandbox_children():
            await asyncio.sleep(0.1)
    name = await publish(sessions, tenant, BUILTIN)
    execution = await wait_terminal(client, await start(client, name))
    assert execution["status"] == "COMPLETED", execution
    assert sandbox_children(), "the plugin call ended before the built-in execution did"

    await hanging.cancel()  # cancels the activity: its sandbox process is killed
    async with asyncio.timeout(60):
        while sandbox_children():
            await asyncio.sleep(0.1)
