"""The price table of AI models and the cost of a call, in USD as Decimal.

Prices are USD per 1M input tokens and per 1M output tokens. They are the providers' public LIST
PRICES (no batch or cached-input discounts) as published mid-2025: keep them current when
providers change them, or override them per deployment with `PriceTable(overrides)` (for
example from a JSON setting; the overrides format is documented on `PriceTable`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, ROUND_UP, Decimal, InvalidOperation
from typing import Any

MICRO = Decimal("0.000001")


def usd(value: Any) -> Decimal:
    """An amount as USD with the 6 decimals costs are kept with ("0.000000", "0.001576")."""
    return Decimal(value or 0).quantize(MICRO)


PER_TOKENS = Decimal(1_000_000)
CHARS_PER_TOKEN = 3  # deliberately pessimistic (English averages ~4) so estimates over-reserve


@dataclass(frozen=True)
class Price:
    """USD per 1M tokens."""

    input_per_mtok: Decimal
    output_per_mtok: Decimal


def _p(input_per_mtok: str, output_per_mtok: str) -> Price:
    return Price(Decimal(input_per_mtok), Decimal(output_per_mtok))


# List prices, USD per 1M tokens (input, output). Keep current.
LIST_PRICES: Mapping[tuple[str, str], Price] = {
    ("openai", "gpt-4o-mini"): _p("0.15", "0.60"),
    ("openai", "gpt-4o"): _p("2.50", "10.00"),
    ("openai", "gpt-4.1"): _p("2.00", "8.00"),
    ("openai", "gpt-4.1-mini"): _p("0.40", "1.60"),
    ("openai", "o3-mini"): _p("1.10", "4.40"),
    ("anthropic", "claude-3-5-haiku-latest"): _p("0.80", "4.00"),
    ("anthropic", "claude-3-5-sonnet-latest"): _p("3.00", "15.00"),
    ("anthropic", "claude-sonnet-4-0"): _p("3.00", "15.00"),
    ("anthropic", "claude-opus-4-0"): _p("15.00", "75.00"),
    ("baseline", "baseline"): _p("0", "0"),
}


class UnknownModel(KeyError):
    """No price is known for (provider, model): the call cannot be costed."""

    def __init__(self, provider: str, model: str) -> None:
        super().__init__(provider, model)
        self.provider, self.model = provider, model

    def __str__(self) -> str:
        return (
            f"no price for model {self.model!r} of provider {self.provider!r}: "
            "add it to app/ai/pricing.py LIST_PRICES or to the price overrides"
        )


def _decimal(value: Any, where: str) -> Decimal:
    # str() first so a JSON float such as 0.15 becomes Decimal("0.15"), not its binary value.
    try:
        result = Decimal(str(value))
    except (InvalidOperation, ValueError) as exc:
        raise ValueError(f"price override {where}: {value!r} is not a number") from exc
    if not result.is_finite() or result < 0:
        raise ValueError(f"price override {where}: {value!r} must be a finite number >= 0")
    return result


def parse_overrides(overrides: Mapping[str, Any]) -> dict[tuple[str, str], Price]:
    """Parse `{"provider": {"model": {"input": "2.5", "output": "10"}}}` (USD per 1M tokens;
    numbers or numeric strings). Raises ValueError naming the bad entry."""
    parsed: dict[tuple[str, str], Price] = {}
    for provider, models in overrides.items():
        if not isinstance(models, Mapping):
            raise ValueError(f"price override {provider}: expected an object of models")
        for model, entry in models.items():
            where = f"{provider}/{model}"
            if not isinstance(entry, Mapping) or set(entry) != {"input", "output"}:
                raise ValueError(f"price override {where}: expected {{'input': .., 'output': ..}}")
            parsed[(provider, model)] = Price(
                _decimal(entry["input"], where + ".input"),
                _decimal(entry["output"], where + ".output"),
            )
    return parsed


class PriceTable:
    """LIST_PRICES merged with per-deployment overrides (which win and may add models)."""

    def __init__(self, overrides: Mapping[str, Any] | None = None) -> None:
        self.prices: dict[tuple[str, str], Price] = dict(LIST_PRICES)
        if overrides:
            self.prices.update(parse_overrides(overrides))

    def is_priced(self, provider: str, model: str) -> bool:
        return (provider, model) in self.prices

    def price(self, provider: str, model: str) -> Price:
        try:
            return self.prices[(provider, model)]
        except KeyError:
            raise UnknownModel(provider, model) from None

    def cost(self, provider: str, model: str, input_tokens: int, output_tokens: int) -> Decimal:
        """The cost of a call, quantized to 0.000001 USD (half up)."""
        if input_tokens < 0 or output_tokens < 0:
            raise ValueError("token counts must be >= 0")
        price = self.price(provider, model)
        raw = (input_tokens * price.input_per_mtok + output_tokens * price.output_per_mtok) / (
            PER_TOKENS
        )
        return raw.quantize(MICRO, rounding=ROUND_HALF_UP)

    def estimate(
        self, provider: str, model: str, input_chars: int, max_output_tokens: int
    ) -> Decimal:
        """An upper-bound cost for a budget reservation: ceil(chars / 3) input tokens plus the
        full `max_output_tokens` at the output price, rounded up to 0.000001 USD.

        Text that tokenizes worse than 3 chars/token (CJK, some code) can cost more; settling
        with the actual cost corrects the ledger, so that overshoot is bounded by one call.
        """
        if input_chars < 0 or max_output_tokens < 0:
            raise ValueError("input_chars and max_output_tokens must be >= 0")
        price = self.price(provider, model)
        input_tokens = -(-input_chars // CHARS_PER_TOKEN)
        raw = (
            input_tokens * price.input_per_mtok + max_output_tokens * price.output_per_mtok
        ) / PER_TOKENS
        return raw.quantize(MICRO, rounding=ROUND_UP)


DEFAULT_TABLE = PriceTable()


def _table(overrides: Mapping[str, Any] | None) -> PriceTable:
    return PriceTable(overrides) if overrides else DEFAULT_TABLE


def is_priced(provider: str, model: str, *, overrides: Mapping[str, Any] | None = None) -> bool:
    """Whether calls of this model can be costed (cost() would not raise UnknownModel)."""
    return _table(overrides).is_priced(provider, model)


def cost(
    provider: str,
    model: str,
    input_tokens: int,
    output_tokens: int,
    *,
    overrides: Mapping[str, Any] | None = None,
) -> Decimal:
    """The cost of a call in USD (see PriceTable.cost). Raises UnknownModel."""
    return _table(overrides).cost(provider, model, input_tokens, output_tokens)


def estimate(
    provider: str,
    model: str,
    input_chars: int,
    max_output_tokens: int,
    *,
    overrides: Mapping[str, Any] | None = None,
) -> Decimal:
    """An upper-bound cost for reserving budget (see PriceTable.estimate). Raises UnknownModel."""
    return _table(overrides).estimate(provider, model, input_chars, max_output_tokens)
