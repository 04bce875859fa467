"""What requests cost: a dated price table per model, and the cost of a usage report."""

from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final, final

import attrs

from ._rates import Usage
from ._toml import parse_toml
from .errors import InputError

__all__ = ["DEFAULT_PRICES", "MAX_COST_USD", "Price", "PriceTable", "cost_of", "shown_cost", "usd"]

MAX_COST_USD: Final = 1_000_000.0
"""The most one request is taken to cost (and one settlement may record): a price table
that says more (a hostile or mistyped prices file) is capped here, so the answer is
still stored and the spending cap still stops the run."""
MAX_PRICES_BYTES: Final = 1_000_000
"""The largest prices file read (a price table is a few kilobytes)."""


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


def _threshold(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"long_prompt_above must be a whole number of tokens >= 0, not {value!r}")
    return value


@final
@attrs.frozen
class Price:
    """USD per million tokens of one model.

    Some models charge more for every token of a request whose prompt is long: above
    ``long_prompt_above`` prompt tokens (uncached input, cache reads and cache writes of
    the request), the whole request is priced at ``long_prompt``, and in a batch pays
    ``long_prompt``'s ``batch_share``.

    Args:
        input: uncached input tokens.
        output: output tokens.
        cache_write: input tokens written to the prompt cache.
        cache_read: input tokens read from the prompt cache.
        batch_share: the share of every price paid through the batch API (0.5: half).
        long_prompt_above: the prompt size (tokens) above which ``long_prompt`` applies.
        long_prompt: the price of a request with a longer prompt.

    Raises:
        InputError: a price that is negative or not a finite number, a batch share above
            1, or only one of ``long_prompt_above`` and ``long_prompt``.
    """

    input: float = attrs.field(converter=_price)
    output: float = attrs.field(converter=_price)
    cache_write: float = attrs.field(converter=_price)
    cache_read: float = attrs.field(converter=_price)
    batch_share: float = attrs.field(default=0.5, converter=_discount)
    long_prompt_above: int | None = attrs.field(default=None, converter=_threshold)
    long_prompt: Price | None = None

    def __attrs_post_init__(self) -> None:
        if (self.long_prompt_above is None) != (self.long_prompt is None):
            raise InputError("long_prompt_above and long_prompt go together")
        if self.long_prompt is not None and self.long_prompt.long_prompt is not None:
            raise InputError("a long_prompt price cannot have a long_prompt of its own")

    def for_prompt(self, prompt_tokens: int) -> Price:
        """The price of a request with ``prompt_tokens`` of prompt."""
        if self.long_prompt is not None and prompt_tokens > (self.long_prompt_above or 0):
            return self.long_prompt
        return self


FREE: Final = Price(0, 0, 0, 0)
"""The price of requests that cost nothing (the offline extractive provider's)."""


def cost_of(usage: Usage, price: Price, *, batch: bool = False) -> float:
    """The USD cost of one request's ``usage`` at ``price`` (the batch share of it with
    ``batch``).

    The prompt-length band of ``price`` is chosen from this usage (a batch pays that
    band's ``batch_share``), so price each request
    on its own and add the costs up: the cost of summed usages may differ. It is at most
    `MAX_COST_USD`.
    """
    prompt = usage.input_tokens + usage.cache_read_input_tokens + usage.cache_creation_input_tokens
    band = price.for_prompt(prompt)
    millionths = (
        usage.input_tokens * band.input
        + usage.output_tokens * band.output
        + usage.cache_creation_input_tokens * band.cache_write
        + usage.cache_read_input_tokens * band.cache_read
    )
    cost = millionths / 1_000_000
    if batch:
        # A long prompt's band has its own batch share (a prices file may set it).
        cost *= band.batch_share
    return min(cost, MAX_COST_USD)


def usd(amount: float) -> str:
    """``$0.00`` for nothing, else four decimals: ``$0.0123``."""
    return "$0.00" if amount == 0 else f"${amount:.4f}"


def shown_cost(cost_usd: float, usage: Usage) -> str:
    """A recorded cost as the command line and the viewer show it: "unknown" when tokens
    were used but nothing was priced (the model had no price), else `usd`."""
    if cost_usd == 0 and (usage.input_tokens or usage.output_tokens):
        return "unknown"
    return usd(cost_usd)


