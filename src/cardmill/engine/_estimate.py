"""What a request will cost, guessed before it is sent (for caps and dry runs)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Final, final

from .._cost import Price, cost_of
from ..model import Document, Run, Upload, Usage
from ..providers import estimate_input_tokens

__all__ = ["Estimates", "estimate_cost", "expected_output_tokens"]

#: The most the answers may scale the input estimate up by (a reported usage that says
#: more is taken to be wrong, not a reason to stop every run at once).
_MAX_SCALE: Final = 100.0


def expected_output_tokens(max_tokens: int, run: Run | None = None) -> int:
    """The output tokens to budget for one more request of ``run``.

    Until the run has settled answers, the whole ``max_tokens`` (no answer can be longer);
    then one and a half times the mean output of its settled uploads, never more than
    ``max_tokens``: generous, so a cap is reached early rather than passed.
    """
    settled = 0 if run is None else run.completed_items + run.failed_items
    if run is None or settled == 0 or run.usage.output_tokens == 0:
        return max_tokens
    return min(max_tokens, math.ceil(1.5 * run.usage.output_tokens / settled))


def estimate_cost(
    document: Document,
    price: Price,
    *,
    max_tokens: int,
    run: Run | None = None,
    batch: bool = False,
    overhead_tokens: int | None = None,
) -> float:
    """A deliberately generous USD guess of one request for ``document``.

    Input tokens by `estimate_input_tokens` with ``overhead_tokens`` (what each request
    carries besides the document: the provider's
    [`request_overhead_tokens`][cardmill.providers.request_overhead_tokens]), all
    uncached; output by `expected_output_tokens`; at the batch share of ``price`` with
    ``batch``.
    """
    usage = Usage(
        input_tokens=estimate_input_tokens(document, overhead=overhead_tokens),
        output_tokens=expected_output_tokens(max_tokens, run),
    )
    return cost_of(usage, price, batch=batch)


def _prompt(usage: Usage) -> int:
    return usage.input_tokens + usage.cache_read_input_tokens + usage.cache_creation_input_tokens


@final
class Estimates:
    """`estimate_cost` for one provider's requests, corrected by the answers: when the
    prompts they report are longer than their estimates said (a provider that does not
    count its prompt, a tokenizer denser than the rule of thumb), every later estimate
    is scaled up by as much, over all answers seen. Never down: the estimate stays
    generous."""

    def __init__(
        self, price: Price | None, *, max_tokens: int, overhead_tokens: int, batch: bool = False
    ) -> None:
        self._price = price
        self._max_tokens = max_tokens
        self._overhead = overhead_tokens
        self._batch = batch
        self._reported = 0
        self._expected = 0

    @property
    def learnt(self) -> bool:
        """Whether an answer has told how long the prompts really are."""
        return self._expected > 0

    @property
    def scale(self) -> float:
        """How much the answers say the input estimates miss (at least 1)."""
        if self._expected <= 0:
            return 1.0
        return min(max(1.0, self._reported / self._expected), _MAX_SCALE)

    def input_tokens(self, item: Document | Upload) -> int:
        """The input tokens of a request for ``item``, as learnt so far."""
        return math.ceil(self.scale * estimate_input_tokens(item, overhead=self._overhead))

    def cost(self, document: Document | Upload, run: Run | None = None) -> float:
        """The cost of one request for ``document`` (0 without a price)."""
        if self._price is None:
            return 0.0
        usage = Usage(
            input_tokens=self.input_tokens(document),
            output_tokens=expected_output_tokens(self._max_tokens, run),
        )
        return cost_of(usage, self._price, batch=self._batch)

    def observe(self, item: Document | Upload, usage: object, *, requests: int = 1) -> None:
        """``requests`` requests for ``item`` reported ``usage`` (their sum)."""
        if not isinstance(usage, Usage) or requests < 1 or _prompt(usage) <= 0:
            return
        self._reported += _prompt(usage)
        self._expected += requests * estimate_input_tokens(item, overhead=self._overhead)

    def seed(self, uploads: Iterable[Upload]) -> None:
        """Learn from the requests already recorded with the run's ``uploads``."""
        for upload in uploads:
            self.observe(upload, upload.usage, requests=upload.requests - upload.rate_limited)
