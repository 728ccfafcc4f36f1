"""Loading plugins into a process: read each manifest (app/plugins/manifest.py, a child
process), check it here, and register what passes: steps in the step registry
(app.steps.PLUGIN_ACTIVITIES, on the plugin's queue with its timeout), AI tasks and providers
in the AI layer (app/plugins/ai.py). Templates are published by `wfs seed`/`wfs dev`
(app/seed.py) like the standard ones.

Every check is the parent's: a manifest is what a plugin says about itself. A plugin with any
problem is refused whole, with every problem listed (`wfs plugins check` prints them; the
`plugins` query and the process log say it was refused); the others load.

`activate(settings)` loads once per process (plugins change only when installed, and a process
restarts then); `active()` is what it loaded.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal
from urllib.parse import urlsplit

import structlog
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from app.errors import ValidationFailed
from app.jsonschemas import instance_problems, json_validator, schema_problems
from app.plugins.ai import register_ai, unregister_ai
from app.plugins.api import (
    NAME_PATTERN,
    PLUGIN_API_VERSION,
    installed_entry_points,
    plugin_task_queue,
)
from app.plugins.manifest import ManifestError, read_manifest
from app.settings import Settings
from app.steps import PLUGIN_ACTIVITIES, STEP_ACTIVITIES, StepActivity
from app.steps.base import LIVENESS_HEARTBEAT_SECONDS
from app.templates.schemas import validate_spec
from app.templates.standard import STANDARD_TEMPLATES
from app.tenants.plugin_access import PluginAccess

log = structlog.get_logger(__name__)

ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,99}$")
HOST_PORT = re.compile(r"^(?P<host>[A-Za-z0-9.\-]{1,253}|\[[0-9A-Fa-f:]+\]):(?P<port>\d{1,5})$")
# Names a plugin may not take: the built-in step families (`data.transform` and `data.x` would
# be one namespace), the AI step prefix and the built-in providers.
RESERVED_NAMES = frozenset(
    {name.split(".")[0] for name in STEP_ACTIVITIES} | {"ai", "openai", "anthropic", "baseline"}
)
# Added to a plugin step's timeout for its Temporal activity: the plugin worker stops a call
# at the step's timeout and reports why ("timed out after N s"); the activity's own
# start-to-close timeout, a little later, only catches a worker that died meanwhile.
CALL_GRACE_SECONDS = 5.0
MAX_TEMPLATES = 50
MAX_ITEMS = 100  # steps, AI tasks, providers, models, network entries, env names (each)


# --- the manifest's shape --------------------------------------------------------------------


class _Declared(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class StepDecl(_Declared):
    name: str
    description: str = Field(max_length=2000)
    input_schema: dict[str, Any]
    output_schema: dict[str, Any] | None = None
    timeout_seconds: float | None = Field(None, gt=0, le=86400)
    heartbeat_seconds: float | None = Field(None, gt=0, le=3600)


class AiTaskDecl(_Declared):
    name: str
    description: str = Field(max_length=2000)
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    instructions: str = Field(min_length=1, max_length=20_000)
    baseline_step: str | None = None
    baseline_output: dict[str, Any] | None = None
    max_output_tokens: int = Field(512, ge=1, le=32_000)


class ModelDecl(_Declared):
    name: str = Field(min_length=1, max_length=200)
    input_usd_per_million: str
    output_usd_per_million: str


class ProviderDecl(_Declared):
    name: str
    base_url: str = Field(max_length=2000)
    api_key_env: str
    models: list[ModelDecl] = Field(default_factory=list, max_length=MAX_ITEMS)
    kind: Literal["openai-compatible"] = "openai-compatible"
    base_url_env: str | None = None


class LimitsDecl(_Declared):
    cpu_seconds: int = Field(ge=1, le=3600)
    memory_mb: int = Field(ge=16, le=65536)
    open_files: int = Field(ge=8, le=65536)
    processes: int = Field(ge=0, le=1024)
    call_timeout_seconds: float = Field(gt=0, le=86400)


class Manifest(_Declared):
    """What a plugin declares, as read from its manifest."""

    name: str
    version: str = Field(min_length=1, max_length=100)
    api_version: int
    description: str = Field("", max_length=2000)
    steps: list[StepDecl] = Field(default_factory=list, max_length=MAX_ITEMS)
    ai_tasks: list[AiTaskDecl] = Field(default_factory=list, max_length=MAX_ITEMS)
    providers: list[ProviderDecl] = Field(default_factory=list, max_length=MAX_ITEMS)
    templates: list[dict[str, Any]] = Field(default_factory=list, max_length=MAX_TEMPLATES)
    network: list[str] = Field(default_factory=list, max_length=MAX_ITEMS)
    env: list[str] = Field(default_factory=list, max_length=MAX_ITEMS)
    limits: LimitsDecl

    @property
    def queue(self) -> str:
        return plugin_task_queue(self.name)

    def qualified(self, local: str) -> str:
        return f"{self.name}.{local}"

    def step_timeout(self, step: StepDecl) -> float:
        """A call's wall time: the step's own, else the plugin's call_timeout_seconds."""
        return step.timeout_seconds or self.limits.call_timeout_seconds