def _frozen(prices: Mapping[str, Price]) -> Mapping[str, Price]:
    return MappingProxyType(dict(prices))


_DATE_SUFFIX: Final = re.compile(r"-(\d{8}|latest)$")
_PRICE_KEYS: Final = ("input", "output", "cache_write", "cache_read", "batch_share")


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

    @classmethod
    def from_toml(
        cls, path: str | os.PathLike[str], *, base: PriceTable | None = None
    ) -> PriceTable:
        """Prices from a TOML file, over ``base`` (`DEFAULT_PRICES` unless given).

        The file (USD per million tokens)::

            as_of = "2026-11-20"          # optional
            [models."claude-haiku-5-5"]
            input = 0.10
            output = 0.50
            cache_write = 0.125           # optional: 1.25 x input
            cache_read = 0.01             # optional: 0.1 x input
            batch_share = 0.5             # optional: 0.5
            long_prompt_above = 100000    # optional, with [models."…".long_prompt]
            [models."claude-haiku-5-5".long_prompt]
            input = 0.50
            output = 2.50
            batch_share = 0.5             # optional: the model's batch_share

        Raises:
            InputError: one line naming the file and the key: an unreadable or
                oversized file, bad TOML, an unknown key, a missing or bad price.
        """
        name = os.fspath(path)
        data = _parse(name, _read(name))
        table = PriceTable(
            {model: _model_price(name, model, entry) for model, entry in _models(name, data)},
            as_of=_text(name, data, "as_of"),
            source=_text(name, data, "source") or name,
        )
        return (DEFAULT_PRICES if base is None else base).merged(table)


def _read(name: str) -> bytes:
    try:
        # Non-blocking: opening a FIFO for reading would otherwise wait for a writer
        # before the check below could refuse it.
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK)
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise InputError(f"{name}: the prices file is not a regular file")
            data = f.read(MAX_PRICES_BYTES + 1)
    except OSError as exc:
        raise InputError(f"{name}: cannot read the prices file ({exc.strerror})") from None
    if len(data) > MAX_PRICES_BYTES:
        raise InputError(f"{name}: the prices file is larger than {MAX_PRICES_BYTES} bytes")
    return data


def _parse(name: str, data: bytes) -> dict[str, Any]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{name}: the prices file is not UTF-8 text") from None
    return parse_toml(text, name)


def _text(name: str, data: dict[str, Any], key: str) -> str:
    value = data.get(key, "")
    if not isinstance(value, str) or not value.isprintable() or len(value) > 200:
        raise InputError(f"{name}: {key} must be a short line of text")
    return value


