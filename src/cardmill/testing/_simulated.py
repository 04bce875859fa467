"""SimulatedAPI: a provider with hidden rate limits, living in trio (virtual) time."""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Mapping
from typing import Final, Literal, final

import attrs
import trio

from .._recipe import STUDY_CARDS, Recipe
from ..errors import Overloaded, RateLimited, TransientError
from ..model import CardDraft, Document, LimitKind, RateHint, Usage
from ..providers import Analysis
from ._fill import fill_schema
from ._hidden import HiddenLimits

__all__ = ["SimulatedAPI", "SimulatedStatistics", "lognormal"]

Latency = float | Callable[[random.Random], float]

#: Tokens per byte of document, by media type, unless told otherwise: text is about four
#: bytes a token; PDFs are charged for their pages' text and images.
TOKENS_PER_BYTE: Final[Mapping[str, float]] = {
    "text/plain": 0.25,
    "text/markdown": 0.25,
    "text/html": 0.2,
    "application/pdf": 0.45,
}


def lognormal(median: float, sigma: float) -> Callable[[random.Random], float]:
    """A latency distribution: lognormal with this median; sigma ~0.3 calm, ~1 heavy-tailed."""
    mu = math.log(median)
    return lambda rng: rng.lognormvariate(mu, sigma)


@final
@attrs.frozen
class SimulatedStatistics:
    """What the simulated provider saw.

    ``accepted_at`` / ``rejected_at`` are arrival times; ``accepted_tokens`` the input
    tokens charged for each accepted request, in the same order as ``accepted_at``.
    """

    requests: int
    accepted: int
    rate_limited: int
    overloaded: int
    errors: int
    accepted_at: tuple[float, ...]
    rejected_at: tuple[float, ...]
    accepted_tokens: tuple[int, ...] = ()


