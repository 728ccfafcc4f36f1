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
import os
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

import httpx
import psutil
import pytest
import structlog
import structlog.testing
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from app.plugins.api import plugin_task_queue
from app.settings import Settings
from tests.api.test_execution_flow import wait_terminal
from tests.conftest import TenantKeys
from tests.plugins.probe import PluginProbe, Probe
from tests.support import GraphQLClient, free_port
from tests.workers.test_control import start
from tests.workers.test_template_graph import publish
from tests.workers.worker_process import WFS, pollers, worker_env
from workers.plugin_worker import build_plugin_worker, describe_plugin, warm_pool

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

    async def start(
        self, step: str, input: dict[str, Any], attempts: int = 1, queue: str | None = None
    ) -> WorkflowHandle:
        return await self.client.start_workflow(
            PluginProbe.run,
            Probe(f"example.{step}", queue or self.plugin_queue, input, attempts),
            id=f"probe-{uuid.uuid4().hex}",
            task_queue=self.probe_queue,
        )

    async def call(
        self, step: str, input: dict[str, Any], attempts: int = 1, queue: str | None = None
    ) -> dict[str, Any]:
        return await (await self.start(step, input, attempts, queue)).result()


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
    pool = warm_pool(manifest, limited)  # calls take processes started ahead of them
    assert pool.size == 2
    plugin_worker = build_plugin_worker(
        client, manifest, limited, task_queue=plugin_queue, pool=pool
    )
    probe_worker = Worker(
        client,
        task_queue=probe_queue,
        workflows=[PluginProbe],
        workflow_runner=UnsandboxedWorkflowRunner(),
    )
    pool.fill()
    try:
        async with plugin_worker, probe_worker:
            yield Rig(client, plugin_queue, probe_queue)
    finally:
        await pool.close()


def counted(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_each_failure_is_a_clear_temporal_error_and_the_worker_serves_on(rig: Rig) -> None:
    kills_before = counted("wfs_plugin_limit_kills_total", plugin="example", limit="cpu")
    with structlog.testing.capture_logs() as logs:
        results = await asyncio.gather(
            rig.call("misbehave", {"mode": "crash"}, attempts=2),
            rig.call("misbehave", {"mode": "loop"}),
            rig.call("misbehave", {"mode": "memory"}),
            rig.call("misbehave", {"mode": "network", "port": 5432}, attempts=3),
            rig.call("misbehave", {"mode": "nonsense"}, attempts=3),
            rig.call("misbehave", {"mode": "raise"}, attempts=2),
        )
    crash, loop, memory, network, invalid, raised = results
    # What a plugin says (it may hold tenants' data) is logged as a length and a hash (its
    # text only at debug, which this logging configuration drops).
    failed = [e for e in logs if e["event"] == "plugin.call_failed" and e["outcome"] == "raised"]
    assert failed and all(e["log_level"] == "warning" for e in failed), logs
    assert "told to fail" not in repr(failed)
    assert all(e["error_chars"] > 0 and len(e["error_sha256"]) == 16 for e in failed), failed
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
    assert counted("wfs_plugin_calls_total", plugin="example", step="word_stats", outcome="ok") >= 1


def busy_sandboxes() -> list[psutil.Process]:
    """Sandbox processes of this test process running a call: those have started their
    lifeline thread (warm ones waiting for a call have one thread)."""
    me = psutil.Process()
    found = []
    for p in me.children(recursive=True):
        try:
            if (
                "app.plugins.sandbox_child" in " ".join(p.cmdline() or [])
                and p.status() != psutil.STATUS_ZOMBIE
                and p.num_threads() > 1
            ):
                found.append(p)
        except psutil.NoSuchProcess:
            continue
    return found


async def test_main_worker_completes_while_a_plugin_call_hangs_and_cancel_kills_it(
    rig: Rig, client: GraphQLClient, tenant: TenantKeys, sessions: Any
) -> None:
    hanging = await rig.start("misbehave", {"mode": "sleep", "seconds": 600})
    async with asyncio.timeout(60):  # its sandbox process is up and sleeping
        while not busy_sandboxes():
            await asyncio.sleep(0.1)
    name = await publish(sessions, tenant, BUILTIN)
    execution = await wait_terminal(client, await start(client, name))
    assert execution["status"] == "COMPLETED", execution
    assert busy_sandboxes(), "the plugin call ended before the built-in execution did"

    await hanging.cancel()  # cancels the activity: its sandbox process is killed
    async with asyncio.timeout(60):
        while busy_sandboxes():
            await asyncio.sleep(0.1)


def sandbox_children_of(pid: int) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["ppid", "cmdline", "status"]):
        cmdline = " ".join(p.info["cmdline"] or [])
        if "app.plugins.sandbox_child" in cmdline and p.info["status"] != psutil.STATUS_ZOMBIE:
            if p.info["ppid"] == pid:
                found.append(p)
    return found


