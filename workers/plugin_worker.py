"""The worker of one plugin (`wfs worker --plugin NAME`): its steps as Temporal activities on
the plugin's own task queue, each call run in a sandbox process (app/plugins/sandbox.py).

This process never imports the plugin's code. At start it asks a sandbox process to describe
the plugin (app/plugins/manifest.py: the same description, and the same checks -
parse_manifest - the API and the other workers use), then registers one activity per step,
named `<plugin>.<step>`, taking the same `StepCall` as the built-in steps. A call:

1. validates the input against the step's input schema here (off the event loop when large):
   bad input fails the step permanently (StepInputRefused), before any plugin code runs;
2. runs the step in a fresh sandbox process with the plugin's limits (lowered by
   PLUGIN_LIMITS), heartbeating Temporal meanwhile (the plugin's own heartbeats are passed
   on; a step that declares `heartbeat_seconds` and stops beating is killed);
3. validates the output (the step's output schema, then the size and shape every step's
   output must have).

How each ending surfaces (docs/plugins-sandbox.md): timeout, CPU, memory, crash, exit and an
exception of the plugin are retryable `ApplicationError`s (the step's retry policy decides);
the fence's refusals and invalid input or output are not. Whatever the plugin does, this
process keeps serving: only the sandbox process dies.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any, NoReturn

import structlog
from jsonschema.protocols import Validator
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from app.executions.workflow_io import INPUT_REFUSED, StepCall
from app.jsonschemas import json_validator, schema_problems
from app.metrics import PLUGIN_CALL_SECONDS, PLUGIN_CALLS, PLUGIN_LIMIT_KILLS, PLUGIN_RESTARTS
from app.plugins.api import PluginLimits, PluginLoadError, plugin_task_queue
from app.plugins.checks import parse_manifest
from app.plugins.manifest import ManifestError, describe
from app.plugins.sandbox import (
    CallOutcome,
    SandboxSpec,
    WarmPool,
    effective_limits,
    refused_env,
    run_sandboxed,
)
from app.settings import Settings
from app.steps.base import validate_input
from workers.activities import STEP_OUTPUT_INVALID, check_step_output
from workers.health import HealthServer
from workers.heartbeat import Beats, beat_every, heartbeating
from workers.log_context import ActivityLogContext

log = structlog.get_logger(__name__)
DESCRIBE_TIMEOUT_SECONDS = 60.0
# Outcomes that are a limit stopping the call, by the limit's name in the metrics.
LIMIT_OF = {
    "timeout": "timeout",
    "silent": "heartbeat",
    "cpu": "cpu",
    "memory": "memory",
    "file_size": "file_size",
    "output": "output",
    "killed": "killed",
}
ABNORMAL = frozenset({*LIMIT_OF, "crashed", "exited"})
ERROR_TYPES = {
    "timeout": "PluginTimeout",
    "silent": "PluginTimeout",
    "crashed": "PluginCrashed",
    "exited": "PluginCrashed",
    "raised": "PluginError",
    "refused": "PluginSandboxRefused",
    "output": STEP_OUTPUT_INVALID,
}
NON_RETRYABLE = frozenset({"refused", "output"})
# Every `outcome` label of wfs_plugin_calls_total.
OUTCOMES = (
    "ok",
    "invalid_input",
    "invalid_output",
    "raised",
    "refused",
    *LIMIT_OF,
    "crashed",
    "exited",
)


@dataclass(frozen=True)
class StepManifest:
    name: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any] | None
    timeout_seconds: float
    heartbeat_seconds: float | None


@dataclass(frozen=True)
class PluginManifest:
    """What the plugin declared, as data, with the operator's limits applied."""

    name: str
    version: str
    steps: tuple[StepManifest, ...]
    spec: SandboxSpec


