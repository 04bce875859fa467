"""Text in any common encoding is read as the text it is; only binary content is refused."""

from __future__ import annotations

import random

import pytest

from cardmill import Document, DocumentError
from cardmill.providers import ExtractiveProvider
from cardmill.providers._text import decode_text

FRENCH = "Le café crème et la crème brûlée sont délicieux. Où est la gare ? Voilà, à gauche."
QUOTES = "\u201cSmart quotes\u201d aren\u2019t ASCII \u2014 they\u2019re cp1252. Caf\u00e9 \u20ac5."
JAPANESE = "潮の満ち引きは月の引力によって起こります。一日に二回、海面が上下します。"
CHINESE = "潮汐是由月球引力引起的。每天海水涨落两次。水手们据此安排航行。"
ITALIAN = "Perché è così difficile? Più tardi andrò là, però non so quando sarà pronto."
RUSSIAN = "Съешь же ещё этих мягких французских булок, да выпей чаю."
LITHUANIAN = "Įlinkdama fechtuotojo špaga sublykčiojusi pragręžė apvalų arbūzą. Ačiū labai."
CZECH = "Příliš žluťoučký kůň úpěl ďábelské ódy. Česká republika leží ve střední Evropě."

TEXTS = [
    (FRENCH.encode("latin-1"), FRENCH),
    ("naïve façade".encode("latin-1"), "naïve façade"),
    (QUOTES.encode("cp1252"), QUOTES),
    (JAPANESE.encode("shift_jis"), JAPANESE),
    (CHINESE.encode("gb18030"), CHINESE),
    (ITALIAN.encode("latin-1"), ITALIAN),
    (CZECH.encode("cp1250"), CZECH),
    (LITHUANIAN.encode("cp1257"), LITHUANIAN),
    (RUSSIAN.encode("cp1251"), RUSSIAN),
    (FRENCH.encode("utf-8"), FRENCH),
    (b"\xef\xbb\xbf" + FRENCH.encode("utf-8"), FRENCH),
    ("\ufeff".encode("utf-16-le") + FRENCH.encode("utf-16-le"), FRENCH),
]
TEXT_IDS = [
    "latin-1",
    "latin-1-short",
    "cp1252-smart-quotes",
    "shift-jis",
    "gb18030",
    "latin-1-italian",
    "cp1250",
    "cp1257",
    "cp1251",
    "utf-8",
    "utf-8-bom",
    "utf-16-bom",
]


@pytest.mark.parametrize(("data", "text"), TEXTS, ids=TEXT_IDS)
def test_text_in_its_encoding_is_read_as_written(data: bytes, text: str) -> None:
    assert decode_text(Document("notes.txt", data, "text/plain")) == text


@pytest.mark.parametrize(("data", "text"), TEXTS, ids=TEXT_IDS)
async def test_cards_are_made_from_text_in_any_encoding(data: bytes, text: str) -> None:
    analysis = await ExtractiveProvider().analyze(Document("notes.txt", data, "text/plain"))
    assert " ".join(card.body for card in analysis.cards) == " ".join(text.split())


NOISE = bytes(b for b in random.Random(0).randbytes(8192) if b)  # no NUL to give it away
JUNK = [bytes(range(256)) * 4, NOISE, b"\x89PNG\r\n\x1a\n" + NOISE[:2048]]


@pytest.mark.parametrize("data", JUNK, ids=["all-bytes", "random-without-nul", "png-like"])
def test_binary_content_is_still_refused(data: bytes) -> None:
    with pytest.raises(DocumentError, match=r"^junk.txt: binary content, not text$"):
        decode_text(Document("junk.txt", data, "text/plain"))
