"""The vocabulary of cardmill: documents, card drafts, cards, uploads and runs, and the
values every part shares about providers' limits: usage, rate hints, limit kinds (these
live one floor down, below `cardmill.errors`, which uses them, and are re-exported here).

Every value here is a frozen attrs class (or an enum): safe to share between tasks and
threads.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import stat
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final, TypeAlias, final

import attrs

from ._rates import LimitKind as LimitKind
from ._rates import RateHint as RateHint
from ._rates import Usage as Usage
from .errors import DocumentError, InvalidDraft

__all__ = [
    "BATCH_HOLDER_PREFIX",
    "MAX_BODY_CHARS",
    "MAX_DOCUMENT_BYTES",
    "MAX_QUOTE_CHARS",
    "MAX_TAGS",
    "MAX_TAG_CHARS",
    "MAX_TITLE_CHARS",
    "AnswerAsked",
    "AnswerStats",
    "Batch",
    "BatchCounts",
    "BatchItem",
    "BatchState",
    "Card",
    "CardDraft",
    "CardPage",
    "Document",
    "FieldValue",
    "LimitKind",
    "RateHint",
    "Run",
    "RunStatus",
    "StoredAnswer",
    "Upload",
    "UploadStatus",
    "Usage",
    "clean_text",
    "path_name",
    "read_file",
]

MAX_TITLE_CHARS: Final = 200
"""The most characters a card's title may have (`CardDraft.clipped` cuts to it)."""
MAX_BODY_CHARS: Final = 4000
"""The most characters a card's body may have."""
MAX_QUOTE_CHARS: Final = 1000
"""The most characters a card's quote may have."""
MAX_TAGS: Final = 12
"""The most tags a card may have."""
MAX_TAG_CHARS: Final = 48
"""The most characters one tag may have."""
MAX_FIELDS_CHARS: Final = 64_000
"""The most characters a card's fields may hold in all: each field's name and its value
(a list counts its items' characters). A recipe whose limits allow more is refused."""
MAX_DOCUMENT_BYTES: Final = 32 * 1024 * 1024
"""The largest document read from a file: the largest request the big providers take."""

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
# Types of other files often found beside documents, named in the reason they are refused.
_OTHER_EXTENSIONS: Final = {
    ".rtf": "text/rtf",
    ".csv": "text/csv",
    ".tsv": "text/tab-separated-values",
    ".json": "application/json",
    ".xml": "application/xml",
    ".doc": "application/msword",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ".odt": "application/vnd.oasis.opendocument.text",
    ".epub": "application/epub+zip",
    ".zip": "application/zip",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
}
# What a name's end must look like to be taken as an extension ("a.md", not "Dr. Who").
_EXTENSION: Final = re.compile(r"\.[A-Za-z0-9_+-]{1,16}")
ACCEPTED: Final = (
    "Markdown (.md, .markdown), plain text (.txt, .text), HTML (.html, .htm), PDF (.pdf)"
)
"""The documents cardmill reads, as its messages name them."""


# C0 control characters but tab, line feed and carriage return: PostgreSQL refuses NUL in
# text, and the rest have no business in a card, a name or a message.
_CONTROLS: Final = dict.fromkeys(c for c in range(0x20) if chr(c) not in "\t\n\r")


def clean_text(text: str) -> str:
    """Text as every store can hold it: no NUL or other C0 control character (tab, line
    feed and carriage return stay), and no lone surrogate (each becomes U+FFFD).

    Lone surrogates come from bytes decoded with ``surrogateescape`` (file names that are
    not UTF-8) or from a JSON ``"\\ud800"``; no UTF-8 encoder accepts them. A surrogate
    pair written as two code points becomes the character it stands for.

    Example:
        >>> clean_text("a\\x00b\\ud800c")
        'ab\\ufffdc'
    """
    text = text.translate(_CONTROLS)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text


def _clean(value: object) -> Any:
    # A converter: validators then say what is wrong with a value that is not a string.
    return clean_text(value) if isinstance(value, str) else value


