"""The model catalogue as data: the shipped file, its format checks, AI_CATALOG (a path or
inline JSON) refused at settings load with a one-line error, and the shipped prices checked
against genai-prices (a maintained price source) for every model it knows."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from genai_prices import Usage, calc_price
from pydantic import ValidationError

from app.ai import routing
from app.ai_catalog import CatalogError, ModelChoice, build, default_catalog, load
from app.ai_tasks import TASKS
from app.settings import Settings

OVERRIDE = {
    "models": {"openai": {"local-model": {"input": "0", "output": "0"}}},
    "tiers": {"pro": {"default": ["openai/local-model"], "summarize": []}},
}


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_the_shipped_catalogue_is_dated_sourced_and_routes_every_tier() -> None:
    catalog = default_catalog()
    assert catalog.as_of >= "2026-12" and any("openai.com" in s for s in catalog.sources)
    assert all(catalog.routing["free"][task] == () for task in TASKS)
    for tier in ("pro", "premium", "enterprise"):
        for task in TASKS:
            providers = [c.provider for c in catalog.routing[tier][task]]
            assert sorted(providers) == ["anthropic", "openai"]  # fails over to the other
    # Past the soft threshold each routed model swaps for a cheaper one of its provider.
    for choice in catalog.configured_models():
        cheaper = catalog.cheaper(choice)
        assert cheaper.provider == choice.provider
        if cheaper != choice:
            assert catalog.models[cheaper].price.output_per_mtok < (
                catalog.models[choice].price.output_per_mtok
            )


def test_shipped_prices_agree_with_genai_prices_where_it_knows_the_model() -> None:
    # 10,000 tokens: below every long-prompt tier, so the base prices are compared.
    checked = []
    for choice, entry in default_catalog().models.items():
        try:
            plain = calc_price(
                Usage(input_tokens=10_000, output_tokens=10_000),
                model_ref=choice.model,
                provider_id=choice.provider,
            )
            cached = calc_price(
                Usage(input_tokens=10_000, cache_read_tokens=10_000),
                model_ref=choice.model,
                provider_id=choice.provider,
            )
        except LookupError:  # newer than its snapshot (gpt-6.2-*, released 2026-11-17)
            continue
        checked.append(str(choice))
        assert Decimal(str(plain.input_price)) * 100 == entry.price.input_per_mtok, choice
        assert Decimal(str(plain.output_price)) * 100 == entry.price.output_per_mtok, choice
        if entry.price.cached_input_per_mtok is not None:
            assert Decimal(str(cached.total_price)) * 100 == entry.price.cached_input_per_mtok
    assert len(checked) >= 5, checked


def test_an_override_adds_models_and_replaces_tiers() -> None:
    catalog = build(OVERRIDE, default_catalog())
    local = ModelChoice("openai", "local-model")
    assert catalog.routing["pro"]["classify_content"] == (local,)
    assert catalog.routing["pro"]["summarize"] == ()  # a task named: its own list
    assert catalog.routing["premium"] == default_catalog().routing["premium"]  # untouched
    assert routing.candidates("pro", "generate_text", configured={"openai"}, catalog=catalog) == [
        local
    ]
    assert local in routing.allowed_models("pro", catalog)
    assert local not in routing.allowed_models("pro")  # the shipped catalogue
    removed = build({"models": {"openai": {"gpt-6.1-terra": None}}}, default_catalog())
    assert removed.entry("openai", "gpt-6.1-terra") is None


def test_ai_catalog_setting_takes_a_path_or_inline_json(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(OVERRIDE))
    for value in (str(path), json.dumps(OVERRIDE)):
        catalog = settings(ai_catalog=value).catalog()
        assert catalog.entry("openai", "local-model") is not None
    assert settings().catalog() is default_catalog()


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ('{"models": {"openai": {"m": {"input": "x", "output": 1}}}}', "models.openai.m.input"),
        ('{"models": {"openai": {"m": {"input": -1, "output": 1}}}}', "from 0 to 100000"),
        ('{"models": {"openai": {"m": {"input": 1}}}}', "needs input and output"),
        ('{"models": {"mistral": {}}}', "unknown provider"),
        ('{"tiers": {"gold": {"default": []}}}', "unknown tier"),
        ('{"tiers": {"pro": {"sumarize": []}}}', "unknown tasks"),
        ('{"tiers": {"pro": {"default": ["openai/nope"]}}}', "openai/nope has no entry"),
        ('{"tiers": {"pro": {"default": ["gpt-6-luna"]}}}', "is not 'provider/model'"),
        (
            '{"models": {"openai": {"m": {"input": 1, "output": 1, "cheaper": "x"}}}}',
            "openai/x has no entry",
        ),
        ("{not json", "not valid JSON"),
        ("/nonexistent/catalog.json", "No such file"),
        ('{"prices": {}}', "unknown keys"),
    ],
)
def test_a_bad_ai_catalog_refuses_to_load_with_one_line(value: str, says: str) -> None:
    with pytest.raises(ValidationError) as info:
        settings(ai_catalog=value)
    message = str(info.value.errors()[0]["msg"])
    assert says in message and message.startswith("Value error, AI_CATALOG: ")
    assert "\n" not in message
    with pytest.raises(CatalogError):
        load(value)


def test_an_oversized_catalogue_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_text('{"as_of": "' + "x" * 300_000 + '"}')
    with pytest.raises(CatalogError, match="more than"):
        load(str(path))