@final
class SimulatedAPI:
    """A provider backed by hidden token buckets, for tests and benchmarks in virtual time.

    Requests are admitted or refused (429) the moment they arrive, against a requests per
    minute bucket, an input tokens per minute bucket and an output tokens per minute
    bucket, each refilling continuously up to ``burst_seconds`` of its limit. Input
    tokens are the provider's own count of a document: by media type and size, off by
    up to ``token_noise`` either way in a way fixed per document, which the client cannot
    know before it sends (it sees the count afterwards, in the usage). A cached system
    prompt of ``cached_tokens`` is reported as cache reads, which do not count toward
    the input-token limit, as Anthropic does for its current models. Admitted requests
    take a latency drawn from ``latency``. The engine under test is not told the limits;
    it sees only 429s, Retry-After and (with ``headers=True``) the rate-limit headers.

    Args:
        requests_per_minute: the hidden request limit (None: unlimited).
        input_tokens_per_minute: the hidden input-token limit (None: unlimited).
        output_tokens_per_minute: the hidden output-token limit (None: unlimited).
        burst_seconds: bucket capacity in seconds of refill, for every limit or per limit
            (``{LimitKind.REQUESTS: 1.0}``: a strict per-second request bucket).
        latency: seconds per admitted request, or a distribution (see
            [`lognormal`][cardmill.testing.lognormal]).
        reject_latency: seconds before a 429 comes back.
        retry_after: ``"seconds"`` (whole seconds, rounded up, as ``retry-after`` is),
            ``"precise"`` (as ``retry-after-ms``) or ``None`` (no Retry-After at all).
        headers: report limit / remaining / reset as rate-limit headers would.
        overloaded_rate: share of requests answered 529.
        error_rate: share of requests answered 500.
        cards: cards per answer.
        output_tokens: output tokens per answer.
        tokens_per_byte: the provider's tokens per byte of document, by media type.
        token_noise: how far (a fraction) a document's true count may be from its size's
            guess, either way.
        overhead_tokens: uncached tokens of every request besides the document.
        cached_tokens: tokens of a cached prompt, read from the cache on every request.
        seed: for latencies, injected errors and token noise.
        limits: the hidden limits to enforce, instead of making them from the per-minute
            arguments: give two simulated clients the same `HiddenLimits` and they share
            one key, each seeing only its own requests in its statistics.
        recipe: the cards to answer with: for a recipe other than the study cards, each
            card's fields are plausible values made from the recipe's schema (words of
            the document's name, an enum's first choice, numbers in range).
    """

    name = "simulated"

    def __init__(
        self,
        *,
        requests_per_minute: float | None = None,
        input_tokens_per_minute: float | None = None,
        output_tokens_per_minute: float | None = None,
        burst_seconds: float | Mapping[LimitKind, float] = 60.0,
        latency: Latency = 1.0,
        reject_latency: float = 0.05,
        retry_after: Literal["seconds", "precise"] | None = "seconds",
        headers: bool = False,
        overloaded_rate: float = 0.0,
        error_rate: float = 0.0,
        cards: int = 3,
        output_tokens: int = 180,
        tokens_per_byte: Mapping[str, float] = TOKENS_PER_BYTE,
        token_noise: float = 0.0,
        overhead_tokens: int = 400,
        cached_tokens: int = 0,
        seed: int = 0,
        limits: HiddenLimits | None = None,
        recipe: Recipe = STUDY_CARDS,
    ) -> None:
        if not 0 <= token_noise < 1:
            raise ValueError("token_noise must be in [0, 1)")
        self._burst = burst_seconds
        self._latency = latency
        self._reject_latency = reject_latency
        self._retry_after = retry_after
        self._headers = headers
        self._overloaded_rate = overloaded_rate
        self._error_rate = error_rate
        self._cards = cards
        self.recipe = recipe
        self._output_tokens = output_tokens
        self._tokens_per_byte = dict(tokens_per_byte)
        self._token_noise = token_noise
        self._overhead = overhead_tokens
        self._cached = cached_tokens
        self._seed = seed
        self._rng = random.Random(seed)
        self._wanted = (requests_per_minute, input_tokens_per_minute, output_tokens_per_minute)
        self._limits: HiddenLimits | None = limits
        self._n = self._accepted = self._limited = self._overloaded = self._errors = 0
        self._accepted_at: list[float] = []
        self._accepted_tokens: list[int] = []
        self._rejected_at: list[float] = []

    def hidden_limits(self) -> HiddenLimits:
        """The limits this API enforces (made when first asked, in trio time): give them
        to another `SimulatedAPI` to have it share the key."""
        return self._hidden()

    def _hidden(self) -> HiddenLimits:
        # The hidden buckets start full when the first request arrives, in trio time.
        if self._limits is None:
            rpm, itpm, otpm = self._wanted
            self._limits = HiddenLimits(
                requests_per_minute=rpm,
                input_tokens_per_minute=itpm,
                output_tokens_per_minute=otpm,
                burst_seconds=self._burst,
                now=trio.current_time(),
            )
        return self._limits

    def set_limits(
        self,
        requests_per_minute: float | None = None,
        input_tokens_per_minute: float | None = None,
        output_tokens_per_minute: float | None = None,
    ) -> None:
        """Change the hidden limits now (call from inside trio)."""
        self._wanted = (requests_per_minute, input_tokens_per_minute, output_tokens_per_minute)
        self._hidden().set_limits(
            requests_per_minute,
            input_tokens_per_minute,
            output_tokens_per_minute,
            now=trio.current_time(),
        )

    @property
    def requests_per_minute(self) -> float | None:
        """The hidden request limit now."""
        return self._wanted[0]

    @property
    def input_tokens_per_minute(self) -> float | None:
        """The hidden input-token limit now."""
        return self._wanted[1]

    def input_tokens(self, document: Document) -> int:
        """The input tokens the provider charges for a request about ``document``: its
        overhead and the document's own count (cached prompt tokens excluded)."""
        per_byte = self._tokens_per_byte.get(document.media_type, 0.25)
        noise = 0.0
        if self._token_noise:
            digest = hashlib.sha256(f"{self._seed}:{document.sha256}".encode()).digest()
            unit = int.from_bytes(digest[:8], "big") / 2**64  # fixed per document
            noise = (2.0 * unit - 1.0) * self._token_noise
        return self._overhead + max(1, round(document.size * per_byte * (1.0 + noise)))

    def statistics(self) -> SimulatedStatistics:
        """A snapshot of what was asked and answered."""
        return SimulatedStatistics(
            self._n,
            self._accepted,
            self._limited,
            self._overloaded,
            self._errors,
            tuple(self._accepted_at),
            tuple(self._rejected_at),
            tuple(self._accepted_tokens),
        )

    def _hint(self, now: float) -> RateHint | None:
        return self._hidden().hint(now) if self._headers else None

    def _retry_after_for(self, wait: float) -> float | None:
        if self._retry_after == "precise":
            return wait
        if self._retry_after == "seconds":
            return float(max(1, math.ceil(wait)))
        return None

    async def analyze(self, document: Document) -> Analysis:
        now = trio.current_time()
        limits = self._hidden()
        self._n += 1
        roll = self._rng.random()
        if roll < self._overloaded_rate:
            self._overloaded += 1
            await trio.sleep(self._reject_latency)
            raise Overloaded("overloaded (529)")
        if roll < self._overloaded_rate + self._error_rate:
            self._errors += 1
            await trio.sleep(self._reject_latency)
            raise TransientError("internal server error (500)")
        cost = self.input_tokens(document)
        verdict = limits.admit(now, cost)
        if verdict.refused_by is not None:
            self._limited += 1
            self._rejected_at.append(now)
            hint = self._hint(now)
            await trio.sleep(self._reject_latency)
            raise RateLimited(
                f"rate limited (429): {verdict.refused_by.value} per minute",
                retry_after=self._retry_after_for(verdict.wait),
                limit=verdict.refused_by,
                hint=hint,
            )
        self._accepted += 1
        self._accepted_at.append(now)
        self._accepted_tokens.append(cost)
        hint = self._hint(now)
        latency = self._latency(self._rng) if callable(self._latency) else self._latency
        await trio.sleep(latency)
        if hint is not None:
            # Reset times are until the bucket is full, as of when the answer arrives.
            hint = attrs.evolve(
                hint,
                **{
                    f"{kind}_reset": max(0.0, reset - latency)
                    for kind in ("requests", "input_tokens", "output_tokens")
                    if (reset := getattr(hint, f"{kind}_reset")) is not None
                },
            )
        output = self._output_tokens
        limits.finish(trio.current_time(), output)
        if self.recipe.stores_fields:
            item = self.recipe.schema()["properties"]["cards"]["items"]
            cards = tuple(
                self.recipe.draft(fill_schema(item, f"{document.name} #{i + 1}", 3))
                for i in range(min(self._cards, self.recipe.max_cards))
            )
        else:
            cards = tuple(
                CardDraft(f"{document.name} #{i + 1}", f"simulated card {i + 1}")
                for i in range(self._cards)
            )
        return Analysis(cards, Usage(cost, output, cache_read_input_tokens=self._cached), hint)
