"""ExtractiveProvider: cards from a document's own headings and sentences, offline."""

from __future__ import annotations

import re
from collections import Counter
from functools import partial
from typing import Final, Self, final

import trio

from .._recipe import STUDY_CARDS, FieldType, Recipe
from ..errors import DocumentError, InputError
from ..model import CardDraft, Document, Usage
from ._base import Analysis, fingerprint
from ._reading import read_off_loop
from ._text import Section, sections, sentences

__all__ = ["ExtractiveProvider"]

# The way cards are picked out of a document: a new value when it changes, so that
# answers of the old way are not reused.
_METHOD: Final = "sections-and-sentences/1"

_STOPWORDS: Final = frozenset(
    """a about above after again against all also am an and any are as at be because been
    before being below between both but by can could did do does doing down during each
    few for from further had has have having he her here hers herself him himself his
    how i if in into is it its itself just me more most my myself no nor not now of off
    on once only or other our ours ourselves out over own same she should so some such
    than that the their theirs them themselves then there these they this those through
    to too under until up very was we were what when where which while who whom why will
    with would you your yours yourself yourselves one two may must use used using get
    gets every many much via per like make makes made well way ways thing things""".split()  # noqa: SIM905
)
# List fields the document's most frequent words honestly fill.
_TAG_FIELDS: Final = frozenset({"tags", "keywords", "topics"})
_WORD: Final = re.compile(r"[A-Za-z][A-Za-z'-]{2,}")


@final
class ExtractiveProvider:
    """Offline, deterministic cards: one per section, from the document's own words.

    Like every provider, it is an async context manager (`async with
    ExtractiveProvider() as provider:`), so it can take another provider's place.

    Each card takes the section heading as its title (or the first sentence, shortened,
    where there is none), the section's leading sentences as its body, its first
    sentence as the quote and its most frequent content words as tags. Markdown, HTML,
    plain text and PDF (through pypdf, in a worker process) are read; anything else
    fails with a reason.

    With a recipe, the same pieces fill its fields: the first string field takes the
    title, the next one the body, a string field named ``quote`` the quote, a list
    field named ``tags``, ``keywords`` or ``topics`` the tags. It serves the built-in
    recipes; for a recipe of your own, the fields it cannot fill (enums, numbers, flags,
    further strings, other lists) are named by `unfilled` and `warning`, and the cards
    leave them out.

    Args:
        max_cards: the most cards per document; the recipe's by default.
        body_sentences: how many leading sentences make a card's body.
        parse_timeout: seconds one document may take to read before it fails.
        recipe: the card fields to fill (`STUDY_CARDS` by default).

    Raises:
        InputError: the recipe has a required field this provider cannot fill; the
            message names the fields.
    """

    name = "extractive"

    def __init__(
        self,
        *,
        max_cards: int | None = None,
        body_sentences: int = 3,
        parse_timeout: float = 60.0,
        recipe: Recipe = STUDY_CARDS,
    ) -> None:
        if not isinstance(recipe, Recipe):
            raise InputError(f"recipe must be a Recipe, not {type(recipe).__name__}")
        if max_cards is None:
            max_cards = recipe.max_cards
        if max_cards < 1:
            raise ValueError("max_cards must be >= 1")
        if body_sentences < 1:
            raise ValueError("body_sentences must be >= 1")
        if not parse_timeout > 0:
            raise ValueError("parse_timeout must be > 0")
        self.recipe = recipe
        self._plan = fill_plan(recipe)
        self.unfilled: tuple[str, ...] = tuple(
            f.name for f in recipe.fields if f.name not in self._plan
        )
        """The recipe's fields this provider leaves out of its cards."""
        required = [f.name for f in recipe.fields if f.required and f.name not in self._plan]
        if required:
            raise InputError(
                f"recipe {recipe.name!r}: the offline extractive provider cannot fill the "
                f"required field{'s' if len(required) > 1 else ''} {', '.join(required)}; "
                "use a model (set an API key) or make them optional"
            )
        self.max_cards = max_cards
        self.body_sentences = body_sentences
        self.parse_timeout = parse_timeout
        self._limiter = trio.CapacityLimiter(4)

    def __repr__(self) -> str:
        return f"ExtractiveProvider(max_cards={self.max_cards}, recipe={self.recipe.name!r})"

    def request_fingerprint(self) -> str:
        """What determines this provider's cards besides the document: its settings and
        the recipe (see `cardmill.providers.request_fingerprint`)."""
        return fingerprint(
            self.name, _METHOD, self.recipe.digest, self.max_cards, self.body_sentences
        )

    @property
    def warning(self) -> str | None:
        """A one-line note naming the recipe fields left out of the cards, if any."""
        if not self.unfilled:
            return None
        return (
            f"the offline extractive provider cannot fill {', '.join(self.unfilled)} of "
            f"recipe {self.recipe.name!r}: its cards leave them out"
        )

    async def aclose(self) -> None:
        """Nothing to release; here so that every provider closes the same way."""
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> Self:
        await trio.lowlevel.checkpoint()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def analyze(self, document: Document) -> Analysis:
        """The cards for one document, read off the event loop under ``parse_timeout``.

        Raises:
            DocumentError: the document is unsupported, unreadable or has no text to
                make cards from, or was still being read at the deadline.
        """
        # pypdf can run away on a crafted PDF: PDFs are read in a process the deadline
        # kills. Text, Markdown and HTML readers take time linear in the document.
        cards = await read_off_loop(
            partial(extract_cards, max_cards=self.max_cards, body_sentences=self.body_sentences),
            document,
            limiter=self._limiter,
            seconds=self.parse_timeout,
            isolated=document.media_type == "application/pdf",
        )
        return Analysis(self._fit(cards), Usage())

    def extract(self, document: Document) -> tuple[CardDraft, ...]:
        """The cards for one document, synchronously."""
        return self._fit(
            extract_cards(document, max_cards=self.max_cards, body_sentences=self.body_sentences)
        )

    def _fit(self, cards: tuple[CardDraft, ...]) -> tuple[CardDraft, ...]:
        # Extraction makes study cards (plain values a worker process can send back);
        # the recipe's fields are filled here.
        if not self.recipe.stores_fields:
            return cards
        out = []
        for card in cards:
            pieces: dict[str, object] = {
                "title": card.title,
                "body": card.body,
                "quote": card.quote,
                "tags": list(card.tags),
            }
            values = {name: pieces[source] for name, source in self._plan.items()}
            out.append(self.recipe.draft(values))
        return tuple(out)


