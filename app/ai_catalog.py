"""The AI model catalogue as data: which models each tier's tasks try, in order, each model's
cheaper sibling, its prices, and how it is called. A leaf module (like app/ai_tasks.py), so
app.settings can check AI_CATALOG with it.

The defaults ship as app/ai_catalog.json (package data), dated and sourced from the providers'
own model and pricing pages; a deployment replaces parts of it with AI_CATALOG (a path to a JSON
file, or the JSON itself). The format (docs/ai.md, "The model catalogue"):

    {"models": {"openai": {"gpt-6-luna": {"input": "0.10", "output": "0.50",
                                          "cached_input": "0.01", "cheaper": null,
                                          "temperature": false}}},
     "tiers": {"pro": {"default": ["openai/gpt-6-luna", "anthropic/claude-haiku-5-5"],
                       "summarize": ["anthropic/claude-haiku-5-5"]}}}

Prices are USD per 1M tokens (strings or numbers, kept as Decimal); `cached_input` is the price
of input tokens the provider served from its prompt cache (absent: no discount). `cheaper` names
a model of the same provider that the gateway swaps in past the budget's soft threshold.
`temperature` false leaves the sampling temperature out (models that refuse it). An override's
models are merged into the defaults one model at a time (an entry replaces the default entry
of that model; `null` removes it); its tiers replace the default tier they name.

Every check runs at load, so a bad AI_CATALOG stops the process with a one-line error naming the
entry, and a tier cannot route to a model without a price. This module imports nothing of the
application but the task and tier names, so app.settings can validate with it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from app.ai_tasks import TASKS
from app.tiers import TIERS

PROVIDERS = ("openai", "anthropic")
TIER_NAMES = TIERS
DEFAULT_KEY = "default"  # a tier's candidates for every task it does not name
MAX_CATALOG_BYTES = 256 * 1024
_MODEL_KEYS = frozenset({"input", "output", "cached_input", "cheaper", "temperature"})


class CatalogError(ValueError):
    """The catalogue (or AI_CATALOG) is not valid; the message names the entry."""


@dataclass(frozen=True)
class ModelChoice:
    provider: str  # "openai" | "anthropic" | "baseline"
    model: str  # "baseline" for the baseline provider

    def __str__(self) -> str:
        return f"{self.provider}/{self.model}"


@dataclass(frozen=True)
class Price:
    """USD per 1M tokens; `cached_input` None: cached input costs what input costs."""

    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cached_input_per_mtok: Decimal | None = None


@dataclass(frozen=True)
class ModelEntry:
    choice: ModelChoice
    price: Price
    cheaper: ModelChoice | None = None
    temperature: bool = True  # send temperature 0 (False: leave sampling to the model)


@dataclass(frozen=True, eq=False)  # hashed by identity: caches key on a loaded catalogue
class Catalog:
    """The models and each tier's candidates per task (every AI task present, maybe [])."""

    as_of: str
    models: Mapping[ModelChoice, ModelEntry]
    routing: Mapping[str, Mapping[str, tuple[ModelChoice, ...]]]
    sources: tuple[str, ...] = field(default=())

    def entry(self, provider: str, model: str) -> ModelEntry | None:
        return self.models.get(ModelChoice(provider, model))

    def configured_models(self) -> list[ModelChoice]:
        """Every model some tier routes to, or swaps in near the budget: what the model check
        expects each provider to list."""
        found: list[ModelChoice] = []
        for tasks in self.routing.values():
            for choices in tasks.values():
                for choice in choices:
                    for c in (choice, self.cheaper(choice)):
                        if c not in found:
                            found.append(c)
        return sorted(found, key=str)

    def cheaper(self, choice: ModelChoice) -> ModelChoice:
        entry = self.models.get(choice)
        return entry.cheaper if entry is not None and entry.cheaper is not None else choice


def _decimal(value: Any, where: str) -> Decimal:
    # str() first so a JSON float such as 0.15 becomes Decimal("0.15"), not its binary value.
    if isinstance(value, bool):
        raise CatalogError(f"{where}: {value!r} is not a number")
    try:
        result = Decimal(str(value))
    except (InvalidOperation, ValueError) as exc:
        raise CatalogError(f"{where}: {value!r} is not a number") from exc
    if not result.is_finite() or result < 0 or result > 100_000:
        raise CatalogError(f"{where}: {value!r} must be a number from 0 to 100000")
    return result


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 200 or value != value.strip():
        raise CatalogError(f"{where}: a model name must be a non-empty string")
    return value


def _model(provider: str, name: str, raw: Any) -> ModelEntry:
    where = f"models.{provider}.{name}"
    if not isinstance(raw, Mapping):
        raise CatalogError(f"{where}: expected an object with input and output prices")
    unknown = set(raw) - _MODEL_KEYS
    if unknown or not {"input", "output"} <= set(raw):
        raise CatalogError(
            f"{where}: needs input and output (USD per 1M tokens); allowed keys are "
            f"{', '.join(sorted(_MODEL_KEYS))}"
            + (f"; unknown {sorted(unknown)}" if unknown else "")
        )
    cached = raw.get("cached_input")
    cheaper = raw.get("cheaper")
    temperature = raw.get("temperature", True)
    if not isinstance(temperature, bool):
        raise CatalogError(f"{where}.temperature: true or false")
    return ModelEntry(
        choice=ModelChoice(provider, name),
        price=Price(
            _decimal(raw["input"], where + ".input"),
            _decimal(raw["output"], where + ".output"),
            None if cached is None else _decimal(cached, where + ".cached_input"),
        ),
        cheaper=None if cheaper is None else ModelChoice(provider, _name(cheaper, where)),
        temperature=temperature,
    )


