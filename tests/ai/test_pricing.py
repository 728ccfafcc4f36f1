"""Prices from the model catalogue: exact Decimal costs, cached input, reservation estimates,
and prices replaced through AI_CATALOG."""

from __future__ import annotations

from decimal import Decimal

import pytest

from app.ai import pricing
from app.ai.pricing import PriceTable, UnknownModel
from app.ai_catalog import build, default_catalog

ROUTED = default_catalog().configured_models()


def test_every_routed_model_has_a_decimal_price() -> None:
    table = PriceTable.of(default_catalog())
    assert len(ROUTED) >= 6
    for choice in ROUTED:
        price = table.price(choice.provider, choice.model)
        assert isinstance(price.input_per_mtok, Decimal)
        assert price.output_per_mtok >= price.input_per_mtok > 0
    assert table.price("baseline", "baseline").input_per_mtok == 0
    assert pricing.is_priced("openai", "gpt-6.2-sol")
    assert not pricing.is_priced("openai", "claude-opus-5-5")  # an Anthropic model


def test_cost_is_exact_and_quantized() -> None:
    # 1000 x 0.10/1M + 500 x 0.50/1M
    assert pricing.cost("openai", "gpt-6-luna", 1000, 500) == Decimal("0.000350")
    assert str(pricing.cost("openai", "gpt-6-luna", 1000, 500)) == "0.000350"
    assert pricing.cost("anthropic", "claude-opus-5-5", 1_000_000, 1_000_000) == Decimal("24")
    # 1234 x 4/1M + 567 x 20/1M = 0.004936 + 0.01134
    assert pricing.cost("anthropic", "claude-opus-5-5", 1234, 567) == Decimal("0.016276")
    assert pricing.cost("baseline", "baseline", 10_000, 10_000) == 0
    assert pricing.cost("openai", "gpt-6.2-sol", 0, 0) == 0


def test_cached_input_is_billed_at_its_own_price() -> None:
    # Sonnet 5.5: 1M input of which 800k cached: 200k x 2 + 800k x 0.10 = 0.48
    assert pricing.cost(
        "anthropic", "claude-sonnet-5-5", 1_000_000, 0, cached_input_tokens=800_000
    ) == Decimal("0.48")
    # gpt-6.2-sol has no cached-input price in the catalogue: cached tokens cost full input.
    assert pricing.cost(
        "openai", "gpt-6.2-sol", 1_000_000, 0, cached_input_tokens=1_000_000
    ) == pricing.cost("openai", "gpt-6.2-sol", 1_000_000, 0)
    with pytest.raises(ValueError):
        pricing.cost("openai", "gpt-6-luna", 10, 0, cached_input_tokens=11)


def test_cost_rounds_half_up() -> None:
    catalog = build({"models": {"openai": {"half": {"input": "0.5", "output": "1.5"}}}})
    # 1 token at $0.5/1M is exactly half a micro-dollar: half-up gives 0.000001 (banker's: 0).
    assert pricing.cost("openai", "half", 1, 0, catalog=catalog) == Decimal("0.000001")
    # 1.5/1M = 0.0000015 -> 0.000002
    assert pricing.cost("openai", "half", 0, 1, catalog=catalog) == Decimal("0.000002")


def test_unknown_model_is_a_clear_key_error() -> None:
    with pytest.raises(UnknownModel) as info:
        pricing.cost("openai", "gpt-9", 1, 1)
    assert isinstance(info.value, KeyError)
    assert "gpt-9" in str(info.value) and "openai" in str(info.value)
    with pytest.raises(KeyError):
        pricing.estimate("anthropic", "gpt-6.2-sol", 10, 10)  # right model, wrong provider


def test_negative_tokens_are_refused() -> None:
    with pytest.raises(ValueError):
        pricing.cost("openai", "gpt-6.2-sol", -1, 0)
    with pytest.raises(ValueError):
        pricing.estimate("openai", "gpt-6.2-sol", 0, -5)


def test_estimate_is_an_upper_bound() -> None:
    # ceil(3001 / 3) = 1001 input tokens x 2/1M + 1024 x 10/1M = 0.012242
    assert pricing.estimate("openai", "gpt-6.2-sol", 3001, 1024) == Decimal("0.012242")
    assert pricing.estimate("openai", "gpt-6.2-sol", 0, 0) == 0
    # A typical call (~4 chars per token, fewer output tokens than the cap) costs less.
    for choice in ROUTED:
        actual = pricing.cost(choice.provider, choice.model, 4000 // 4, 700)
        assert pricing.estimate(choice.provider, choice.model, 4000, 1024) >= actual


def test_a_catalogue_override_changes_and_adds_prices() -> None:
    catalog = build(
        {
            "models": {
                "openai": {
                    "gpt-6.2-sol": {"input": 0.15, "output": "1"},
                    "local-llama": {"input": 0, "output": 0},
                }
            }
        },
        default_catalog(),
    )
    table = PriceTable.of(catalog)
    # JSON floats become the decimal they spell, not their binary approximation.
    assert table.price("openai", "gpt-6.2-sol").input_per_mtok == Decimal("0.15")
    assert table.cost("openai", "gpt-6.2-sol", 1_000_000, 0) == Decimal("0.15")
    assert table.cost("openai", "local-llama", 5000, 5000) == 0
    assert table.cost("openai", "gpt-6-luna", 1000, 500) == Decimal("0.000350")  # a default
    assert pricing.is_priced("openai", "local-llama", catalog=catalog)
    # The shipped catalogue is untouched.
    assert PriceTable.of(default_catalog()).price("openai", "gpt-6.2-sol").input_per_mtok == 2
    with pytest.raises(UnknownModel):
        pricing.cost("openai", "local-llama", 1, 1)


def test_registered_extra_prices_join_every_catalogue() -> None:
    key = ("acme.llm", "tiny")
    override = build({"models": {"openai": {"x": {"input": 1, "output": 1}}}}, default_catalog())
    assert not pricing.is_priced(*key)
    pricing.EXTRA_PRICES[key] = pricing.Price(Decimal("1"), Decimal("2"))
    try:
        assert pricing.cost(*key, 1_000_000, 0) == Decimal("1")
        assert pricing.cost(*key, 0, 1_000_000, catalog=override) == Decimal("2")
    finally:
        del pricing.EXTRA_PRICES[key]
