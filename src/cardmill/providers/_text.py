"""Turning document bytes into text and sections, shared by the providers.

Every failure is a ``DocumentError`` whose message names what is wrong with the
document. Each is found before any request is made: the engine fails the upload at once
(retrying will not make an encrypted PDF readable) and counts no request for it.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterable
from typing import Final

import attrs
import charset_normalizer

from ..errors import DocumentError
from ..model import Document, unsupported_reason
from ._html import html_blocks

__all__ = [
    "MAX_TEXT_CHARS",
    "Section",
    "check_size",
    "decode_text",
    "document_text",
    "pdf_text",
    "sections",
    "sentences",
]

MAX_PDF_BYTES: Final = 32 * 1024 * 1024
MAX_TEXT_CHARS: Final = 600_000  # ~150k tokens: beyond this a request cannot fit
_BOMS: Final = (
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)
_WESTERN: Final = "cp1252"
_CLOSE_CHAOS: Final = 0.05


@attrs.frozen
class Section:
    """A heading (possibly empty) and the paragraphs under it."""

    heading: str
    paragraphs: tuple[str, ...]


def check_size(document: Document, text: str) -> str:
    """``text``, unless it is too long for one request (DocumentError naming the size)."""
    if len(text) > MAX_TEXT_CHARS:
        raise DocumentError(
            f"{document.name}: {len(text):,} characters is over the "
            f"{MAX_TEXT_CHARS:,} that fit in one request"
        )
    return text


def decode_text(document: Document) -> str:
    """The document's bytes as text, in whatever encoding they were written.

    A byte-order mark is taken at its word; then UTF-8 (with or without BOM); then the
    encoding charset-normalizer finds (Latin-1, Windows-1252, Shift-JIS, GB18030 and
    the rest). Content with NUL bytes, or that reads as no encoding, is binary.

    Raises:
        DocumentError: the content is binary, not valid in the encoding its BOM
            announces, or empty.
    """
    data = document.data
    for bom, codec in _BOMS:
        if data.startswith(bom):  # UTF-16/32 announce themselves: take them at their word
            try:
                text = data[len(bom) :].decode(codec)
            except UnicodeDecodeError:
                raise DocumentError(f"{document.name}: not valid {codec} text") from None
            return _not_empty(document, text)
    if b"\x00" in data[:8192]:
        raise DocumentError(f"{document.name}: binary content, not text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = _detected(document)
    return _not_empty(document, text)


def _detected(document: Document) -> str:
    matches = charset_normalizer.from_bytes(document.data)
    best = matches.best()
    if best is None:
        raise DocumentError(f"{document.name}: binary content, not text")
    # Single-byte encodings often read a text about as well as each other (a Latin-1
    # "è" is a Windows-1250 "č"), and charset-normalizer then keeps the first in
    # alphabetical order, or one a few hundredths less "chaotic" (French and Italian
    # accents cost Windows-1252 0.03). Among those, take Windows-1252: the web's own
    # default for unlabelled text, and a superset of Latin-1's printable characters.
    for match in matches:
        if (
            _WESTERN in match.could_be_from_charset
            and match.chaos <= best.chaos + _CLOSE_CHAOS
            and match.coherence >= best.coherence
        ):
            return str(match)
    return str(best)


def _not_empty(document: Document, text: str) -> str:
    if not text.strip():
        raise DocumentError(f"{document.name}: empty document")
    return text


def html_to_text(document: Document) -> str:
    """Visible text of an HTML document, headings and paragraphs on their own lines."""
    blocks = html_blocks(document.name, decode_text(document))
    return "\n\n".join(("# " + t) if heading else t for heading, t in blocks)


def pdf_text(document: Document) -> str:
    """Text of a PDF's pages (blocking: call from a worker thread)."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    if len(document.data) > MAX_PDF_BYTES:
        raise DocumentError(
            f"{document.name}: PDF of {len(document.data) / 1e6:.1f} MB is over the "
            f"{MAX_PDF_BYTES // (1024 * 1024)} MB limit"
        )
    if not document.data.strip():
        raise DocumentError(f"{document.name}: empty document")
    if not document.data.lstrip()[:5] == b"%PDF-":
        raise DocumentError(f"{document.name}: not a PDF (no %PDF header)")
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(io.BytesIO(document.data))
        if reader.is_encrypted:
            raise DocumentError(f"{document.name}: encrypted PDF")
        pages = [page.extract_text() or "" for page in reader.pages]
    except DocumentError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise DocumentError(f"{document.name}: unreadable PDF ({_short(exc)})") from None
    except Exception as exc:  # pypdf raises many types on hostile input
        raise DocumentError(f"{document.name}: unreadable PDF ({_short(exc)})") from None
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    if not text.strip():
        raise DocumentError(f"{document.name}: PDF has no extractable text")
    return text


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:160]