def _models(raw: Any, base: dict[ModelChoice, ModelEntry]) -> dict[ModelChoice, ModelEntry]:
    if not isinstance(raw, Mapping):
        raise CatalogError("models: expected {provider: {model: {...}}}")
    models = dict(base)
    for provider, entries in raw.items():
        if provider not in PROVIDERS:
            raise CatalogError(f"models.{provider}: unknown provider; use {', '.join(PROVIDERS)}")
        if not isinstance(entries, Mapping):
            raise CatalogError(f"models.{provider}: expected an object of models")
        for name, entry in entries.items():
            _name(name, f"models.{provider}")
            if entry is None:  # an override removes a default model
                models.pop(ModelChoice(provider, name), None)
            else:
                models[ModelChoice(provider, name)] = _model(provider, name, entry)
    return models


def _choice(value: Any, where: str) -> ModelChoice:
    if not isinstance(value, str) or value.count("/") < 1:
        raise CatalogError(f"{where}: {value!r} is not 'provider/model'")
    provider, model = value.split("/", 1)
    if provider not in PROVIDERS:
        raise CatalogError(f"{where}: unknown provider {provider!r}")
    return ModelChoice(provider, _name(model, where))


def _tier(
    name: str, raw: Any, models: Mapping[ModelChoice, ModelEntry]
) -> dict[str, tuple[ModelChoice, ...]]:
    if not isinstance(raw, Mapping) or not raw:
        raise CatalogError(f"tiers.{name}: expected {{'default': [...], '<task>': [...]}}")
    unknown = set(raw) - {DEFAULT_KEY, *TASKS}
    if unknown:
        raise CatalogError(
            f"tiers.{name}: unknown tasks {sorted(unknown)}; the tasks are {', '.join(TASKS)}"
        )
    lists: dict[str, tuple[ModelChoice, ...]] = {}
    for key, choices in raw.items():
        if not isinstance(choices, list) or len(choices) > 10:
            raise CatalogError(f"tiers.{name}.{key}: a list of at most 10 'provider/model'")
        parsed = tuple(_choice(c, f"tiers.{name}.{key}[{i}]") for i, c in enumerate(choices))
        for i, choice in enumerate(parsed):
            if choice not in models:
                raise CatalogError(f"tiers.{name}.{key}[{i}]: {choice} has no entry in models")
        if len(set(parsed)) != len(parsed):
            raise CatalogError(f"tiers.{name}.{key}: a model is listed twice")
        lists[key] = parsed
    default = lists.get(DEFAULT_KEY, ())
    return {task: lists.get(task, default) for task in TASKS}


def build(raw: Any, base: Catalog | None = None) -> Catalog:
    """A catalogue from its JSON form, over `base` (the defaults) when given."""
    if not isinstance(raw, Mapping):
        raise CatalogError("the catalogue must be a JSON object")
    unknown = set(raw) - {"as_of", "sources", "notes", "models", "tiers"}
    if unknown:
        raise CatalogError(f"unknown keys {sorted(unknown)}; use as_of, models, tiers")
    models = _models(raw.get("models", {}), dict(base.models) if base else {})
    tiers_raw = raw.get("tiers", {})
    if not isinstance(tiers_raw, Mapping):
        raise CatalogError("tiers: expected {tier: {...}}")
    routing: dict[str, Mapping[str, tuple[ModelChoice, ...]]] = dict(base.routing) if base else {}
    for tier, entry in tiers_raw.items():
        if tier not in TIER_NAMES:
            raise CatalogError(f"tiers.{tier}: unknown tier; the tiers are {', '.join(TIER_NAMES)}")
        routing[tier] = _tier(tier, entry, models)
    for tier in TIER_NAMES:
        routing.setdefault(tier, {task: () for task in TASKS})
    catalog = Catalog(
        as_of=str(raw.get("as_of") or (base.as_of if base else "")),
        models=models,
        routing=routing,
        sources=tuple(str(s) for s in raw.get("sources", base.sources if base else ())),
    )
    _check_priced(catalog)
    return catalog


def _check_priced(catalog: Catalog) -> None:
    """Everything routed, and every cheaper sibling, has an entry (so it can be costed)."""
    for entry in catalog.models.values():
        if entry.cheaper is not None and entry.cheaper not in catalog.models:
            raise CatalogError(
                f"models.{entry.choice.provider}.{entry.choice.model}.cheaper: "
                f"{entry.cheaper} has no entry in models"
            )
    for tier, tasks in catalog.routing.items():
        for task, choices in tasks.items():
            for choice in choices:
                if choice not in catalog.models:
                    raise CatalogError(f"tiers.{tier}.{task}: {choice} has no entry in models")


def _read_override(value: str) -> Any:
    """AI_CATALOG: inline JSON (starts with `{`) or the path of a JSON file."""
    text = value.strip()
    if not text.startswith("{"):
        path = Path(text)
        try:
            if path.stat().st_size > MAX_CATALOG_BYTES:
                raise CatalogError(f"file {path}: more than {MAX_CATALOG_BYTES} bytes")
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise CatalogError(f"file {path}: {exc.strerror or exc}") from exc
    if len(text) > MAX_CATALOG_BYTES:
        raise CatalogError(f"more than {MAX_CATALOG_BYTES} bytes")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CatalogError(f"not valid JSON: {exc}") from exc


@lru_cache(maxsize=1)
def default_catalog() -> Catalog:
    """The shipped catalogue (app/ai_catalog.json)."""
    text = resources.files("app").joinpath("ai_catalog.json").read_text(encoding="utf-8")
    return build(json.loads(text))


@lru_cache(maxsize=8)
def load(override: str | None) -> Catalog:
    """The defaults with AI_CATALOG (None: the defaults). Raises CatalogError."""
    if not override or not override.strip():
        return default_catalog()
    return build(_read_override(override), default_catalog())