def _models(name: str, data: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    unknown = sorted(set(data) - {"models", "as_of", "source"})
    if unknown:
        raise InputError(f"{name}: unknown key {unknown[0]!r} (expected models, as_of, source)")
    models = data.get("models")
    if not isinstance(models, dict) or not models:
        raise InputError(f'{name}: no [models."NAME"] table')
    found = []
    for model, entry in models.items():
        if not model or not model.isprintable() or len(model) > 200:
            raise InputError(f"{name}: models.{model!r}: not a model name")
        if not isinstance(entry, dict):
            raise InputError(f'{name}: models."{model}" must be a table of prices')
        found.append((model, entry))
    return found


def _model_price(name: str, model: str, entry: dict[str, Any]) -> Price:
    where = f'models."{model}"'
    allowed = {*_PRICE_KEYS, "long_prompt_above", "long_prompt"}
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise InputError(f"{name}: {where}.{unknown[0]}: unknown key")
    long = entry.get("long_prompt")
    if long is not None and not isinstance(long, dict):
        raise InputError(f"{name}: {where}.long_prompt must be a table of prices")
    if long is not None and set(long) - set(_PRICE_KEYS):
        bad = sorted(set(long) - set(_PRICE_KEYS))[0]
        raise InputError(f"{name}: {where}.long_prompt.{bad}: unknown key")
    if (long is None) != ("long_prompt_above" not in entry):
        raise InputError(f"{name}: {where}: long_prompt_above and long_prompt go together")
    share = entry.get("batch_share", 0.5)
    try:
        longer = None if long is None else _band(name, f"{where}.long_prompt", long, share)
        above = _threshold(entry.get("long_prompt_above"))
    except InputError as exc:
        raise InputError(f"{name}: {where}.long_prompt_above: {exc}") from None
    band = _band(name, where, entry, share)
    return attrs.evolve(band, long_prompt_above=above, long_prompt=longer)


def _band(name: str, where: str, entry: dict[str, Any], share: object) -> Price:
    values: dict[str, float] = {}
    for key in ("input", "output"):
        if key not in entry:
            raise InputError(f"{name}: {where}.{key}: missing")
    for key in _PRICE_KEYS:
        if key not in entry:
            continue
        try:
            values[key] = _discount(entry[key]) if key == "batch_share" else _price(entry[key])
        except InputError as exc:
            raise InputError(f"{name}: {where}.{key}: {exc}") from None
    try:
        share_value = _discount(share)
    except InputError as exc:
        raise InputError(f"{name}: {where}.batch_share: {exc}") from None
    return Price(
        values["input"],
        values["output"],
        cache_write=values.get("cache_write", values["input"] * 1.25),
        cache_read=values.get("cache_read", values["input"] * 0.1),
        batch_share=values.get("batch_share", share_value),
    )


def _claude(
    input: float,
    output: float,
    cache_read: float,
    *,
    above: int | None = None,
    long: Price | None = None,
) -> Price:
    # Five-minute cache writes cost 1.25 x input; batches half of every price.
    return Price(
        input,
        output,
        cache_write=input * 1.25,
        cache_read=cache_read,
        long_prompt_above=above,
        long_prompt=long,
    )


DEFAULT_PRICES: Final = PriceTable(
    {
        # Haiku 5.5 prices every token of a request whose prompt passes 100,000 tokens
        # at five times the rate.
        "claude-haiku-5-5": _claude(
            0.10, 0.50, 0.01, above=100_000, long=_claude(0.50, 2.50, 0.05)
        ),
        "claude-sonnet-5-5": _claude(2.0, 10.0, 0.10),
        "claude-opus-5-5": _claude(4.0, 20.0, 0.20),
        "claude-fable-5-1": _claude(10.0, 50.0, 0.25),
        "claude-mythos-5-1": _claude(10.0, 50.0, 0.25),
        "claude-fable-5": _claude(10.0, 50.0, 1.0),
        "claude-mythos-5": _claude(10.0, 50.0, 1.0),
        "claude-sonnet-5": _claude(2.0, 10.0, 0.20),
        "claude-opus-5": _claude(5.0, 25.0, 0.50),
        "claude-opus-4-8": _claude(5.0, 25.0, 0.50),
        "claude-opus-4-7": _claude(5.0, 25.0, 0.50),
        "claude-opus-4-6": _claude(5.0, 25.0, 0.50),
        "claude-opus-4-5": _claude(5.0, 25.0, 0.50),
        "claude-sonnet-4-6": _claude(3.0, 15.0, 0.30),
        # Sonnet 4.5's prompts over 200K tokens (its 1M context) cost more.
        "claude-sonnet-4-5": _claude(
            3.0, 15.0, 0.30, above=200_000, long=_claude(6.0, 22.50, 0.60)
        ),
        "claude-haiku-4-5": _claude(1.0, 5.0, 0.10),
    },
    as_of="2026-10-24",
    source="https://platform.claude.com/docs/en/about-claude/pricing",
)
"""Anthropic's published prices per million tokens (USD, standard API, five-minute
cache writes; batches at half price), as listed on 2026-10-24 on Anthropic's pricing
page and model overview pages (https://platform.claude.com/docs/en/about-claude/pricing;
Sonnet 5.5's cache reads as cut on 2026-10-07). Models the installed ``anthropic`` SDK
lists whose price was not published there (``claude-fable-5-2``, ``claude-mythos-5-2``,
``claude-mythos-preview``) are left out, not guessed: their cost is unknown. Give your
own with `PriceTable.from_toml` (the CLI's ``--prices FILE``)."""