def fill_plan(recipe: Recipe) -> dict[str, str]:
    """Which piece of an extracted card fills each field it can: ``title``, ``body``,
    ``quote`` or ``tags``."""
    plan: dict[str, str] = {}
    strings = ["title", "body"]
    for field in recipe.fields:
        if field.type == FieldType.STRING and field.name == "quote":
            plan[field.name] = "quote"
        elif field.type == FieldType.STRING and strings:
            plan[field.name] = strings.pop(0)
        elif field.type == FieldType.LIST and field.name in _TAG_FIELDS:
            # The document's frequent words are its tags; they are not, say, its people.
            plan[field.name] = "tags"
    return plan


def extract_cards(
    document: Document, *, max_cards: int, body_sentences: int
) -> tuple[CardDraft, ...]:
    """The cards for one document (blocking; importable, so a worker process can run it)."""
    found = [s for s in sections(document) if s.paragraphs]
    if not found:
        raise DocumentError(f"{document.name}: no text to make cards from")
    found = _split_long_untitled(found)
    cards = []
    for section in found[:max_cards]:
        card = _card(section, body_sentences)
        if card is not None:
            cards.append(card)
    if not cards:
        raise DocumentError(f"{document.name}: no text to make cards from")
    return tuple(cards)


def _card(section: Section, body_sentences: int) -> CardDraft | None:
    text = " ".join(section.paragraphs)
    said = sentences(text)
    if not said:
        return None
    title = section.heading or _headline(said[0])
    body = " ".join(said[:body_sentences])
    return CardDraft.clipped(title, body, _tags(text, title), said[0])


def _split_long_untitled(found: list[Section]) -> list[Section]:
    """A document with no headings gets a card per paragraph rather than one for all."""
    if len(found) == 1 and not found[0].heading and len(found[0].paragraphs) > 1:
        return [Section("", (p,)) for p in found[0].paragraphs]
    return found


def _headline(sentence: str, words: int = 8) -> str:
    parts = sentence.rstrip(".!?").split()
    head = " ".join(parts[:words])
    return head + ("…" if len(parts) > words else "")


def _tags(text: str, title: str, n: int = 3) -> list[str]:
    counts = Counter(w.lower() for w in _WORD.findall(text) if w.lower() not in _STOPWORDS)
    for w in _WORD.findall(title):
        if w.lower() in counts:
            counts[w.lower()] += 2
    return [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]