async def describe_plugin(
    name: str, settings: Settings, extra_paths: Sequence[str] = ()
) -> PluginManifest:
    """Ask a sandbox process what plugin `name` declares and check it as the API does;
    raises PluginLoadError naming every problem. (`extra_paths`: see manifest.describe.)"""
    override = settings.plugin_limits.get(name)
    try:
        declared = await describe(
            name, timeout=DESCRIBE_TIMEOUT_SECONDS, extra_paths=extra_paths, limits=override
        )
    except ManifestError as exc:
        raise PluginLoadError(f"plugin {name!r} could not be described: {exc}") from None
    _, problems = parse_manifest(name, declared)
    if problems:
        raise PluginLoadError(f"plugin {name!r} is refused: " + "; ".join(problems))
    limits = effective_limits(PluginLimits(**declared["limits"]), override)
    refused = refused_env(declared["env"], Settings.model_fields)
    if refused:
        log.warning("plugin.env_refused", plugin=name, names=refused)
    env = {n: os.environ[n] for n in declared["env"] if n not in refused and n in os.environ}
    spec = SandboxSpec(
        name,
        limits,
        network=tuple(declared["network"]),
        env=env,
        max_file_mb=settings.plugin_max_file_mb,
        max_output_bytes=settings.max_step_output_bytes,
    )
    steps = []
    for step in declared["steps"]:
        for schema in (step["input_schema"], step["output_schema"]):
            if schema is not None and (found := schema_problems(schema)):
                raise PluginLoadError(f"plugin {name!r}, step {step['name']}: {found}")
        timeout = step["timeout_seconds"] or limits.call_timeout_seconds
        if override and "call_timeout_seconds" in override:
            timeout = min(timeout, override["call_timeout_seconds"])
        steps.append(
            StepManifest(
                step["name"],
                step["input_schema"],
                step["output_schema"],
                timeout,
                step["heartbeat_seconds"],
            )
        )
    return PluginManifest(name, str(declared["version"]), tuple(steps), spec)


class PluginActivities:
    """One activity per plugin step, each running its calls in the sandbox."""

    def __init__(
        self, manifest: PluginManifest, settings: Settings, pool: WarmPool | None = None
    ) -> None:
        self.manifest = manifest
        self.settings = settings
        self.pool = pool
        self.log = log.bind(plugin=manifest.name, plugin_version=manifest.version)

    def all(self) -> list[Callable[..., Awaitable[Any]]]:
        return [self._activity(step) for step in self.manifest.steps]

    def _activity(self, step: StepManifest) -> Callable[[StepCall], Awaitable[Any]]:
        name = f"{self.manifest.name}.{step.name}"
        inputs = json_validator(step.input_schema, formats=True)
        outputs = json_validator(step.output_schema) if step.output_schema else None

        async def execute(call: StepCall) -> Any:
            return await self._call(name, step, inputs, outputs, call)

        execute.__name__ = execute.__qualname__ = name.replace(".", "_")
        return activity.defn(name=name)(execute)

    async def _call(
        self,
        name: str,
        step: StepManifest,
        inputs: Validator,
        outputs: Validator | None,
        call: StepCall,
    ) -> Any:
        """The step's output; raises its ApplicationError. Each call is counted once."""
        info = activity.info()
        problems = await validate_input(inputs, call.input)
        if problems:
            self._count(step, "invalid_input")
            raise ApplicationError(
                f"invalid input for {name}: " + "; ".join(problems),
                type=INPUT_REFUSED,
                non_retryable=True,
            )
        beats = Beats()
        request = {
            "op": "run",
            "step": step.name,
            "input": call.input,
            "ctx": {
                "tenant_id": call.tenant_id,
                "execution_id": call.execution_id,
                "step_id": call.step_id if call.index is None else f"{call.step_id}[{call.index}]",
                "attempt": info.attempt,
            },
        }
        run = run_sandboxed(
            self.manifest.spec,
            request,
            step.timeout_seconds,
            beats,
            step.heartbeat_seconds,
            self.pool,
        )
        outcome = await heartbeating(run, beat_every(info), beats)
        PLUGIN_CALL_SECONDS.labels(self.manifest.name, step.name).observe(outcome.seconds)
        if not outcome.ok:
            self._failed(name, step, outcome, info.attempt)
        try:
            if outputs is not None and (found := await validate_input(outputs, outcome.output)):
                raise ApplicationError(
                    f"{name} produced output that does not match its output schema: "
                    + "; ".join(found),
                    type=STEP_OUTPUT_INVALID,
                    non_retryable=True,
                )
            check_step_output(name, outcome.output, self.settings)
        except ApplicationError:
            self._count(step, "invalid_output")
            raise
        self._count(step, "ok")
        return outcome.output

    def _failed(
        self, name: str, step: StepManifest, outcome: CallOutcome, attempt: int
    ) -> NoReturn:
        plugin = self.manifest.name
        limit = LIMIT_OF.get(outcome.kind)
        if limit is not None:
            PLUGIN_LIMIT_KILLS.labels(plugin, limit).inc()
        if outcome.kind in ABNORMAL:
            PLUGIN_RESTARTS.labels(plugin).inc()
        self._count(step, outcome.kind)
        message = f"plugin step {name} {outcome.message}"
        if outcome.kind in ("crashed", "exited", "killed"):
            message = f"plugin step {name}: {outcome.message}"
        elif outcome.kind in ("raised", "refused"):
            message = f"plugin step {name} failed: {outcome.message}"
        # The message and what the plugin printed may hold tenants' data: their length and a
        # hash (to match reports of the same failure) here, the text only at debug.
        tail = outcome.log_tail[-1000:]
        self.log.warning(
            "plugin.call_failed",
            step=step.name,
            outcome=outcome.kind,
            attempt=attempt,
            error_chars=len(outcome.message),
            error_sha256=_digest(outcome.message),
            output_tail_chars=len(tail),
            output_tail_sha256=_digest(tail) if tail else None,
        )
        self.log.debug(
            "plugin.call_failed_text",
            step=step.name,
            outcome=outcome.kind,
            attempt=attempt,
            error=message,
            output_tail=tail or None,
        )
        raise ApplicationError(
            message,
            type=ERROR_TYPES.get(outcome.kind, "PluginLimitExceeded"),
            non_retryable=outcome.kind in NON_RETRYABLE,
        )

    def _count(self, step: StepManifest, outcome: str) -> None:
        PLUGIN_CALLS.labels(self.manifest.name, step.name, outcome).inc()


