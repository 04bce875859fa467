"""TokenEstimator: a request's input tokens, guessed before it is sent, learnt after.

The provider counts a document's tokens with its own tokenizer and, for PDFs, its own
page rendering; the client sees the count only in the answer's usage. So the guess
starts from a generous rule of thumb (``estimate_input_tokens``) and then follows what
the provider reported, per media type: a least-squares line ``tokens = a + b * bytes``
over the answers seen, which also learns the request's fixed overhead (prompt, schema)
and leaves out cached prompt tokens when the provider does not count them.
"""

from __future__ import annotations

import math
from typing import Final, final

from ..model import Document
from ..providers import estimate_input_tokens

__all__ = ["TokenEstimator"]

_PRIOR_WEIGHT: Final = 8.0  # the rule of thumb counts as this many answers
_DECAY: Final = 0.995  # older answers weigh a little less: what the provider counts may drift


class _Fit:
    """Weighted running sums for a line through (bytes, tokens) points."""

    __slots__ = ("n", "w", "x", "xx", "xy", "y")

    def __init__(self) -> None:
        self.n = 0
        self.w = self.x = self.y = self.xx = self.xy = 0.0

    def add(self, x: float, y: float) -> None:
        for name in ("w", "x", "y", "xx", "xy"):
            setattr(self, name, getattr(self, name) * _DECAY)
        self.n += 1
        self.w += 1.0
        self.x += x
        self.y += y
        self.xx += x * x
        self.xy += x * y

    def predict(self, x: float) -> float | None:
        if self.n < 2 or self.w <= 0:
            return None
        mean_x, mean_y = self.x / self.w, self.y / self.w
        var = self.xx / self.w - mean_x * mean_x
        if var <= 1e-9 * max(1.0, mean_x * mean_x):
            # Every document the same size so far: scale the mean by size.
            return mean_y * (x / mean_x) if mean_x > 0 else mean_y
        slope = (self.xy / self.w - mean_x * mean_y) / var
        slope = max(slope, 0.0)
        intercept = max(mean_y - slope * mean_x, 0.0)
        return intercept + slope * x


@final
class TokenEstimator:
    """Guesses a request's input tokens from its document, and learns from usage."""

    def __init__(self) -> None:
        self._fits: dict[str, _Fit] = {}

    def estimate(self, document: Document) -> float:
        """The input tokens a request about ``document`` will most likely be charged."""
        prior = float(estimate_input_tokens(document))
        fit = self._fits.get(document.media_type)
        learnt = None if fit is None else fit.predict(float(document.size))
        if fit is None or learnt is None or not math.isfinite(learnt):
            return prior
        # A few answers say little (sizes may all be alike): lean on the rule of thumb
        # until there are enough, and never stray past ten times either way from it.
        weight = fit.w / (fit.w + _PRIOR_WEIGHT)
        guess = weight * learnt + (1.0 - weight) * prior
        return min(max(guess, prior / 10.0), prior * 10.0)

    def observe(self, document: Document, charged: int) -> None:
        """The provider charged ``charged`` input tokens for a request about ``document``."""
        if charged > 0:
            fit = self._fits.setdefault(document.media_type, _Fit())
            fit.add(float(document.size), float(charged))