# --- the checks ------------------------------------------------------------------------------


def _schema_problems(where: str, schema: dict[str, Any]) -> list[str]:
    return [f"{where}: {p['message']}" for p in schema_problems(schema)]


def _name_problems(where: str, names: list[str]) -> list[str]:
    problems = [
        f"{where} {name!r}: names are lower case letters, digits and _, starting with a letter"
        " (at most 40)"
        for name in names
        if not NAME_PATTERN.match(name)
    ]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            problems.append(f"{where} {name!r} is declared twice")
        seen.add(name)
    return problems


def _step_problems(m: Manifest) -> list[str]:
    problems = _name_problems("step", [s.name for s in m.steps])
    for step in m.steps:
        where = f"step {m.qualified(step.name)}"
        problems += _schema_problems(f"{where}: input_schema", step.input_schema)
        if step.output_schema is not None:
            problems += _schema_problems(f"{where}: output_schema", step.output_schema)
    return problems


def _ai_task_problems(m: Manifest) -> list[str]:
    problems = _name_problems("AI task", [t.name for t in m.ai_tasks])
    for task in m.ai_tasks:
        where = f"AI task {m.qualified(task.name)}"
        problems += _schema_problems(f"{where}: input_schema", task.input_schema)
        output = _schema_problems(f"{where}: output_schema", task.output_schema)
        problems += output
        if task.baseline_step is not None:
            problems.append(
                f"{where}: baseline_step is not supported yet; give baseline_output, the "
                "answer used whenever AI is off or fails"
            )
        elif task.baseline_output is None:
            problems.append(f"{where}: give baseline_output (the answer without AI)")
        elif not output:
            validator = json_validator(task.output_schema)
            problems += [
                f"{where}: baseline_output{p['path'][1:]}: {p['message']}"
                for p in instance_problems(validator, task.baseline_output)
            ]
    return problems


def _price_problem(where: str, value: str) -> str | None:
    try:
        price = Decimal(value)
    except (InvalidOperation, ValueError):
        return f"{where}: {value!r} is not a number"
    return None if price.is_finite() and price >= 0 else f"{where}: must be a number >= 0"


