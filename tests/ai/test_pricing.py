"""Price table, exact Decimal costs, reservation estimates and overrides."""

from __future__ import annotations

from decimal import Decimal

import pytest

from app.ai import pricing
from app.ai.pricing import LIST_PRICES, PriceTable, UnknownModel

REQUIRED = [
    ("openai", "gpt-4o-mini"),
    ("openai", "gpt-4o"),
    ("openai", "gpt-4.1"),
    ("openai", "gpt-4.1-mini"),
    ("openai", "o3-mini"),
    ("anthropic", "claude-3-5-haiku-latest"),
    ("anthropic", "claude-3-5-sonnet-latest"),
    ("anthropic", "claude-sonnet-4-0"),
    ("anthropic", "claude-opus-4-0"),
    ("baseline", "baseline"),
]


def test_table_has_every_model_as_decimal() -> None:
    for key in REQUIRED:
        price = LIST_PRICES[key]
        assert isinstance(price.input_per_mtok, Decimal)
        assert isinstance(price.output_per_mtok, Decimal)
        assert price.output_per_mtok >= price.input_per_mtok
    assert LIST_PRICES[("baseline", "baseline")].input_per_mtok == 0
    assert pricing.is_priced("openai", "gpt-4o")
    assert not pricing.is_priced("openai", "claude-opus-4-0")


def test_cost_is_exact_and_quantized() -> None:
    # 1000 x 0.15/1M + 500 x 0.60/1M
    assert pricing.cost("openai", "gpt-4o-mini", 1000, 500) == Decimal("0.000450")
    assert str(pricing.cost("openai", "gpt-4o-mini", 1000, 500)) == "0.000450"
    assert pricing.cost("anthropic", "claude-opus-4-0", 1_000_000, 1_000_000) == Decimal("90")
    assert pricing.cost("anthropic", "claude-sonnet-4-0", 1234, 567) == Decimal("0.012207")
    assert pricing.cost("baseline", "baseline", 10_000, 10_000) == 0
    assert pricing.cost("openai", "gpt-4o", 0, 0) == 0


def test_cost_rounds_half_up() -> None:
    overrides = {"openai": {"half": {"input": "0.5", "output": "1.5"}}}
    # 1 token at $0.5/1M is exactly half a micro-dollar: half-up gives 0.000001 (banker's: 0).
    assert pricing.cost("openai", "half", 1, 0, overrides=overrides) == Decimal("0.000001")
    # 1.5/1M = 0.0000015 -> 0.000002
    assert pricing.cost("openai", "half", 0, 1, overrides=overrides) == Decimal("0.000002")


def test_unknown_model_is_a_clear_key_error() -> None:
    with pytest.raises(UnknownModel) as info:
        pricing.cost("openai", "gpt-9", 1, 1)
    assert isinstance(info.value, KeyError)
    assert "gpt-9" in str(info.value) and "openai" in str(info.value)
    with pytest.raises(KeyError):
        pricing.estimate("anthropic", "gpt-4o", 10, 10)  # right model, wrong provider


def test_negative_tokens_are_refused() -> None:
    with pytest.raises(ValueError):
        pricing.cost("openai", "gpt-4o", -1, 0)
    with pytest.raises(ValueError):
        pricing.estimate("openai", "gpt-4o", 0, -5)


def test_estimate_is_an_upper_bound() -> None:
    # ceil(3001 / 3) = 1001 input tokens x 2.50/1M + 1024 x 10/1M = 0.0127425 -> rounded up
    assert pricing.estimate("openai", "gpt-4o", 3001, 1024) == Decimal("0.012743")
    assert pricing.estimate("openai", "gpt-4o", 0, 0) == 0
    # A typical call (~4 chars per token, fewer output tokens than the cap) costs less.
    for provider, model in REQUIRED:
        actual = pricing.cost(provider, model, 4000 // 4, 700)
        assert pricing.estimate(provider, model, 4000, 1024) >= actual


def test_overrides_change_and_add_models() -> None:
    overrides = {
        "openai": {
            "gpt-4o": {"input": 0.15, "output": "1"},
            "local-llama": {"input": 0, "output": 0},
        }
    }
    table = PriceTable(overrides)
    # JSON floats become the decimal they spell, not their binary approximation.
    assert table.price("openai", "gpt-4o").input_per_mtok == Decimal("0.15")
    assert table.cost("openai", "gpt-4o", 1_000_000, 0) == Decimal("0.15")
    assert table.cost("openai", "local-llama", 5000, 5000) == 0
    assert table.cost("openai", "gpt-4o-mini", 1000, 500) == Decimal("0.000450")
    assert pricing.cost("openai", "local-llama", 1, 1, overrides=overrides) == 0
    assert pricing.is_priced("openai", "local-llama", overrides=overrides)
    # The module default is untouched.
    assert pricing.DEFAULT_TABLE.price("openai", "gpt-4o").input_per_mtok == Decimal("2.50")
    with pytest.raises(UnknownModel):
        pricing.cost("openai", "local-llama", 1, 1)


@pytest.mark.parametrize(
    "overrides",
    [
        {"openai": {"gpt-4o": {"input": "abc", "output": "1"}}},
        {"openai": {"gpt-4o": {"input": "-1", "output": "1"}}},
        {"openai": {"gpt-4o": {"input": "1"}}},
        {"openai": {"gpt-4o": {"input": "NaN", "output": "1"}}},
        {"openai": ["gpt-4o"]},
    ],
)
def test_bad_overrides_are_refused(overrides: dict) -> None:
    with pytest.raises(ValueError, match="price override"):
        PriceTable(overrides)
