"""What requests cost: a dated price table per model, and the cost of a usage report."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, final

import attrs

from ._rates import Usage
from .errors import InputError

__all__ = ["DEFAULT_PRICES", "Price", "PriceTable", "cost_of"]


def _price(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"a price must be a finite number of USD, not {value!r}")
    if value < 0:
        raise InputError(f"a price cannot be negative: {value!r}")
    return float(value)


def _discount(value: object) -> float:
    share = _price(value)
    if share > 1:
        raise InputError(f"batch_share is the share of the price paid in a batch, <= 1: {share}")
    return share


@final
@attrs.frozen
class Price:
    """USD per million tokens of one model.

    Args:
        input: uncached input tokens.
        output: output tokens.
        cache_write: input tokens written to the prompt cache.
        cache_read: input tokens read from the prompt cache.
        batch_share: the share of every price paid through the batch API (0.5: half).
    """

    input: float = attrs.field(converter=_price)
    output: float = attrs.field(converter=_price)
    cache_write: float = attrs.field(converter=_price)
    cache_read: float = attrs.field(converter=_price)
    batch_share: float = attrs.field(default=0.5, converter=_discount)


def cost_of(usage: Usage, price: Price, *, batch: bool = False) -> float:
    """The USD cost of ``usage`` at ``price`` (the batch share of it with ``batch``)."""
    millionths = (
        usage.input_tokens * price.input
        + usage.output_tokens * price.output
        + usage.cache_creation_input_tokens * price.cache_write
        + usage.cache_read_input_tokens * price.cache_read
    )
    cost = millionths / 1_000_000
    return cost * price.batch_share if batch else cost


def _frozen(prices: Mapping[str, Price]) -> Mapping[str, Price]:
    return MappingProxyType(dict(prices))


_DATE_SUFFIX: Final = re.compile(r"-(\d{8}|latest)$")


@final
@attrs.frozen
class PriceTable:
    """Prices per model, as published on ``as_of`` (an ISO date) at ``source``.

    `price_for` finds a model by its exact name, then without a date suffix
    (``claude-haiku-4-5-20251001`` is priced as ``claude-haiku-4-5``).
    """

    prices: Mapping[str, Price] = attrs.field(converter=_frozen)
    as_of: str = ""
    source: str = ""

    def price_for(self, model: str) -> Price | None:
        """The model's price, or None when the table does not know it."""
        found = self.prices.get(model)
        if found is None:
            found = self.prices.get(_DATE_SUFFIX.sub("", model))
        return found

    def merged(self, other: PriceTable) -> PriceTable:
        """This table with ``other``'s prices taking precedence."""
        return PriceTable(
            {**self.prices, **other.prices},
            as_of=other.as_of or self.as_of,
            source=other.source or self.source,
        )


def _anthropic(input: float, output: float, *, read_share: float = 0.1) -> Price:
    # Five-minute cache writes cost 1.25 x input; reads a tenth (or less) of it.
    return Price(input, output, cache_write=input * 1.25, cache_read=input * read_share)


DEFAULT_PRICES: Final = PriceTable(
    {
        "claude-haiku-4-5": _anthropic(1.0, 5.0),
        "claude-sonnet-4-5": _anthropic(3.0, 15.0),
        "claude-sonnet-4-6": _anthropic(3.0, 15.0),
        "claude-opus-4-5": _anthropic(5.0, 25.0),
        "claude-opus-4-6": _anthropic(5.0, 25.0),
    },
    as_of="2026-11-01",
    source="https://platform.claude.com/docs/en/about-claude/pricing",
)
"""Anthropic's published prices per million tokens (standard, at most 200K input tokens;
batches at half price). Give your own with `PriceTable` (the CLI's ``--prices FILE``)."""