def _provider_problems(m: Manifest) -> list[str]:
    problems = _name_problems("provider", [p.name for p in m.providers])
    for provider in m.providers:
        where = f"provider {m.qualified(provider.name)}"
        url = urlsplit(provider.base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            problems.append(f"{where}: base_url must be an http(s) URL, not {provider.base_url!r}")
        if not ENV_NAME.match(provider.api_key_env):
            problems.append(f"{where}: api_key_env {provider.api_key_env!r} is not a variable name")
        if provider.base_url_env is not None and not ENV_NAME.match(provider.base_url_env):
            problems.append(
                f"{where}: base_url_env {provider.base_url_env!r} is not a variable name"
            )
        for variable in (provider.api_key_env, provider.base_url_env):
            if variable and variable.lower() in Settings.model_fields:
                # OPENAI_API_KEY would send the service's key to the plugin's endpoint.
                problems.append(
                    f"{where}: {variable} is a setting of the service, not the plugin's"
                )
        if not provider.models:
            problems.append(f"{where}: declare at least one model with its prices")
        for model in provider.models:
            for side in ("input_usd_per_million", "output_usd_per_million"):
                problem = _price_problem(f"{where}: {model.name}.{side}", getattr(model, side))
                if problem:
                    problems.append(problem)
    return problems


def _declared_access_problems(m: Manifest) -> list[str]:
    problems = []
    for entry in m.network:
        match = HOST_PORT.match(entry)
        if match is None or not 1 <= int(match["port"]) <= 65535:
            problems.append(f"network entry {entry!r}: expected host:port (port 1-65535)")
    secrets = {name.upper() for name in Settings.model_fields}
    for name in m.env:
        if not ENV_NAME.match(name):
            problems.append(f"env {name!r}: not an environment variable name")
        elif name in secrets:
            problems.append(f"env {name!r}: a setting of the service; a plugin never gets it")
    return problems


def manifest_problems(m: Manifest) -> list[str]:
    """Every problem of one manifest on its own (templates and conflicts are checked once
    every manifest is read: `load`)."""
    problems: list[str] = []
    if m.api_version != PLUGIN_API_VERSION:
        problems.append(
            f"built for plugin API version {m.api_version}; this service speaks version "
            f"{PLUGIN_API_VERSION}"
        )
    if not NAME_PATTERN.match(m.name):
        problems.append(
            f"plugin name {m.name!r}: lower case letters, digits and _, starting with a letter"
        )
    elif m.name in RESERVED_NAMES:
        problems.append(f"plugin name {m.name!r} is taken by the service's own steps/providers")
    return (
        problems
        + _step_problems(m)
        + _ai_task_problems(m)
        + _provider_problems(m)
        + _declared_access_problems(m)
    )


def parse_manifest(name: str, data: dict[str, Any]) -> tuple[Manifest | None, list[str]]:
    """The manifest and its own problems; (None, problems) when its shape is wrong."""
    try:
        manifest = Manifest.model_validate(data)
    except PydanticValidationError as exc:
        return None, [
            f"{'.'.join(str(p) for p in e['loc']) or 'manifest'}: {e['msg']}"
            for e in exc.errors()[:20]
        ]
    problems = manifest_problems(manifest)
    if manifest.name != name:
        problems.insert(0, f"declares the name {manifest.name!r} under the entry point {name!r}")
    return manifest, problems


def template_problems(
    m: Manifest, taken: dict[str, str], settings: Settings | None = None
) -> list[str]:
    """Its templates, validated like a tenant's (with this plugin's steps known), and their
    names against `taken` ({template name: who has it}), which this adds them to."""
    problems = []
    own = PluginAccess(default=False, switches={m.name: True})
    for i, spec in enumerate(m.templates):
        label = f"template {spec.get('name', i)!r}"
        try:
            validate_spec(spec, settings, plugins=own)
        except ValidationFailed as exc:
            details = "; ".join(f"{d.get('path', '$')}: {d['message']}" for d in exc.details[:10])
            problems.append(f"{label}: {details or exc}")
            continue
        name = spec["name"]
        if name in taken:
            problems.append(f"{label}: the name is taken by {taken[name]}")
        else:
            taken[name] = f"the plugin {m.name!r}"
    return problems


# --- the registry ----------------------------------------------------------------------------


@dataclass
class PluginRegistry:
    """The plugins a process loaded (`loaded`), refused (`refused`: name -> every problem)
    and found installed."""

    installed: list[str] = field(default_factory=list)
    loaded: dict[str, Manifest] = field(default_factory=dict)
    refused: dict[str, list[str]] = field(default_factory=dict)
    # What each loaded plugin registered, to take it back (tests, a refused template).
    registered_steps: dict[str, list[str]] = field(default_factory=dict)

    def templates(self) -> list[dict[str, Any]]:
        return [spec for m in self.loaded.values() for spec in m.templates]


Reader = Callable[[str], dict[str, Any]]


def load(
    names: Sequence[str],
    *,
    installed: Sequence[str] | None = None,
    reader: Reader | None = None,
    settings: Settings | None = None,
) -> PluginRegistry:
    """Read and check the manifests of `names` and register the plugins that pass (their
    steps into the step registry, their AI tasks and providers into the AI layer). `reader`
    reads one manifest (default: read_manifest in a child process)."""
    timeout = settings.plugin_manifest_timeout_seconds if settings else 20.0
    read: Reader = reader or (lambda name: read_manifest(name, timeout=timeout))
    found = sorted(installed_entry_points()) if installed is None else sorted(installed)
    registry = PluginRegistry(installed=found)
    candidates: list[Manifest] = []
    for name in names:
        if name not in found:
            registry.refused[name] = [f"no installed plugin named {name!r}"]
    present = [name for name in names if name in found]
    # One child process per plugin, read side by side: start-up waits for the slowest only.
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(present)))) as pool:
        answers = list(pool.map(lambda name: _read(read, name), present))
    for name, data in zip(present, answers, strict=True):
        if isinstance(data, ManifestError):
            registry.refused[name] = [str(data)]
            continue
        manifest, problems = parse_manifest(name, data)
        if manifest is None or problems:
            registry.refused[name] = problems
        else:
            candidates.append(manifest)
    # Steps and AI tasks first (a plugin's templates use them), then the templates, which
    # may refuse a plugin: then what it registered is taken back.
    for manifest in candidates:
        _register_steps(registry, manifest)
        register_ai(manifest)
    taken = {spec["name"]: "a standard template" for spec in STANDARD_TEMPLATES}
    for manifest in candidates:
        problems = template_problems(manifest, taken, settings)
        if problems:
            _unregister_steps(registry, manifest.name)
            unregister_ai(manifest)
            registry.refused[manifest.name] = problems
            continue
        registry.loaded[manifest.name] = manifest
    for name, problems in registry.refused.items():
        log.error("plugin.refused", plugin=name, problems=problems)
    for manifest in registry.loaded.values():
        log.info("plugin.loaded", plugin=manifest.name, version=manifest.version)
    return registry


