"""What a request will cost, guessed before it is sent (for caps and dry runs)."""

from __future__ import annotations

import math

from .._cost import Price, cost_of
from ..model import Document, Run, Usage
from ..providers import estimate_input_tokens

__all__ = ["estimate_cost", "expected_output_tokens"]


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
) -> float:
    """A deliberately generous USD guess of one request for ``document``.

    Input tokens by `estimate_input_tokens`, all uncached; output by
    `expected_output_tokens`; at the batch share of ``price`` with ``batch``.
    """
    usage = Usage(
        input_tokens=estimate_input_tokens(document),
        output_tokens=expected_output_tokens(max_tokens, run),
    )
    return cost_of(usage, price, batch=batch)