def path_name(path: str | os.PathLike[str]) -> str:
    """A path as it may be stored and shown: bytes that are not UTF-8 (a file name
    Python decoded with ``surrogateescape``) become backslash escapes such as ``\\xff``.

    Example:
        >>> path_name(os.fsdecode(b"\\xff.txt"))
        '\\\\xff.txt'
    """
    raw = os.fspath(path)
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        raw = os.fsencode(raw).decode("utf-8", "backslashreplace")
    return clean_text(raw)


def sniff_media_type(name: str, data: bytes) -> str:
    """Guess a document's media type from its first bytes, then from its name.

    Content wins over the name: a PDF named ``notes.txt`` is a PDF, an RTF file
    (``{\\rtf``) is RTF whatever its name. Then the extension decides: one of the
    supported types' (`ACCEPTED`), or another's (``.csv`` is ``text/csv``, an unknown
    one ``application/octet-stream``), so a file of a format cardmill has no reader
    for is refused, not read as text. Only a name without an extension is judged by
    its content: HTML, text, or ``application/octet-stream`` for binary data.
    Providers reject any type but the supported ones with `unsupported_reason`.
    """
    head = data[:1024].lstrip()
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head.startswith(b"{\\rtf"):
        return "text/rtf"
    extension = _extension(name)
    if extension:
        return _EXTENSIONS.get(extension) or _OTHER_EXTENSIONS.get(
            extension, "application/octet-stream"
        )
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


def _extension(name: str) -> str:
    end = os.path.splitext(name)[1]
    return end.lower() if _EXTENSION.fullmatch(end) else ""


def unsupported_reason(name: str, media_type: str) -> str:
    """Why a document of ``media_type`` is refused, in one line naming it, what was
    found (its extension, or its content) and what is read instead.

    Example:
        >>> unsupported_reason("notes.rtf", "text/rtf").split("; ")[0]
        'notes.rtf: unsupported type text/rtf (a .rtf file)'
    """
    extension = _extension(name)
    if media_type in _OTHER_EXTENSIONS.values() and _OTHER_EXTENSIONS.get(extension) != media_type:
        found = "by its content"
    elif extension:
        found = f"a {extension} file"
    elif media_type == "application/octet-stream":
        found = "no extension, and binary content"
    else:
        found = "no extension"
    return f"{name}: unsupported type {media_type} ({found}); cardmill reads {ACCEPTED}"


_NOT_REGULAR: Final = (
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
)
# A FIFO opened without O_NONBLOCK waits for a writer; a terminal would become ours.
_OPEN_FLAGS: Final = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


def read_file(
    path: str | os.PathLike[str], *, max_bytes: int = MAX_DOCUMENT_BYTES, name: str | None = None
) -> bytes:
    """The bytes of a regular file, if there are at most ``max_bytes`` of them.

    Files are outside input. Devices, FIFOs and sockets are refused without being opened
    in a way that can block (``/dev/zero`` never ends; a FIFO with no writer never
    opens), and at most ``max_bytes + 1`` bytes are read, whatever the file's size
    said: a file that grows while it is read, or a ``/proc`` file that says it is empty,
    cannot get past the limit.

    Args:
        path: the file.
        max_bytes: the most bytes a document may have.
        name: how to name the file in errors; the path by default.

    Raises:
        DocumentError: the file does not exist, is not a regular file, cannot be read or
            is over the limit; the message names it.
    """
    shown = name if name is not None else path_name(path)
    try:
        _check_regular(shown, os.stat(path).st_mode)
        with open(os.open(path, _OPEN_FLAGS), "rb") as file:
            info = os.fstat(file.fileno())
            _check_regular(shown, info.st_mode)  # it may have been replaced since
            if info.st_size > max_bytes:
                raise DocumentError(
                    f"{shown}: {info.st_size / 1e6:.0f} MB is over the "
                    f"{_limit(max_bytes)} limit for one document"
                )
            data: bytes | None = file.read(max_bytes + 1)
    except FileNotFoundError:
        raise DocumentError(f"{shown}: no such file") from None
    except PermissionError:
        raise DocumentError(f"{shown}: permission denied") from None
    except OSError as exc:
        raise DocumentError(f"{shown}: cannot read ({exc.strerror or exc})") from None
    if data is None:
        # Opened non-blocking, a read with nothing ready (EAGAIN) gives None: a file
        # under a mandatory lock, a FUSE file, or one replaced under us.
        raise DocumentError(f"{shown}: cannot read (no data ready)")
    if len(data) > max_bytes:
        raise DocumentError(f"{shown}: over the {_limit(max_bytes)} limit for one document")
    return data


