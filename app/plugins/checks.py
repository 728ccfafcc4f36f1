"""What a plugin declares (its manifest, as pydantic models) and every check of it, made by
the service (a plugin cannot vouch for itself): the plugin API version, names (NAME_PATTERN,
none twice, none the service's), JSON Schemas, AI task baselines, providers, network and env
entries, and its templates, validated like a tenant's. app/plugins/registry.py loads a plugin
only when all pass."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from app.errors import ValidationFailed
from app.jsonschemas import instance_problems, json_validator, schema_problems
from app.plugins.api import NAME_PATTERN, PLUGIN_API_VERSION, plugin_task_queue
from app.plugins.api import env_prefix as env_prefix  # the contract; checked here
from app.settings import Settings
from app.steps import STEP_ACTIVITIES
from app.templates.schemas import validate_spec
from app.tenants.plugin_access import PluginAccess

ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,99}$")
HOST_PORT = re.compile(r"^(?P<host>[A-Za-z0-9.\-]{1,253}|\[[0-9A-Fa-f:]+\]):(?P<port>\d{1,5})$")
# Names a plugin may not take: the built-in step families (`data.transform` and `data.x` would
# be one namespace), the AI step prefix and the built-in providers.
RESERVED_NAMES = frozenset(
    {name.split(".")[0] for name in STEP_ACTIVITIES} | {"ai", "openai", "anthropic", "baseline"}
)
MAX_TEMPLATES = 50
MAX_ITEMS = 100  # steps, AI tasks, providers, models, network entries, env names (each)


def env_name_problem(plugin: str, name: str) -> str | None:
    """Why a plugin may not name the variable `name`, or None."""
    if not ENV_NAME.match(name):
        return f"{name!r} is not a variable name"
    prefix = env_prefix(plugin)
    if not name.startswith(prefix) or len(name) == len(prefix):
        return f"{name} must start with {prefix} (a plugin names only its own variables)"
    if name.lower() in Settings.model_fields:
        return f"{name} is a setting of the service, not the plugin's"
    return None


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
        variables = {"api_key_env": provider.api_key_env, "base_url_env": provider.base_url_env}
        for field_name, variable in variables.items():
            # Its key is sent to its base_url as a Bearer token: only the plugin's own variable.
            problem = None if variable is None else env_name_problem(m.name, variable)
            if problem:
                problems.append(f"{where}: {field_name} {problem}")
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
    for name in m.env:
        problem = env_name_problem(m.name, name)
        if problem:
            problems.append(f"env {name!r}: {problem}")
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
