"""The visible text of an HTML page, as headings and paragraphs.

Pages are untrusted: the parser must take time in proportion to the page, whatever its
markup. ``html.parser`` does not (``"<a " * 40_000`` takes minutes); libxml2, through
lxml, does: its work per tag is bounded by the nesting depth, which it caps at 256.
"""

from __future__ import annotations

from typing import Final

from lxml import etree

from ..errors import DocumentError

__all__ = ["MAX_HTML_DEPTH", "html_blocks"]

MAX_HTML_DEPTH: Final = 256  # libxml2's own limit, without XML_PARSE_HUGE

_HEADING_TAGS: Final = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
_BLOCK_TAGS: Final = frozenset(
    {"p", "li", "blockquote", "pre", "td", "th", "dd", "dt", "div", "br", "tr"}
)
_SKIP_TAGS: Final = frozenset({"script", "style", "head", "title", "noscript", "template", "svg"})


def html_blocks(name: str, text: str) -> list[tuple[bool, str]]:
    """``(is_heading, text)`` for each heading and paragraph of a page, in order.

    Args:
        name: the document's name, for error messages.
        text: the page, already decoded (a ``<meta charset>`` in it is ignored).

    Raises:
        DocumentError: the page nests elements more than 256 deep, or libxml2 gave up
            on it.
    """
    # Bytes with a declared encoding: lxml refuses str input that declares its own.
    parser = etree.HTMLParser(
        encoding="utf-8", remove_comments=True, remove_pis=True, no_network=True
    )
    try:
        root = etree.fromstring(text.encode("utf-8"), parser)
    except etree.LxmlError as exc:
        raise DocumentError(f"{name}: unreadable HTML ({_first_line(exc)})") from None
    for error in parser.error_log:
        if error.level == etree.ErrorLevels.FATAL:
            if error.type == etree.ErrorTypes.ERR_RESOURCE_LIMIT:
                raise DocumentError(f"{name}: HTML nested more than {MAX_HTML_DEPTH} elements deep")
            raise DocumentError(f"{name}: unreadable HTML ({_first_line(error.message)})")
    return [] if root is None else _walk(root)


def _walk(root: etree._Element) -> list[tuple[bool, str]]:
    blocks: list[tuple[bool, str]] = []
    buffer: list[str] = []
    heading = False
    skipping = 0

    def flush() -> None:
        nonlocal heading
        joined = " ".join("".join(buffer).split())
        if joined:
            blocks.append((heading, joined))
        buffer.clear()
        heading = False

    # iterwalk, not recursion: the tree may be as deep as libxml2 allows.
    for event, element in etree.iterwalk(root, events=("start", "end")):
        tag = element.tag if isinstance(element.tag, str) else ""
        if event == "start":
            if tag in _SKIP_TAGS:
                skipping += 1
            elif tag in _HEADING_TAGS:
                flush()
                heading = True
            elif tag in _BLOCK_TAGS:
                flush()
            if not skipping and element.text:
                buffer.append(element.text)
        else:
            if tag in _SKIP_TAGS:
                skipping -= 1
            elif tag in _HEADING_TAGS or tag in _BLOCK_TAGS:
                flush()
            if not skipping and element.tail:
                buffer.append(element.tail)
    flush()
    return blocks


def _first_line(value: object) -> str:
    return (" ".join(str(value).split()) or "no detail")[:160]