def _check_regular(shown: str, mode: int) -> None:
    if stat.S_ISDIR(mode):
        raise DocumentError(f"{shown}: is a directory")
    for test, kind in _NOT_REGULAR:
        if test(mode):
            raise DocumentError(f"{shown}: not a regular file ({kind})")
    if not stat.S_ISREG(mode):
        raise DocumentError(f"{shown}: not a regular file")


def _limit(max_bytes: int) -> str:
    mib = 1024 * 1024
    return f"{max_bytes // mib} MB" if max_bytes % mib == 0 else f"{max_bytes:,}-byte"


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

    name: str = attrs.field(converter=_clean)
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
    def from_path(
        cls,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        max_bytes: int = MAX_DOCUMENT_BYTES,
    ) -> Document:
        """Read a file and sniff its media type.

        Args:
            path: the file to read.
            name: the name to store; the path as given by default.
            max_bytes: the most bytes the document may have (32 MiB by default).

        Raises:
            DocumentError: the path does not exist, is not a regular file (a directory,
                a device, a FIFO), cannot be read, or is over ``max_bytes``; see
                `read_file`.
        """
        data = read_file(path, max_bytes=max_bytes)
        shown = name if name is not None else path_name(path)
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
    return tuple(_clean(tag) for tag in value)


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
    text = " ".join(clean_text(text).split())
    if len(text) <= limit:
        return text
    return text[: limit - 1].rstrip() + "…"


FieldValue: TypeAlias = str | int | float | bool | tuple[str, ...]
"""The value of one recipe field of a card: text, a number, a flag or a list of strings."""

_FIELD_KEY: Final = re.compile(r"[a-z][a-z0-9_]{0,39}")


