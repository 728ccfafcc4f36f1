"""Loading plugins into a process: read each manifest (app/plugins/manifest.py, a child
process), check it here, and register what passes: steps in the step registry
(app.steps.PLUGIN_ACTIVITIES, on the plugin's queue with its timeout), AI tasks and providers
in the AI layer (app/plugins/ai.py). Templates are published by `wfs seed`/`wfs dev`
(app/seed.py) like the standard ones.

Every check is the parent's (app/plugins/checks.py): a manifest is what a plugin says about
itself. A plugin with any problem is refused whole, with every problem listed (`wfs plugins
check` prints them; the `plugins` query and the process log say it was refused); the others
load.

`activate(settings)` loads once per process (plugins change only when installed, and a process
restarts then); `active()` is what it loaded.

`wfs dev` reads the manifests once, in its own process, and hands what it read
(`PluginRegistry.read`) to its role processes, which `use_read` it instead of starting a
sandbox process each for the same answer (four sandboxes importing the plugin at the busiest
second of the start). A role still checks what it was handed, with the same checks as any
other reader: nothing it runs is unchecked, and a refusal reads the same everywhere. A process
that was handed nothing (`wfs api`, `wfs worker`) reads its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import structlog

from app.plugins.ai import register_ai, unregister_ai
from app.plugins.api import (
    installed_entry_points,
)
from app.plugins.checks import Manifest, parse_manifest, template_problems
from app.plugins.manifest import ManifestError, read_manifest
from app.settings import Settings
from app.steps import PLUGIN_ACTIVITIES, StepActivity
from app.steps.base import LIVENESS_HEARTBEAT_SECONDS
from app.templates.standard import STANDARD_TEMPLATES

log = structlog.get_logger(__name__)

# Added to a plugin step's timeout for its Temporal activity: the plugin worker stops a call
# at the step's timeout and reports why ("timed out after N s"); the activity's own
# start-to-close timeout, a little later, only catches a worker that died meanwhile.
CALL_GRACE_SECONDS = 5.0


@dataclass
class PluginRegistry:
    """The plugins a process loaded (`loaded`), refused (`refused`: name -> every problem)
    and found installed."""

    installed: list[str] = field(default_factory=list)
    loaded: dict[str, Manifest] = field(default_factory=dict)
    refused: dict[str, list[str]] = field(default_factory=dict)
    # What each loaded plugin registered, to take it back (tests, a refused template).
    registered_steps: dict[str, list[str]] = field(default_factory=dict)
    # What was read of each manifest, before any check: the data, or why it could not be
    # read (ManifestError's message). `wfs dev` hands it to its role processes (`use_read`).
    read: dict[str, dict[str, Any] | str] = field(default_factory=dict)

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
        registry.read[name] = str(data) if isinstance(data, ManifestError) else data
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
_HANDED: dict[str, dict[str, Any] | str] = {}  # use_read: read by another process
_LOCK = threading.Lock()


def use_read(read: dict[str, dict[str, Any] | str]) -> None:
    """Take manifests another process read (`PluginRegistry.read`, handed over by `wfs dev`)
    instead of reading them again; `activate` still checks them. Before `activate`."""
    _HANDED.clear()
    _HANDED.update(read)


def handed_or_read(timeout: float) -> Reader:
    """The reader `activate` uses: a manifest handed over (`use_read`) as it was read there (a
    read that failed fails the same way), else one read here in a sandbox process."""

    def read(name: str) -> dict[str, Any]:
        handed = _HANDED.get(name)
        if handed is None:  # not handed over (or not read there): read it here
            return read_manifest(name, timeout=timeout)
        if isinstance(handed, str):
            raise ManifestError(handed)
        return handed

    return read


def activate(settings: Settings) -> PluginRegistry:
    """Load the plugins PLUGINS_ENABLED names, once per process; later calls return the same
    registry."""
    global _ACTIVE
    with _LOCK:
        if _ACTIVE is None:
            installed = sorted(installed_entry_points())
            _ACTIVE = load(
                settings.enabled_plugins(installed),
                installed=installed,
                reader=handed_or_read(settings.plugin_manifest_timeout_seconds),
                settings=settings,
            )
        return _ACTIVE


def active() -> PluginRegistry:
    """What `activate` loaded (an empty registry before it ran)."""
    return _ACTIVE or PluginRegistry()
