"""The vocabulary of cardmill: documents, card drafts, cards, uploads and runs.

Every value here is a frozen attrs class: safe to share between tasks and threads.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, final

import attrs

from .errors import DocumentError, InvalidDraft

__all__ = [
    "MAX_BODY_CHARS",
    "MAX_QUOTE_CHARS",
    "MAX_TAGS",
    "MAX_TAG_CHARS",
    "MAX_TITLE_CHARS",
    "Card",
    "CardDraft",
    "Document",
    "Run",
    "RunStatus",
    "Upload",
    "UploadStatus",
]

MAX_TITLE_CHARS: Final = 200
MAX_BODY_CHARS: Final = 4000
MAX_QUOTE_CHARS: Final = 1000
MAX_TAGS: Final = 12
MAX_TAG_CHARS: Final = 48

_EXTENSIONS: Final = {
    ".txt": "text/plain",
    ".text": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".html": "text/html",
    ".htm": "text/html",
    ".pdf": "application/pdf",
}
MEDIA_TYPES: Final = frozenset(_EXTENSIONS.values())


def sniff_media_type(name: str, data: bytes) -> str:
    """Guess a document's media type from its first bytes, then from its name.

    Content wins over the name: a PDF named ``notes.txt`` is a PDF. A name with an
    unknown extension and no recognisable content gives ``application/octet-stream``,
    which providers reject with a clear reason.
    """
    head = data[:1024].lstrip()
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    by_name = _EXTENSIONS.get(os.path.splitext(name)[1].lower())
    if by_name is not None:
        return by_name
    lowered = head[:64].lower()
    if lowered.startswith((b"<!doctype html", b"<html")):
        return "text/html"
    if data.startswith((b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")):
        return "text/plain"  # UTF-16/32 with a byte-order mark
    if not data or b"\x00" not in data[:8192]:
        try:
            data[:8192].decode("utf-8")
        except UnicodeDecodeError as exc:
            # A multi-byte character cut at the window's edge is still text.
            if exc.start < min(len(data), 8192) - 4:
                return "application/octet-stream"
        return "text/plain"
    return "application/octet-stream"


def _now() -> datetime:
    return datetime.now(UTC)


@final
@attrs.frozen(repr=False)
class Document:
    """One document to analyse: its name, its bytes and their media type.

    Example:
        >>> Document("notes.md", b"# Title").media_type
        'text/markdown'
    """

    name: str
    data: bytes
    media_type: str = attrs.field()

    @media_type.default
    def _sniff(self) -> str:
        return sniff_media_type(self.name, self.data)

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the content: identifies the document."""
        return hashlib.sha256(self.data).hexdigest()

    @property
    def size(self) -> int:
        """Size of the content in bytes."""
        return len(self.data)

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], *, name: str | None = None) -> Document:
        """Read a file and sniff its media type.

        Args:
            path: the file to read.
            name: the name to store; the path as given by default.

        Raises:
            DocumentError: the path does not exist, is not a file, or cannot be read.
        """
        p = Path(path)
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            raise DocumentError(f"{os.fspath(path)}: no such file") from None
        except IsADirectoryError:
            raise DocumentError(f"{os.fspath(path)}: is a directory") from None
        except PermissionError:
            raise DocumentError(f"{os.fspath(path)}: permission denied") from None
        except OSError as exc:
            raise DocumentError(f"{os.fspath(path)}: cannot read ({exc.strerror})") from None
        shown = name if name is not None else os.fspath(path)
        return cls(shown, data, sniff_media_type(shown, data))

    def __repr__(self) -> str:
        return f"Document(name={self.name!r}, size={self.size}, media_type={self.media_type!r})"


def _check_text(field: str, limit: int, *, required: bool) -> Any:
    def check(_inst: object, _attr: object, value: object) -> None:
        if not isinstance(value, str):
            raise InvalidDraft(f"card {field} must be a string, not {type(value).__name__}")
        if required and not value.strip():
            raise InvalidDraft(f"card {field} must not be empty")
        if len(value) > limit:
            raise InvalidDraft(f"card {field} has {len(value)} characters; the limit is {limit}")

    return check


