"""ExtractiveProvider: offline cards from markdown, HTML, text and PDF."""

from __future__ import annotations

import pytest

from cardmill import Document, DocumentError
from cardmill.providers import ExtractiveProvider
from cardmill.testing import make_pdf

MD = b"""# Tides

The moon pulls the sea. Twice a day the water rises and falls. Sailors plan around it.

## Spring tides

When sun and moon line up, tides are strongest. This happens at new and full moon.

```
code blocks are skipped
```
"""


async def test_markdown_sections_become_cards() -> None:
    analysis = await ExtractiveProvider().analyze(Document("tides.md", MD))
    first, second = analysis.cards
    assert first.title == "Tides"
    assert first.body == (
        "The moon pulls the sea. Twice a day the water rises and falls. Sailors plan around it."
    )
    assert first.quote == "The moon pulls the sea."
    assert "tides" in second.tags or "moon" in second.tags
    assert second.title == "Spring tides"
    assert all("code blocks" not in c.body for c in analysis.cards)


async def test_html_headings_and_paragraphs() -> None:
    html = (
        b"<html><head><title>ignored</title><script>var x = 1;</script></head><body>"
        b"<h1>Bread</h1><p>Flour, water and salt. Time does the rest.</p>"
        b"<h2>Proofing</h2><ul><li>Let it rise.</li></ul></body></html>"
    )
    cards = (await ExtractiveProvider().analyze(Document("bread.html", html))).cards
    assert [c.title for c in cards] == ["Bread", "Proofing"]
    assert cards[0].body == "Flour, water and salt. Time does the rest."
    assert "var x" not in " ".join(c.body for c in cards)


async def test_plain_text_paragraphs() -> None:
    text = b"Rivers carve valleys over ages. Water wins.\n\nDeltas form where rivers slow down."
    cards = (await ExtractiveProvider().analyze(Document("r.txt", text))).cards
    assert [c.title for c in cards] == [
        "Rivers carve valleys over ages",
        "Deltas form where rivers slow down",
    ]


async def test_pdf_text() -> None:
    pdf = make_pdf([["Volcanoes", "", "Magma rises through the crust. It cools into rock."]])
    cards = (await ExtractiveProvider().analyze(Document("v.pdf", pdf))).cards
    assert len(cards) == 1
    assert "Magma rises through the crust." in cards[0].body


async def test_deterministic_and_bounded() -> None:
    many = b"\n\n".join(b"# H%d\n\nParagraph number %d is here." % (i, i) for i in range(100))
    doc = Document("many.md", many)
    a = await ExtractiveProvider(max_cards=5).analyze(doc)
    b = await ExtractiveProvider(max_cards=5).analyze(doc)
    assert a == b
    assert len(a.cards) == 5


def encrypted_pdf() -> bytes:
    return make_pdf([["Secret", "", "Hidden text."]], password="pw")


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (Document("e.pdf", encrypted_pdf()), "encrypted PDF"),
        (
            Document("t.pdf", make_pdf([["Cut", "", "short"]])[:120]),
            "unreadable PDF|no extractable",
        ),
        (Document("j.pdf", b"\x89junk" * 100, "application/pdf"), "not a PDF"),
        (Document("j.txt", bytes(range(256)) * 4, "text/plain"), "binary content"),
        (Document("n.txt", bytes(range(1, 256)) * 4, "text/plain"), "binary content"),
        (Document("e.md", b"", "text/markdown"), "empty document"),
        (
            Document("x.bin", b"\x00\x01", "application/octet-stream"),
            r"x\.bin: unsupported type application/octet-stream \(a \.bin file\); cardmill reads",
        ),
        (Document("blank.html", b"<html><body><script>1</script></body></html>"), "no text"),
    ],
)
async def test_bad_documents_fail_with_a_reason(document: Document, reason: str) -> None:
    with pytest.raises(DocumentError, match=reason):
        await ExtractiveProvider().analyze(document)


async def test_utf16_text_with_a_byte_order_mark_is_read() -> None:
    data = "\ufeffTides turn twice a day. The moon pulls them.".encode("utf-16-le")
    document = Document("tides.txt", data)
    assert document.media_type == "text/plain"
    cards = (await ExtractiveProvider().analyze(document)).cards
    assert cards[0].quote == "Tides turn twice a day."