def _field_chars(value: FieldValue) -> int:
    """The characters one field value counts against `MAX_FIELDS_CHARS`: a string's
    length, the sum of a list's items' lengths, a number's or flag's written length."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, tuple):
        return sum(len(item) for item in value)
    return len(str(value))


def _to_fields(value: object) -> Mapping[str, FieldValue] | None:
    # Lists become tuples and the mapping a read-only view: a draft stays frozen.
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidDraft(f"card fields must be a mapping, not {type(value).__name__}")
    out: dict[str, FieldValue] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not _FIELD_KEY.fullmatch(key):
            raise InvalidDraft(f"card field name {key!r} is not a field name")
        if isinstance(item, str):
            out[key] = clean_text(item)
        elif isinstance(item, bool | int):
            out[key] = item
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidDraft(f"card field {key} is not a finite number")
            out[key] = item
        elif isinstance(item, list | tuple) and all(isinstance(i, str) for i in item):
            out[key] = tuple(clean_text(i) for i in item)
        else:
            raise InvalidDraft(
                f"card field {key} is a {type(item).__name__}, not text, a number,"
                " a flag or a list of strings"
            )
    size = sum(len(k) + _field_chars(v) for k, v in out.items())
    if size > MAX_FIELDS_CHARS:
        raise InvalidDraft(f"card fields hold {size} characters; the limit is {MAX_FIELDS_CHARS}")
    return MappingProxyType(out)


@final
@attrs.frozen
class CardDraft:
    """A card as a provider returns it, before it is stored.

    Text is cleaned as it comes in (see `clean_text`): NUL and other control characters
    but tab and line breaks are dropped, lone surrogates become U+FFFD, so every store
    can hold it. Sizes are bounded (documents are untrusted input): a title of at most
    ``MAX_TITLE_CHARS`` characters, a body of at most ``MAX_BODY_CHARS``, at most
    ``MAX_TAGS`` tags of ``MAX_TAG_CHARS`` each and a quote of ``MAX_QUOTE_CHARS``.

    A card made by a recipe other than the study cards also keeps its recipe ``fields``
    (field name → `FieldValue`, read-only; see [`Recipe`][cardmill.Recipe]); title and
    body are then derived from them. Study cards have no fields (``None``).

    Raises:
        InvalidDraft: a field breaks a limit or is empty where it must not be.
    """

    title: str = attrs.field(
        converter=_clean, validator=_check_text("title", MAX_TITLE_CHARS, required=True)
    )
    body: str = attrs.field(
        converter=_clean, validator=_check_text("body", MAX_BODY_CHARS, required=False)
    )
    tags: tuple[str, ...] = attrs.field(default=(), converter=_to_tags, validator=_check_tags)
    quote: str | None = attrs.field(default=None, converter=_clean, validator=_check_quote)
    fields: Mapping[str, FieldValue] | None = attrs.field(
        default=None, converter=_to_fields, hash=False, kw_only=True
    )

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
    """A stored card: a draft plus where it belongs (``fields`` as in `CardDraft`)."""

    id: str
    run_id: str
    upload_id: str
    ordinal: int
    title: str
    body: str
    tags: tuple[str, ...] = ()
    quote: str | None = None
    created_at: datetime = attrs.field(factory=_now)
    fields: Mapping[str, FieldValue] | None = attrs.field(
        default=None, converter=_to_fields, hash=False
    )

    @property
    def draft(self) -> CardDraft:
        """The draft this card was stored from."""
        return CardDraft(self.title, self.body, self.tags, self.quote, fields=self.fields)


@final
@attrs.frozen
class CardPage:
    """One page of a card search (see [`Storage.search_cards`][cardmill.Storage.search_cards]).

    ``cards`` come in the run's order (upload, then ordinal). ``next_cursor`` is None when
    the search reached the end of the run; otherwise pass it as ``after`` to get the next
    page. A page may hold fewer cards than asked for, even none, and still have a cursor:
    a search stops after a bounded amount of work and says where to go on.
    """

    cards: tuple[Card, ...]
    next_cursor: str | None = None


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

    ``worker`` and ``lease_expires_at`` say who holds a LOADING upload and until when (an
    upload in a provider's batch is held by its batch, ``batch:<batch id>``). ``usage`` and
    ``cost_usd`` add up every request made for it that was recorded with a settlement;
    ``requests`` counts those requests and ``rate_limited`` those answered 429.

    ``answer_key`` names the answer its cards came from (see
    [`StoredAnswer`][cardmill.StoredAnswer]; None when the answer was not kept for
    reuse). A ``reused`` upload was completed from an earlier answer without a request:
    ``saved_tokens`` and ``saved_cost_usd`` are what that answer's requests used and cost.
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
    usage: Usage = attrs.field(factory=Usage)
    cost_usd: float = 0.0
    requests: int = 0
    rate_limited: int = 0
    answer_key: str | None = None
    reused: bool = False
    saved_tokens: int = 0
    saved_cost_usd: float = 0.0


@final
@attrs.frozen
class Run:
    """A batch of uploads and its counters.

    The counters always equal what is persisted: ``total_cards`` is the number of stored
    cards, ``completed_items`` and ``failed_items`` the COMPLETED and FAILED uploads.
    ``recipe_name`` and ``recipe_digest`` name the [`Recipe`][cardmill.Recipe] the run
    was created with (``Storage.get_recipe`` gives the recipe itself). ``usage``,
    ``cost_usd``, ``requests`` and ``rate_limited`` (requests answered 429) are the sums
    of its uploads' (kept in the same transactions). ``provider`` and ``model`` name
    what its requests are sent to, as given when it was created ("" when not given, and
    for runs made before they were kept): resuming it goes on with the same.
    ``reused_items`` counts its uploads completed from earlier answers, and
    ``saved_tokens`` and ``saved_cost_usd`` add up what those answers had used and cost.
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
    recipe_name: str = "study-cards"
    recipe_digest: str = ""
    usage: Usage = attrs.field(factory=Usage)
    cost_usd: float = 0.0
    requests: int = 0
    rate_limited: int = 0
    provider: str = ""
    model: str = ""
    reused_items: int = 0
    saved_tokens: int = 0
    saved_cost_usd: float = 0.0

    @property
    def recipe_label(self) -> str:
        """The run's recipe as ``name@digest-prefix`` (the name alone if the digest is unknown)."""
        if not self.recipe_digest:
            return self.recipe_name
        return f"{self.recipe_name}@{self.recipe_digest[:12]}"

    @property
    def pending_items(self) -> int:
        """Uploads not yet COMPLETED or FAILED."""
        return self.total_items - self.completed_items - self.failed_items