def _digest(text: str) -> str:
    """A short SHA-256 of `text` (16 hex digits): enough to tell failures apart in logs."""
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:16]


def warm_pool(manifest: PluginManifest, settings: Settings) -> WarmPool:
    """PLUGIN_WARM_PROCESSES sandbox processes kept started (at most one per concurrent call);
    fill() it once the event loop runs, close() it on the way out."""
    size = min(settings.plugin_warm_processes, settings.plugin_max_concurrent_calls)
    return WarmPool(manifest.spec, size)


def build_plugin_worker(
    client: Client,
    manifest: PluginManifest,
    settings: Settings,
    task_queue: str | None = None,
    pool: WarmPool | None = None,
) -> Worker:
    """Only this plugin's activities, on its queue; at most PLUGIN_MAX_CONCURRENT_CALLS
    sandbox processes at once."""
    return Worker(
        client,
        task_queue=task_queue or plugin_task_queue(manifest.name),
        activities=PluginActivities(manifest, settings, pool).all(),
        max_concurrent_activities=settings.plugin_max_concurrent_calls,
        graceful_shutdown_timeout=timedelta(seconds=settings.worker_graceful_shutdown_seconds),
        interceptors=[ActivityLogContext()],
    )


async def serve_plugin(
    client: Client, manifest: PluginManifest, settings: Settings, stop: asyncio.Event
) -> None:
    """Serve the described plugin until `stop`, with its warm pool."""
    pool = warm_pool(manifest, settings)
    worker = build_plugin_worker(client, manifest, settings, pool=pool)
    bound = log.bind(plugin=manifest.name, plugin_version=manifest.version)
    pool.fill()
    port = settings.worker_health_port
    health = HealthServer(worker, stop, "0.0.0.0", port) if port else None
    try:
        if health is not None:
            await health.start()
        async with worker:
            bound.info(
                "plugin_worker.started",
                task_queue=worker.task_queue,
                steps=[s.name for s in manifest.steps],
                limits=asdict(manifest.spec.limits),
                network=list(manifest.spec.network),
                warm_processes=pool.size,
            )
            await stop.wait()
    finally:
        if health is not None:
            await health.close()
        await pool.close()
    bound.info("plugin_worker.stopped")