def _read(read: Reader, name: str) -> dict[str, Any] | ManifestError:
    try:
        return read(name)
    except ManifestError as exc:
        return exc


def _register_steps(registry: PluginRegistry, m: Manifest) -> None:
    names = []
    for step in m.steps:
        name = m.qualified(step.name)
        PLUGIN_ACTIVITIES[name] = StepActivity(
            name=name,
            description=step.description,
            input_schema=step.input_schema,
            run=None,  # served by the plugin's own worker, never in this process
            heartbeat_seconds=step.heartbeat_seconds or LIVENESS_HEARTBEAT_SECONDS,
            plugin=m.name,
            task_queue=m.queue,
            timeout_seconds=m.step_timeout(step) + CALL_GRACE_SECONDS,
        )
        names.append(name)
    for task in m.ai_tasks:  # `ai.<plugin>.<task>`: a template step, run on the AI queue
        name = f"ai.{m.qualified(task.name)}"
        PLUGIN_ACTIVITIES[name] = StepActivity(
            name=name,
            description=f"AI ({m.name}): {task.description} (baseline without AI)",
            input_schema=task.input_schema,
            run=None,
            plugin=m.name,
        )
        names.append(name)
    registry.registered_steps[m.name] = names


def _unregister_steps(registry: PluginRegistry, plugin: str) -> None:
    for name in registry.registered_steps.pop(plugin, []):
        PLUGIN_ACTIVITIES.pop(name, None)


def unload(registry: PluginRegistry) -> None:
    """Take back everything `registry` registered (tests load throwaway plugins)."""
    for name in list(registry.registered_steps):
        _unregister_steps(registry, name)
    for manifest in registry.loaded.values():
        unregister_ai(manifest)
    registry.loaded.clear()


_ACTIVE: PluginRegistry | None = None
_LOCK = threading.Lock()


def activate(settings: Settings) -> PluginRegistry:
    """Load the plugins PLUGINS_ENABLED names, once per process; later calls return the same
    registry."""
    global _ACTIVE
    with _LOCK:
        if _ACTIVE is None:
            installed = sorted(installed_entry_points())
            _ACTIVE = load(
                settings.enabled_plugins(installed), installed=installed, settings=settings
            )
        return _ACTIVE


def active() -> PluginRegistry:
    """What `activate` loaded (an empty registry before it ran)."""
    return _ACTIVE or PluginRegistry()