def _to_tags(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        raise InvalidDraft("card tags must be a sequence of strings, not one string")
    return tuple(value)


def _check_tags(_inst: object, _attr: object, value: tuple[str, ...]) -> None:
    if len(value) > MAX_TAGS:
        raise InvalidDraft(f"card has {len(value)} tags; the limit is {MAX_TAGS}")
    for tag in value:
        if not isinstance(tag, str) or not tag.strip():
            raise InvalidDraft("card tags must be non-empty strings")
        if len(tag) > MAX_TAG_CHARS:
            raise InvalidDraft(f"card tag has {len(tag)} characters; the limit is {MAX_TAG_CHARS}")


def _check_quote(inst: object, attr: object, value: str | None) -> None:
    if value is not None:
        _check_text("quote", MAX_QUOTE_CHARS, required=False)(inst, attr, value)


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    return text[: limit - 1].rstrip() + "…"


@final
@attrs.frozen
class CardDraft:
    """A card as a provider returns it, before it is stored.

    Sizes are bounded (documents are untrusted input): a title of at most
    ``MAX_TITLE_CHARS`` characters, a body of at most ``MAX_BODY_CHARS``, at most
    ``MAX_TAGS`` tags of ``MAX_TAG_CHARS`` each and a quote of ``MAX_QUOTE_CHARS``.

    Raises:
        InvalidDraft: a field breaks a limit or is empty where it must not be.
    """

    title: str = attrs.field(validator=_check_text("title", MAX_TITLE_CHARS, required=True))
    body: str = attrs.field(validator=_check_text("body", MAX_BODY_CHARS, required=False))
    tags: tuple[str, ...] = attrs.field(default=(), converter=_to_tags, validator=_check_tags)
    quote: str | None = attrs.field(default=None, validator=_check_quote)

    @classmethod
    def clipped(
        cls,
        title: str,
        body: str,
        tags: Iterable[str] = (),
        quote: str | None = None,
    ) -> CardDraft:
        """Build a draft from untrusted text, folding white space and clipping to the limits.

        Raises:
            InvalidDraft: the title is empty.
        """
        clean_tags: list[str] = []
        for tag in tags:
            t = _clip(str(tag), MAX_TAG_CHARS)
            if t and t not in clean_tags:
                clean_tags.append(t)
        q = _clip(quote, MAX_QUOTE_CHARS) if quote else None
        return cls(
            _clip(title, MAX_TITLE_CHARS),
            _clip(body, MAX_BODY_CHARS),
            tuple(clean_tags[:MAX_TAGS]),
            q or None,
        )


@final
@attrs.frozen
class Card:
    """A stored card: a draft plus where it belongs."""

    id: str
    run_id: str
    upload_id: str
    ordinal: int
    title: str
    body: str
    tags: tuple[str, ...] = ()
    quote: str | None = None
    created_at: datetime = attrs.field(factory=_now)

    @property
    def draft(self) -> CardDraft:
        """The draft this card was stored from."""
        return CardDraft(self.title, self.body, self.tags, self.quote)


class UploadStatus(StrEnum):
    """Where an upload is in its life: PENDING → LOADING → COMPLETED or FAILED."""

    PENDING = "pending"
    LOADING = "loading"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        """COMPLETED and FAILED are final."""
        return self in (UploadStatus.COMPLETED, UploadStatus.FAILED)


class RunStatus(StrEnum):
    """Where a run is: PENDING, RUNNING, then SUCCEEDED, PARTIAL, FAILED or CANCELLED."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """SUCCEEDED, PARTIAL and FAILED are final; a CANCELLED run can be resumed."""
        return self in (RunStatus.SUCCEEDED, RunStatus.PARTIAL, RunStatus.FAILED)


@final
@attrs.frozen
class Upload:
    """One document of a run and its progress.

    ``worker`` and ``lease_expires_at`` say who holds a LOADING upload and until when.
    """

    id: str
    run_id: str
    name: str
    media_type: str
    size: int
    sha256: str
    status: UploadStatus = UploadStatus.PENDING
    attempts: int = 0
    error: str | None = None
    card_count: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    position: int = 0
    worker: str | None = None
    lease_expires_at: datetime | None = None


@final
@attrs.frozen
class Run:
    """A batch of uploads and its counters.

    The counters always equal what is persisted: ``total_cards`` is the number of stored
    cards, ``completed_items`` and ``failed_items`` the COMPLETED and FAILED uploads.
    """

    id: str
    name: str
    status: RunStatus = RunStatus.PENDING
    total_items: int = 0
    completed_items: int = 0
    failed_items: int = 0
    total_cards: int = 0
    created_at: datetime = attrs.field(factory=_now)
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def pending_items(self) -> int:
        """Uploads not yet COMPLETED or FAILED."""
        return self.total_items - self.completed_items - self.failed_items


def final_status(total: int, completed: int, failed: int) -> RunStatus:
    """The status a run ends with, from its counts (CANCELLED while work remains)."""
    if completed + failed < total:
        return RunStatus.CANCELLED
    if failed == 0:
        return RunStatus.SUCCEEDED
    if completed == 0:
        return RunStatus.FAILED
    return RunStatus.PARTIAL