def document_text(document: Document) -> str:
    """Plain text of any supported document (blocking for PDFs)."""
    if document.media_type == "application/pdf":
        return pdf_text(document)
    if document.media_type == "text/html":
        text = html_to_text(document)
        if not text.strip():
            raise DocumentError(f"{document.name}: HTML page has no visible text")
        return text
    if document.media_type in ("text/plain", "text/markdown"):
        return decode_text(document)
    raise DocumentError(unsupported_reason(document.name, document.media_type))


# Documents are untrusted: every pattern here runs in time linear in its line. A lazy
# group followed by optional runs (``(.*?)\s*#*\s*$``) is cubic on a line of spaces;
# the closing #s of a heading are cut with string methods instead.
_MD_HEADING: Final = re.compile(r"\s{0,3}(#{1,6})\s+(.*)")
# Link text and target stop at the next bracket or parenthesis, so no start rescans
# the rest of the line.
_LINK: Final = re.compile(r"!?\[([^\[\]]*)\]\([^()]*\)")
_SETEXT: Final = re.compile(r"^\s{0,3}(=+|-+)\s*$")
_SENTENCE: Final = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[A-Z0-9\"'(\[])")


def sections(document: Document) -> list[Section]:
    """Split a document into headed sections (blocking for PDFs)."""
    if document.media_type == "text/html":
        return _group(html_blocks(document.name, decode_text(document)))
    text = document_text(document)
    return _group(_markdown_blocks(text))


def _markdown_blocks(text: str) -> list[tuple[bool, str]]:
    blocks: list[tuple[bool, str]] = []
    paragraph: list[str] = []
    in_code = False

    def flush() -> None:
        if paragraph:
            joined = " ".join(" ".join(paragraph).split())
            joined = re.sub(r"^([-*+]|\d+[.)])\s+", "", joined)
            if joined:
                blocks.append((False, joined))
            paragraph.clear()

    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(("```", "~~~")):
            in_code = not in_code
            flush()
            continue
        if in_code:
            continue
        m = _MD_HEADING.match(line)
        if m:
            flush()
            blocks.append((True, _inline(_without_closing_hashes(m.group(2)))))
        elif _SETEXT.match(line) and len(paragraph) == 1:
            blocks.append((True, _inline(paragraph.pop())))
        elif not stripped:
            flush()
        elif re.match(r"^([-*+]|\d+[.)])\s+", stripped):
            flush()
            paragraph.append(_inline(stripped))
        else:
            paragraph.append(_inline(stripped))
    flush()
    return blocks


def _without_closing_hashes(text: str) -> str:
    text = text.strip()
    bare = text.rstrip("#")
    return bare.rstrip() if not bare or bare[-1].isspace() else text


def _inline(text: str) -> str:
    text = _LINK.sub(r"\1", text)  # links and images
    text = re.sub(r"(\*\*|__|\*|_|`)(.+?)\1", r"\2", text)
    return text.strip()


def _group(blocks: Iterable[tuple[bool, str]]) -> list[Section]:
    out: list[Section] = []
    heading = ""
    paragraphs: list[str] = []
    for is_heading, text in blocks:
        if is_heading:
            if paragraphs or heading:
                out.append(Section(heading, tuple(paragraphs)))
            heading, paragraphs = text, []
        else:
            paragraphs.append(text)
    if paragraphs or heading:
        out.append(Section(heading, tuple(paragraphs)))
    return out


def sentences(text: str) -> list[str]:
    """Split prose into sentences (good enough for summaries and quotes)."""
    return [s.strip() for s in _SENTENCE.split(" ".join(text.split())) if s.strip()]
