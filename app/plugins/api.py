"""The plugin contract: what a plugin declares, and the one function that finds a plugin.

A plugin author writes (docs/plugins.md has the whole guide)::

    from app.plugins.api import Plugin, PluginStep

    async def lookup(input, ctx):
        return {"score": 3}

    plugin = Plugin(
        name="acme", version="1.2.0",
        steps=[PluginStep("crm_lookup", "Looks a customer up", INPUT_SCHEMA, lookup)],
        network=["crm.acme.example:443"],
    )

and declares it in its pyproject: `[project.entry-points."wfs.plugins"] acme = "acme_wfs:plugin"`.

Every name a plugin adds is namespaced by the plugin's name: the step above is `acme.crm_lookup`
in templates. A plugin's code runs only in its own sandboxed worker process (`wfs worker --plugin
acme`, task queue `plugin_task_queue("acme")`); the API and the main workers use what it declares
as data (`Plugin.manifest()`), never its functions.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Protocol

# In a leaf module for app.settings (PLUGIN_LIMITS), which app.plugins may not import back.
from app.plugin_limits import PluginLimits as PluginLimits

# The contract's version. A plugin built for another major version is refused at load.
PLUGIN_API_VERSION = 1
ENTRY_POINT_GROUP = "wfs.plugins"
# Plugin and local names: lower case, digits and underscores, starting with a letter.
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
TASK_QUEUE_PREFIX = "plugin-"


def plugin_task_queue(plugin_name: str) -> str:
    """The Temporal task queue a plugin's activities run on (its own worker polls it)."""
    return f"{TASK_QUEUE_PREFIX}{plugin_name}"


class PluginContext(Protocol):
    """What a plugin step gets besides its input. Deliberately small: no database, no service
    settings, no secrets but the environment variables the plugin declared."""

    tenant_id: str
    execution_id: str
    step_id: str
    attempt: int
    temp_dir: str  # private to this call, removed after it

    def heartbeat(self, *details: Any) -> None:
        """Report progress; a step that runs longer than its heartbeat interval must call it."""


PluginRun = Callable[[dict[str, Any], PluginContext], Awaitable[Any] | Any]


@dataclass(frozen=True)
class PluginStep:
    """A step activity. `run(input, ctx)` gets the input after it matched `input_schema` and
    returns a JSON value that must match `output_schema` (when given)."""

    name: str  # local: the template uses "<plugin>.<name>"
    description: str
    input_schema: dict[str, Any]
    run: PluginRun
    output_schema: dict[str, Any] | None = None
    timeout_seconds: float | None = None  # default: the plugin's call_timeout_seconds
    heartbeat_seconds: float | None = None


@dataclass(frozen=True)
class PluginAiTask:
    """An AI task like the built-in six, declared as data: the model gets `instructions` and the
    input as JSON, and must answer a JSON object matching `output_schema`. The baseline (the
    non-AI answer, used whenever AI is off or fails) is `baseline_step`, a step of this plugin
    run in its sandbox, or else `baseline_output`, a fixed answer."""

    name: (
        str  # local: enhancement points use "<plugin>.<name>", template steps "ai.<plugin>.<name>"
    )
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    instructions: str
    baseline_step: str | None = None
    baseline_output: dict[str, Any] | None = None
    max_output_tokens: int = 512


@dataclass(frozen=True)
class PluginModel:
    """A model of a PluginProvider and its list prices in USD per million tokens."""

    name: str
    input_usd_per_million: str  # Decimal as a string
    output_usd_per_million: str


@dataclass(frozen=True)
class PluginProvider:
    """An AI provider declared as data: an OpenAI-compatible endpoint under a name. The API key
    comes from the environment variable `api_key_env` of the AI worker (never from the plugin);
    the provider is used only where that variable is set. `base_url_env`, when given, names a
    variable of the AI worker that replaces `base_url` (the deployment points it elsewhere)."""

    name: str  # local: routing and health use "<plugin>.<name>"
    base_url: str
    api_key_env: str
    models: tuple[PluginModel, ...] | list[PluginModel] = ()
    kind: str = "openai-compatible"
    base_url_env: str | None = None


@dataclass(frozen=True)
class Plugin:
    """What a plugin adds. `templates` are template specs (dicts, as the files in
    app/templates/standard), published for every tenant the plugin is enabled for; `network`
    lists the "host:port" pairs its steps may reach; `env` the environment variables its worker
    process is given (nothing else of the service's environment reaches it)."""

    name: str
    version: str
    api_version: int = PLUGIN_API_VERSION
    description: str = ""
    steps: tuple[PluginStep, ...] | list[PluginStep] = ()
    ai_tasks: tuple[PluginAiTask, ...] | list[PluginAiTask] = ()
    providers: tuple[PluginProvider, ...] | list[PluginProvider] = ()
    templates: tuple[dict[str, Any], ...] | list[dict[str, Any]] = ()
    network: tuple[str, ...] | list[str] = ()
    env: tuple[str, ...] | list[str] = ()
    limits: PluginLimits = field(default_factory=PluginLimits)

    def qualified(self, local: str) -> str:
        return f"{self.name}.{local}"


class PluginLoadError(Exception):
    """A plugin could not be loaded or declares something wrong; the message says what."""


def installed_entry_points() -> dict[str, EntryPoint]:
    """{entry point name: entry point} of every installed distribution's `wfs.plugins`."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_plugin(name: str) -> Plugin:
    """Import one installed plugin's object. Runs the plugin's module code: call it only in the
    plugin's own (sandboxed) process or a throwaway one."""
    found = installed_entry_points().get(name)
    if found is None:
        raise PluginLoadError(
            f"no installed plugin named {name!r} (entry point group {ENTRY_POINT_GROUP})"
        )
    try:
        plugin = found.load()
    except Exception as exc:  # the plugin's own import failed
        raise PluginLoadError(
            f"plugin {name!r} failed to import: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(plugin, Plugin):
        raise PluginLoadError(
            f"plugin {name!r}: entry point {found.value} is a {type(plugin).__name__},"
            " not app.plugins.api.Plugin"
        )
    if plugin.name != name:
        raise PluginLoadError(
            f"plugin {name!r}: entry point name and Plugin.name ({plugin.name!r}) must be the same"
        )
    return plugin


def env_prefix(plugin: str) -> str:
    """The prefix every variable a plugin names (provider key and URL, `env`) must carry:
    `PLUGIN_<NAME>_`. An allow-list: a deny-list of the service's settings missed every
    other secret of a worker's environment (AWS_SECRET_ACCESS_KEY, OTEL_EXPORTER_OTLP_HEADERS)."""
    return f"PLUGIN_{plugin.upper()}_"