def start_plugin_worker(
    env: dict[str, str], port: int, cwd: Path, log: IO[bytes]
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(WFS), "worker", "--plugin", "example", "--metrics-port", str(port)],
        cwd=cwd,  # no stray .env is read from the checkout
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


async def test_wfs_worker_plugin_scrubs_env_serves_metrics_and_orphans_die(
    rig: Rig, settings: Settings, tmp_path: Path
) -> None:
    """`wfs worker --plugin example` as a process: the service's settings in its environment
    never reach the plugin, /metrics counts the calls by plugin, and when the worker is
    SIGKILLed its sandbox processes end too, the running call's and the warm ones (their
    stdin closes)."""
    port = free_port()
    env = worker_env(settings) | {
        "PLUGIN_LIMITS": '{"example": {"memory_mb": 160}}',
        "LOG_LEVEL": "warning",
    }
    assert "DATABASE_URL" in env and "OPENAI_API_KEY" in env
    log = (tmp_path / "plugin-worker.log").open("wb")
    proc = start_plugin_worker(env, port, tmp_path, log)
    queue = plugin_task_queue("example")
    hanging: WorkflowHandle | None = None
    try:
        async with asyncio.timeout(60):
            while not any(i.startswith(f"{proc.pid}@") for i in await pollers(rig.client, queue)):
                assert proc.poll() is None, (tmp_path / "plugin-worker.log").read_text()
                await asyncio.sleep(0.2)
        secrets = await rig.call("misbehave", {"mode": "secrets"}, queue=queue)
        env_seen = set(secrets["output"]["env"])
        assert not env_seen & {"DATABASE_URL", "REDIS_URL", "OPENAI_API_KEY", "TEMPORAL_ADDRESS"}
        assert (await rig.call("misbehave", {"mode": "exit"}, queue=queue))["type"] == (
            "PluginCrashed"
        )
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(metrics)
            for s in family.samples
        }
        by_step = (("plugin", "example"), ("step", "misbehave"))
        for outcome in ("ok", "exited"):
            key = tuple(sorted((*by_step, ("outcome", outcome))))
            assert samples.get(("wfs_plugin_calls_total", key)) == 1.0, outcome
        assert samples.get(("wfs_plugin_restarts_total", (("plugin", "example"),))) == 1.0

        hanging = await rig.start("misbehave", {"mode": "sleep", "seconds": 600}, queue=queue)
        async with asyncio.timeout(60):
            while not any(p.num_threads() > 1 for p in sandbox_children_of(proc.pid)):
                await asyncio.sleep(0.1)  # the call is running (its lifeline thread is up)
        orphans = sandbox_children_of(proc.pid)  # the running call and the warm ones
        assert len(orphans) > 1
        os.killpg(proc.pid, signal.SIGKILL)  # the worker's group: not its sandbox sessions
        proc.wait(10)
        gone, alive = await asyncio.to_thread(psutil.wait_procs, orphans, 30)
        assert not alive, f"sandbox processes outlived their worker: {alive}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()
        if hanging is not None:
            await hanging.terminate()
