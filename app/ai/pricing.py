"""The cost of an AI call in USD as Decimal, from the prices of the model catalogue.

Prices (USD per 1M input, cached-input and output tokens) live in the catalogue
(app/ai_catalog.py: app/ai_catalog.json, overridden per deployment by AI_CATALOG); this module
turns token counts into money. The baseline is free.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_UP, ROUND_UP, Decimal
from functools import lru_cache
from typing import Any

from app.ai_catalog import Catalog, Price, default_catalog

__all__ = [
    "EXTRA_PRICES",
    "MICRO",
    "Price",
    "PriceTable",
    "UnknownModel",
    "cost",
    "estimate",
    "is_priced",
    "usd",
]

MICRO = Decimal("0.000001")


def usd(value: Any) -> Decimal:
    """An amount as USD with the 6 decimals costs are kept with ("0.000000", "0.001576")."""
    return Decimal(value or 0).quantize(MICRO)


# Prices of models that code registers at process start (extensions such as plugins' own
# providers), consulted by every table after its catalogue's: an AI_CATALOG override keeps them.
EXTRA_PRICES: dict[tuple[str, str], Price] = {}

PER_TOKENS = Decimal(1_000_000)
CHARS_PER_TOKEN = 3  # deliberately pessimistic (English averages ~4) so estimates over-reserve


class UnknownModel(KeyError):
    """No price is known for (provider, model): the call cannot be costed."""

    def __init__(self, provider: str, model: str) -> None:
        super().__init__(provider, model)
        self.provider, self.model = provider, model

    def __str__(self) -> str:
        return (
            f"no price for model {self.model!r} of provider {self.provider!r}: "
            "add it to the model catalogue (app/ai_catalog.json or AI_CATALOG)"
        )


class PriceTable:
    """The prices of one catalogue, and the baseline's (free)."""

    def __init__(self, prices: Mapping[tuple[str, str], Price]) -> None:
        self.prices: dict[tuple[str, str], Price] = {
            **prices,
            ("baseline", "baseline"): Price(Decimal(0), Decimal(0)),
        }

    @classmethod
    def of(cls, catalog: Catalog) -> PriceTable:
        return _table_of(catalog)

    def is_priced(self, provider: str, model: str) -> bool:
        return (provider, model) in self.prices or (provider, model) in EXTRA_PRICES

    def price(self, provider: str, model: str) -> Price:
        found = self.prices.get((provider, model)) or EXTRA_PRICES.get((provider, model))
        if found is None:
            raise UnknownModel(provider, model)
        return found

    def cost(
        self,
        provider: str,
        model: str,
        input_tokens: int,
        output_tokens: int,
        cached_input_tokens: int = 0,
    ) -> Decimal:
        """The cost of a call, quantized to 0.000001 USD (half up). `cached_input_tokens` is
        the part of `input_tokens` the provider served from its prompt cache (billed at the
        cached-input price where the model has one)."""
        if input_tokens < 0 or output_tokens < 0 or not 0 <= cached_input_tokens <= input_tokens:
            raise ValueError("token counts must be >= 0 (cached ones at most the input tokens)")
        price = self.price(provider, model)
        cached_price = price.cached_input_per_mtok
        if cached_price is None:
            cached_price = price.input_per_mtok
        raw = (
            (input_tokens - cached_input_tokens) * price.input_per_mtok
            + cached_input_tokens * cached_price
            + output_tokens * price.output_per_mtok
        ) / PER_TOKENS
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


@lru_cache(maxsize=8)
def _table_of(catalog: Catalog) -> PriceTable:
    return PriceTable({(c.provider, c.model): e.price for c, e in catalog.models.items()})


def _table(catalog: Catalog | None) -> PriceTable:
    return _table_of(catalog if catalog is not None else default_catalog())


def is_priced(provider: str, model: str, *, catalog: Catalog | None = None) -> bool:
    """Whether calls of this model can be costed (cost() would not raise UnknownModel)."""
    return _table(catalog).is_priced(provider, model)


def cost(
    provider: str,
    model: str,
    input_tokens: int,
    output_tokens: int,
    *,
    cached_input_tokens: int = 0,
    catalog: Catalog | None = None,
) -> Decimal:
    """The cost of a call in USD (see PriceTable.cost). Raises UnknownModel."""
    return _table(catalog).cost(provider, model, input_tokens, output_tokens, cached_input_tokens)


def estimate(
    provider: str,
    model: str,
    input_chars: int,
    max_output_tokens: int,
    *,
    catalog: Catalog | None = None,
) -> Decimal:
    """An upper-bound cost for reserving budget (see PriceTable.estimate). Raises UnknownModel."""
    return _table(catalog).estimate(provider, model, input_chars, max_output_tokens)
