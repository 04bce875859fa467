"""ScriptedProvider: say what each document's requests will do, in trio time."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import final

import attrs
import trio

from ..model import CardDraft, Document, RateHint, Usage
from ..providers import Analysis

__all__ = ["ScriptedProvider", "Step"]


@final
@attrs.frozen
class Step:
    """One request's outcome: wait ``latency`` seconds, then raise ``error`` or answer.

    Args:
        latency: trio seconds the request takes.
        cards: how many cards to answer with, or the drafts themselves.
        error: raise this instead of answering (a ProviderError, a DocumentError, or any
            exception, to see what the engine makes of a provider bug).
        usage: the usage to report.
        hint: rate-limit headers to report.
        model: the model the answer names (None: it names none).
    """

    latency: float = 0.0
    cards: int | tuple[CardDraft, ...] = 1
    error: Exception | None = None
    usage: Usage = attrs.field(factory=lambda: Usage(input_tokens=100, output_tokens=50))
    hint: RateHint | None = None
    model: str | None = None


@final
class ScriptedProvider:
    """A provider whose every answer is written in advance, per document name.

    Each document's requests take the steps of its script in turn; when the script runs
    out (or the document has none) ``default`` answers. It counts calls and the peak
    number in flight, and keeps every answer it gave
    ([`answers`][cardmill.testing.ScriptedProvider.answers]), so tests can check what
    the engine did. Generated cards say which answer they came from (``answer N`` in the
    body), so two answers for one document are never alike.

    Its answers are not reused by later runs unless it is given a ``fingerprint`` (what
    a real provider's request would be, say ``"v1"``): then the engine keeps them and
    completes later uploads of the same content from them, as with a real provider (see
    [reuse](../reuse.md)).

    Example:
        ```python
        provider = ScriptedProvider(
            {"a.md": [Step(1.0, error=TransientError("reset")), Step(1.0, cards=3)]},
            default=Step(latency=1.0, cards=2),
        )
        ```
    """

    def __init__(
        self,
        script: Mapping[str, Sequence[Step]] | None = None,
        *,
        default: Step = Step(),
        name: str = "scripted",
        fingerprint: str | None = None,
    ) -> None:
        self.name = name
        self.fingerprint = fingerprint
        """What stands for its request in answer keys; None: its answers are never
        reused."""
        self._script = {k: list(v) for k, v in (script or {}).items()}
        self._default = default
        self.calls: list[tuple[str, float]] = []
        """Every request: the document's name and the trio time it arrived."""
        self.answers: list[tuple[str, tuple[CardDraft, ...]]] = []
        """Every answer given: the document's name and the drafts, in order."""
        self.in_flight = 0
        """Requests being answered now."""
        self.peak_in_flight = 0
        """The most requests that were ever being answered at once."""

    def request_fingerprint(self) -> str | None:
        """``fingerprint``, with the provider's name (see
        `cardmill.providers.request_fingerprint`)."""
        return None if self.fingerprint is None else f"{self.name}:{self.fingerprint}"

    def calls_for(self, name: str) -> int:
        """How many requests were made for the document called ``name``."""
        return sum(1 for n, _ in self.calls if n == name)

    async def analyze(self, document: Document) -> Analysis:
        steps = self._script.get(document.name)
        step = steps.pop(0) if steps else self._default
        self.calls.append((document.name, trio.current_time()))
        number = len(self.calls)
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            await trio.sleep(step.latency)
        finally:
            self.in_flight -= 1
        if step.error is not None:
            raise step.error
        if isinstance(step.cards, int):
            cards = tuple(
                CardDraft(
                    f"{document.name} #{i + 1}",
                    f"card {i + 1} of {document.name}, answer {number}",
                )
                for i in range(step.cards)
            )
        else:
            cards = step.cards
        self.answers.append((document.name, cards))
        return Analysis(cards, step.usage, step.hint, step.model)