@final
@attrs.frozen
class StoredAnswer:
    """A provider's answer kept for reuse, under the key of what determined it.

    ``key`` digests the document's content, the provider, its model and the request it
    was sent (the recipe's prompt and schema among it); ``drafts`` are the cards it gave,
    ``usage`` and ``cost_usd`` what its requests used and cost, ``used_at`` when it was
    last stored or reused.
    """

    key: str
    drafts: tuple[CardDraft, ...]
    provider: str = ""
    model: str = ""
    usage: Usage = attrs.field(factory=Usage)
    cost_usd: float = 0.0
    created_at: datetime = attrs.field(factory=_now)
    used_at: datetime = attrs.field(factory=_now)

    @property
    def tokens(self) -> int:
        """The input and output tokens its requests used."""
        return self.usage.input_tokens + self.usage.output_tokens


@final
@attrs.frozen
class AnswerAsked:
    """No answer is stored under the key yet, but another upload's request for it is in
    flight (``upload_id``, under its current claim): wait for it rather than pay twice."""

    upload_id: str


@final
@attrs.frozen
class AnswerStats:
    """What the store of answers holds: ``answers`` kept, their ``size`` in bytes (of
    the cards they hold), the oldest and newest, and the answers per model."""

    answers: int = 0
    size: int = 0
    oldest: datetime | None = None
    newest: datetime | None = None
    models: Mapping[str, int] = attrs.field(factory=dict)


def final_status(total: int, completed: int, failed: int) -> RunStatus:
    """The status a run ends with, from its counts (CANCELLED while work remains)."""
    if completed + failed < total:
        return RunStatus.CANCELLED
    if failed == 0:
        return RunStatus.SUCCEEDED
    if completed == 0:
        return RunStatus.FAILED
    return RunStatus.PARTIAL


BATCH_HOLDER_PREFIX: Final = "batch:"
"""Uploads in a provider's batch are LOADING under ``batch:<batch id>``: no worker
claims, renews or reclaims them."""


class BatchState(StrEnum):
    """Where a provider batch is, as cardmill knows it.

    SUBMITTING: recorded, its uploads held; the create call may or may not have reached
    the provider. LIVE: the provider has it (``provider_batch_id`` is known); results not
    yet all collected. CANCELING: cancellation asked; results of what finished are still
    collected. DONE: every item settled. ABANDONED: it never reached the provider; its
    uploads went back to PENDING.
    """

    SUBMITTING = "submitting"
    LIVE = "live"
    CANCELING = "canceling"
    DONE = "done"
    ABANDONED = "abandoned"

    @property
    def open(self) -> bool:
        """SUBMITTING, LIVE and CANCELING batches may still hold uploads."""
        return self in (BatchState.SUBMITTING, BatchState.LIVE, BatchState.CANCELING)


@final
@attrs.frozen
class BatchCounts:
    """A provider's tally of a batch's requests, as last polled."""

    processing: int = 0
    succeeded: int = 0
    errored: int = 0
    canceled: int = 0
    expired: int = 0

    @property
    def total(self) -> int:
        """Every request counted."""
        return self.processing + self.succeeded + self.errored + self.canceled + self.expired


@final
@attrs.frozen
class Batch:
    """Uploads of a run sent together through a provider's batch API.

    ``holder`` is the name its uploads are LOADING under; ``size`` the number of items;
    ``creator`` the worker id of the executor that recorded it (None on older rows).
    """

    id: str
    run_id: str
    state: BatchState = BatchState.SUBMITTING
    provider_batch_id: str | None = None
    size: int = 0
    counts: BatchCounts = attrs.field(factory=BatchCounts)
    created_at: datetime = attrs.field(factory=_now)
    updated_at: datetime = attrs.field(factory=_now)
    creator: str | None = None

    @property
    def holder(self) -> str:
        """The lease holder of its uploads: ``batch:<id>``."""
        return f"{BATCH_HOLDER_PREFIX}{self.id}"


@final
@attrs.frozen
class BatchItem:
    """One upload in a batch: the ``custom_id`` it was sent with and the claim
    (``attempt``) that fences its settlement."""

    batch_id: str
    upload_id: str
    custom_id: str
    attempt: int
