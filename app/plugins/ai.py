"""A plugin's AI tasks and providers, made into what the AI layer already runs.

- A `PluginAiTask` becomes a TaskSpec (`PluginTask`, a BaseTask): the system prompt is the
  plugin's instructions with the reply's JSON Schema (BaseTask's prompt format: the input is
  delimited data, never instructions), the output must be a JSON object valid against
  `output_schema`, and the baseline is the declared `baseline_output` (a `baseline_step`, run on
  the plugin's queue, is refused at load for now: the AI worker has no way to call it yet).
  It is named `<plugin>.<task>`: enhancement points name it so, and the template step
  `ai.<plugin>.<task>` runs it on the AI queue like the built-in six.
- A `PluginProvider` becomes the existing OpenAIProvider pointed at its `base_url`, under the
  name `<plugin>.<provider>`, built only when the AI worker's environment has its
  `api_key_env` (and at the URL in `base_url_env` when that is set), both the plugin's own
  variables (`PLUGIN_<NAME>_...`, app/plugins/checks.py); its models' prices join
  the price table.
- Routing: a plugin task is tried on the plugin's own provider models first, then on the
  tier's models, on every tier that has AI models at all (free has none: baseline only). The
  built-in tasks' routing is unchanged.

Everything is registered once at process start (app/plugins/registry.py) in the AI layer's
one registration point, app/ai/extensions.py (and the plugin models' prices in the price
table); the built-in tables are left as they are.
"""

from __future__ import annotations

import copy
import os
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from app.ai import extensions, pricing
from app.ai.contracts import InvalidOutput, ModelChoice, Provider
from app.ai.tasks import BaseTask
from app.ai.tasks.base import require_object
from app.jsonschemas import instance_problems, json_validator
from app.plugins.checks import env_name_problem
from app.settings import Settings

if TYPE_CHECKING:
    from app.plugins.checks import AiTaskDecl, Manifest, ProviderDecl

# How long a plugin task's validated outputs stay cached (seconds), like generate_text's.
PLUGIN_TASK_CACHE_TTL = 3600


class PluginTask(BaseTask):
    """A plugin's AI task declared as data (see the module doc)."""

    def __init__(self, qualified: str, decl: AiTaskDecl) -> None:
        self.name = qualified
        self.instructions = decl.instructions
        self.input_schema = decl.input_schema
        self.output_schema = decl.output_schema
        self._baseline = decl.baseline_output or {}
        self._max_tokens = decl.max_output_tokens
        self._output_validator = json_validator(decl.output_schema)

    def prompt_data(self, input: dict[str, Any]) -> dict[str, Any]:
        return input

    def validate(self, input: dict[str, Any], output: dict[str, Any]) -> dict[str, Any]:
        problems = instance_problems(self._output_validator, require_object(output))
        if problems:
            first = problems[0]
            raise InvalidOutput(f"{first['path']}: {first['message']}")
        return output

    def baseline(self, input: dict[str, Any]) -> dict[str, Any]:
        self.check_input(input)
        return copy.deepcopy(self._baseline)

    def max_output_tokens(self, input: dict[str, Any]) -> int:
        return self._max_tokens


def _own_variable(plugin: str, variable: str | None) -> str | None:
    """The variable's value when it is the plugin's own (PLUGIN_<NAME>_...; parse_manifest
    refuses any other, this keeps a manifest that skipped it from reading a secret)."""
    if variable is None or env_name_problem(plugin, variable):
        return None
    return os.environ.get(variable)


def _provider_factory(plugin: str, name: str, decl: ProviderDecl) -> Any:
    def build(settings: Settings) -> Provider | None:
        key = _own_variable(plugin, decl.api_key_env)
        if not key:  # not configured in this deployment: like openai without OPENAI_API_KEY
            return None
        base_url = _own_variable(plugin, decl.base_url_env) or decl.base_url
        # Imported here: the SDKs cost ~0.5 s of import that the API (which loads plugins too)
        # never needs.
        from app.ai.providers import OpenAIProvider

        provider = OpenAIProvider(key, base_url)
        provider.name = name  # type: ignore[misc]  # the instance answers to its own name
        return provider

    return build


def _models(m: Manifest) -> list[ModelChoice]:
    return [ModelChoice(m.qualified(p.name), model.name) for p in m.providers for model in p.models]


def register_ai(m: Manifest) -> None:
    """Register the plugin's AI tasks, providers, prices and routes (see the module doc)."""
    for provider in m.providers:
        name = m.qualified(provider.name)
        extensions.PROVIDERS[name] = _provider_factory(m.name, name, provider)
        for model in provider.models:
            pricing.EXTRA_PRICES[(name, model.name)] = pricing.Price(
                Decimal(model.input_usd_per_million), Decimal(model.output_usd_per_million)
            )
    for declared in m.ai_tasks:
        task = PluginTask(m.qualified(declared.name), declared)
        extensions.TASKS[task.name] = task
        extensions.CACHE_TTLS[task.name] = PLUGIN_TASK_CACHE_TTL
        extensions.ROUTES[task.name] = _models(m)


def unregister_ai(m: Manifest) -> None:
    """Take back what register_ai added (tests)."""
    for declared in m.ai_tasks:
        name = m.qualified(declared.name)
        for table in (extensions.TASKS, extensions.CACHE_TTLS, extensions.ROUTES):
            table.pop(name, None)
    for provider in m.providers:
        name = m.qualified(provider.name)
        extensions.PROVIDERS.pop(name, None)
        for model in provider.models:
            pricing.EXTRA_PRICES.pop((name, model.name), None)
