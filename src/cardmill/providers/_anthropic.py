"""AnthropicProvider: cards through the official ``anthropic`` SDK and forced tool use."""

from __future__ import annotations

import base64
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Self, final

import httpx
import trio

from .._recipe import STUDY_CARDS, TOOL_ANSWER, Recipe
from ..errors import (
    DocumentError,
    InputError,
    InvalidOutput,
    Overloaded,
    PermanentError,
    ProviderError,
    RateLimited,
    TransientError,
)
from ..model import Document, RateHint, Usage, unsupported_reason
from ._base import (
    BATCH_MAX_BYTES,
    BATCH_MAX_REQUESTS,
    Analysis,
    BatchResult,
    BatchStatus,
    answered_with_error,
    fingerprint,
    prompt_tokens,
)
from ._batch_view import CUSTOM_ID, batch_status, errored
from ._headers import check_api_key, is_spend_limit, limit_hit, rate_hint, retry_after, scrub
from ._reading import read_off_loop
from ._schema import TOOL_NAME, card_schema, drafts_from
from ._text import MAX_PDF_BYTES, check_size, decode_text, html_to_text
from ._url import url_secrets

if TYPE_CHECKING:
    import anthropic

__all__ = ["DEFAULT_ANTHROPIC_MODEL", "AnthropicProvider"]

log = logging.getLogger("cardmill.providers")

_MAX_RESULT_LINE: Final = 64 * 1024 * 1024  # one result: a message, far below this
#: Headers never sent to another origin than the API's.
_CREDENTIALS: Final = ("x-api-key", "authorization", "proxy-authorization", "cookie")
_HEAD_BYTES: Final = 256  # where a results line's custom_id is looked for
# A results line starts with its custom_id; an answer cannot forge what precedes it.
_CUSTOM_ID_AT_START: Final = re.compile(rb'\s*\{\s*"custom_id"\s*:\s*"([A-Za-z0-9_-]{1,64})"')
_DRAIN_READS: Final = 10_000  # reads of a closed results stream, at most
_LIST_PAGE: Final = 100  # batches per page when looking for recent ones

DEFAULT_ANTHROPIC_MODEL: Final = "claude-haiku-5-5"
"""The newest Haiku, Anthropic's fast family, when this release was made. The name is
sent as it is, whether or not the installed SDK still lists it in
`anthropic.types.Model` (the API decides which names it takes). `model=` or `CARDMILL_MODEL` (the
CLI's `--model`) chooses another."""


@final
class AnthropicProvider:
    """Cards from Claude, through the official SDK with forced tool use.

    The SDK's own retries are off (``max_retries=0``): the engine sees every 429 and
    paces for it. Rate-limit and Retry-After headers are read from the raw response.
    PDFs go as native ``document`` blocks, text and markdown as text, HTML as its
    visible text. The system prompt is cached. Each `analyze` is one request: an
    answer that is not valid cards raises `InvalidOutput`, and the
    engine asks again through its rate limiter.

    It is also a [`BatchProvider`][cardmill.BatchProvider]: the same requests
    go through the Message Batches API, at half the price. A batch item's params are
    exactly those `analyze` sends, and each result reads as the synchronous answer would
    (cards, `InvalidOutput`, or the error the request would have raised).

    Args:
        api_key: defaults to ``ANTHROPIC_API_KEY``. It is never logged, stored or
            shown: not in errors, not in ``repr``. Printable ASCII with no spaces: a key
            with surrounding whitespace or a control character is refused.
        base_url: defaults to ``ANTHROPIC_BASE_URL`` (read by the SDK), then the API.
            No credential is sent to another origin, not even on a redirect.
        model: defaults to ``CARDMILL_MODEL``, then `DEFAULT_ANTHROPIC_MODEL`, the
            newest fast model.
        max_tokens: output budget per request.
        max_cards: the most cards kept per document (documents are untrusted); the
            recipe's ``max_cards`` by default.
        timeout: the SDK's HTTP timeout, seconds.
        parse_timeout: seconds one document may take to read (off the event loop)
            before it fails.
        recipe: the instructions and card fields (`STUDY_CARDS` by default). Its
            instructions are the system prompt; its schema is the forced tool's input;
            the document goes in its own block of the user message, as data.
        batch_max_requests: the most requests per batch, at most the API's
            `BATCH_MAX_REQUESTS`.
        batch_max_bytes: the largest batch, in bytes of its serialised requests, at
            most the API's `BATCH_MAX_BYTES`.

    Raises:
        InputError: no API key was given or found in the environment, or it has
            whitespace or a control character in it (the message does not show it).
        ValueError: a batch limit is below 1 or above the API's.
    """

    name = "anthropic"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        model: str | None = None,
        max_tokens: int = 4096,
        max_cards: int | None = None,
        timeout: float = 120.0,
        client: anthropic.AsyncAnthropic | None = None,
        parse_timeout: float = 60.0,
        recipe: Recipe = STUDY_CARDS,
        batch_max_requests: int = BATCH_MAX_REQUESTS,
        batch_max_bytes: int = BATCH_MAX_BYTES,
    ) -> None:
        key = api_key if api_key is not None else os.environ.get("ANTHROPIC_API_KEY")
        if client is None and not key:
            raise InputError("no Anthropic API key: pass api_key=... or set ANTHROPIC_API_KEY")
        if key:
            check_api_key(key, "api_key" if api_key is not None else "ANTHROPIC_API_KEY")
        if not isinstance(recipe, Recipe):
            raise InputError(f"recipe must be a Recipe, not {type(recipe).__name__}")
        if max_cards is None:
            max_cards = recipe.max_cards
        if max_cards < 1:
            raise ValueError("max_cards must be >= 1")
        if not parse_timeout > 0:
            raise ValueError("parse_timeout must be > 0")
        if not 1 <= batch_max_requests <= BATCH_MAX_REQUESTS:
            raise ValueError(f"batch_max_requests must be from 1 to {BATCH_MAX_REQUESTS}")
        if not 1 <= batch_max_bytes <= BATCH_MAX_BYTES:
            raise ValueError(f"batch_max_bytes must be from 1 to {BATCH_MAX_BYTES}")
        self.batch_max_requests = batch_max_requests
        self.batch_max_bytes = batch_max_bytes
        self._key = key
        # Credentials in the URL are as secret as the key.
        self._secrets = (key, *url_secrets(base_url or os.environ.get("ANTHROPIC_BASE_URL")))
        # Imported here: the SDK takes over a second to import, and the CLI, the
        # extractive provider and the tests of other parts should not pay for it.
        import anthropic

        # The SDK sends the key as a bearer token; servers that speak the Messages API
        # also know it as x-api-key, so say it both ways. The SDK follows redirects, and
        # its HTTP client (httpx2 from SDK 2, httpx before) takes only Authorization off
        # a request redirected to another origin: a hook takes every credential off.
        self._client = client or anthropic.AsyncAnthropic(
            api_key=key,
            base_url=base_url,
            max_retries=0,
            timeout=timeout,
            default_headers={"x-api-key": key} if key else None,
            http_client=anthropic.DefaultAsyncHttpxClient(
                event_hooks={"request": [self._credentials_stay_home]}
            ),
        )
        self.model = model or os.environ.get("CARDMILL_MODEL") or DEFAULT_ANTHROPIC_MODEL
        self.max_tokens = max_tokens
        self.max_cards = max_cards
        self.recipe = recipe
        self._system = recipe.system_prompt(TOOL_ANSWER)
        self.parse_timeout = parse_timeout
        self._limiter = trio.CapacityLimiter(2)
        self._tool = {
            "name": TOOL_NAME,
            "description": "Record the cards made from the document.",
            "input_schema": card_schema(max_cards, recipe),
        }

    async def _credentials_stay_home(self, request: Any) -> None:
        """Each request, redirected ones too, before it is sent: one to another origin
        than the API's goes without the key or any other credential."""
        await trio.lowlevel.checkpoint()
        if not _same_origin(str(request.url), self._client.base_url):
            for name in _CREDENTIALS:
                request.headers.pop(name, None)

    def _hide(self, text: str) -> str:
        """A message without the key or the URL's credentials."""
        for secret in self._secrets:
            text = scrub(text, secret)
        return text

    def __repr__(self) -> str:
        return (
            f"AnthropicProvider(model={self.model!r}, max_cards={self.max_cards},"
            f" recipe={self.recipe.name!r})"
        )

    async def aclose(self) -> None:
        """Close the SDK's HTTP client."""
        await self._client.close()
        await trio.lowlevel.checkpoint()  # closing an idle client may not checkpoint

    async def __aenter__(self) -> Self:
        await trio.lowlevel.checkpoint()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- request building ---------------------------------------------------------------

    def overhead_tokens(self) -> int:
        """The input tokens each request carries besides its document, counted
        generously from what is sent: the recipe's system prompt, the tool and its
        schema, the framing of the document (see `request_overhead_tokens`)."""
        params = self._params([{"type": "text", "text": "<document name=''>\n\n</document>"}])
        params["messages"][0]["content"].append(
            {"type": "text", "text": "Make cards from the document ''."}
        )
        return prompt_tokens(params)

    def request_fingerprint(self) -> str:
        """What determines this provider's answers besides the document: the Messages
        request around it (model, ``max_tokens``, the recipe's system prompt, the tool
        and its schema) and how a document is framed in it (see
        `cardmill.providers.request_fingerprint`)."""
        framing = [
            {"type": "text", "text": "<document name=''>\n\n</document>"},
            {"type": "text", "text": "Make cards from the document ''."},
        ]
        return fingerprint(self.name, self.recipe.digest, self._params(framing))

    async def _read(self, document: Document) -> list[dict[str, Any]]:
        # Decoding, the HTML parser and base64 all take time in proportion to the
        # document: on a thread, under a deadline, the event loop (and every other
        # upload's heartbeat) keeps running.
        return await read_off_loop(
            self.content, document, limiter=self._limiter, seconds=self.parse_timeout
        )

    def content(self, document: Document) -> list[dict[str, Any]]:
        """The user message's content blocks for a document.

        Raises:
            DocumentError: the document is unsupported, undecodable or too large.
        """
        instruction = {
            "type": "text",
            "text": f"Make cards from the document {document.name!r}.",
        }
        if document.media_type == "application/pdf":
            if not document.data.strip():
                raise DocumentError(f"{document.name}: empty document")
            if not document.data.lstrip()[:5] == b"%PDF-":
                raise DocumentError(f"{document.name}: not a PDF (no %PDF header)")
            if document.size > MAX_PDF_BYTES:
                raise DocumentError(
                    f"{document.name}: PDF of {document.size / 1e6:.1f} MB is over the "
                    f"{MAX_PDF_BYTES // (1024 * 1024)} MB request limit"
                )
            pdf = {
                "type": "document",
                "source": {
                    "type": "base64",
                    "media_type": "application/pdf",
                    "data": base64.standard_b64encode(document.data).decode("ascii"),
                },
            }
            return [pdf, instruction]
        if document.media_type == "text/html":
            text = html_to_text(document)
        elif document.media_type in ("text/plain", "text/markdown"):
            text = decode_text(document)
        else:
            raise DocumentError(unsupported_reason(document.name, document.media_type))
        if not text.strip():
            raise DocumentError(f"{document.name}: no text")
        check_size(document, text)
        wrapped = f"<document name={document.name!r}>\n{text}\n</document>"
        return [{"type": "text", "text": wrapped}, instruction]

    # -- the call -----------------------------------------------------------------------

    async def analyze(self, document: Document) -> Analysis:
        """One request for one document's cards.

        Raises:
            DocumentError: the document cannot be sent (unsupported, undecodable, too
                large, or still being read at the deadline); no request was made.
            InvalidOutput: the answer is not valid cards (with its usage and headers).
        """
        content = await self._read(document)
        message, hint = await self._create(content)
        usage = _usage(message)
        try:
            cards = self._drafts(message)
        except InvalidOutput as exc:
            raise InvalidOutput(str(exc), usage=usage, hint=hint) from None
        return Analysis(cards, usage, hint, getattr(message, "model", None))

    def _drafts(self, message: Any) -> tuple[Any, ...]:
        if getattr(message, "stop_reason", None) == "max_tokens":
            raise InvalidOutput(f"output cut off at max_tokens={self.max_tokens}")
        for block in getattr(message, "content", None) or []:
            if getattr(block, "type", None) == "tool_use" and block.name == TOOL_NAME:
                return drafts_from(block.input, self.max_cards, self.recipe)
        raise InvalidOutput("no record_cards tool call in the answer")

    def _params(self, content: list[dict[str, Any]]) -> dict[str, Any]:
        """A Messages request's params: the same for `analyze` and for a batch item."""
        return {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "system": [
                {"type": "text", "text": self._system, "cache_control": {"type": "ephemeral"}}
            ],
            "tools": [self._tool],
            "tool_choice": {"type": "tool", "name": TOOL_NAME},
            "messages": [{"role": "user", "content": content}],
        }

    async def _create(self, content: list[dict[str, Any]]) -> tuple[Any, RateHint | None]:
        create: Any = self._client.messages.with_raw_response.create
        with self._errors():
            raw = await create(**self._params(content))
            hint = rate_hint(raw.headers)
            message = await raw.parse()
        return message, hint

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Translates the SDK's errors into cardmill's, with secrets hidden."""
        import anthropic

        try:
            yield
        except anthropic.APIStatusError as exc:
            raise answered_with_error(self._classify(exc)) from None
        except anthropic.APITimeoutError:
            raise TransientError("request timed out") from None
        except anthropic.APIConnectionError as exc:
            raise TransientError(f"connection error: {self._hide(str(exc))}") from None
        except anthropic.APIResponseValidationError:
            raise TransientError("malformed response from the API") from None
        except (ValueError, anthropic.AnthropicError) as exc:
            # A body that is not JSON, or a response the SDK could not read.
            raise TransientError(f"malformed response: {self._hide(str(exc))}") from None
        except trio.BrokenResourceError:
            raise TransientError("connection reset") from None

    # -- batches ------------------------------------------------------------------------

    async def batch_request(self, document: Document, custom_id: str) -> dict[str, Any]:
        """The batch item for ``document``: ``{"custom_id": ..., "params": {...}}``, with
        exactly the params `analyze` sends.

        Raises:
            ValueError: ``custom_id`` is not 1 to 64 letters, digits, ``_`` or ``-``.
            DocumentError: the document cannot be sent, as `analyze` would raise.
        """
        if not isinstance(custom_id, str) or not re.fullmatch(CUSTOM_ID, custom_id):
            raise ValueError(
                f"custom_id must be 1 to 64 letters, digits, '_' or '-', not {custom_id!r}"
            )
        content = await self._read(document)
        return {"custom_id": custom_id, "params": self._params(content)}

    async def create_batch(self, requests: Sequence[Mapping[str, Any]]) -> BatchStatus:
        """Submit one batch of items made by `batch_request` (one request).

        Raises:
            ValueError: no items, or more than ``batch_max_requests``.
            RateLimited, TransientError, PermanentError: as for `analyze`; the server
                refuses a batch over its limits with `PermanentError`.
        """
        if not 1 <= len(requests) <= self.batch_max_requests:
            raise ValueError(
                f"a batch holds 1 to {self.batch_max_requests} requests, not {len(requests)}"
            )
        create: Any = self._client.messages.batches.create
        with self._errors():
            batch = await create(requests=[dict(r) for r in requests])
        return batch_status(batch)

    async def retrieve_batch(self, provider_batch_id: str) -> BatchStatus:
        """The batch's current status and counts (one request).

        Raises:
            ValueError: the id is not one the API gives (letters, digits, ``_``, ``-``,
                ``.``, ``~``).
        """
        _check_batch_id(provider_batch_id)
        with self._errors():
            batch = await self._client.messages.batches.retrieve(provider_batch_id)
        return batch_status(batch)

    async def cancel_batch(self, provider_batch_id: str) -> BatchStatus:
        """Ask the API to cancel the batch; it is ``canceling``, then ``ended`` (what
        was not processed is ``canceled``).

        Raises:
            ValueError: the id is not one the API gives (letters, digits, ``_``, ``-``,
                ``.``, ``~``).
        """
        _check_batch_id(provider_batch_id)
        with self._errors():
            batch = await self._client.messages.batches.cancel(provider_batch_id)
        return batch_status(batch)

    async def find_batches(self, created_after: datetime) -> list[BatchStatus]:
        """Batches of this key created at or after ``created_after``, newest first: pages
        of the API's list until one is older.

        Raises:
            ValueError: ``created_after`` has no time zone.
        """
        if created_after.tzinfo is None or created_after.utcoffset() is None:
            raise ValueError("created_after must be an aware datetime (with a time zone)")
        found: list[BatchStatus] = []
        # Page by page rather than the SDK's auto-paging iterator: stopping early must
        # leave no generator behind.
        with self._errors():
            page: Any = await self._client.messages.batches.list(limit=_LIST_PAGE)
        while True:
            for batch in page.data:
                status = batch_status(batch)
                if status.created_at is None or status.created_at < created_after:
                    return found
                found.append(status)
            if not page.has_next_page():
                return found
            with self._errors():
                page = await page.get_next_page()

    async def batch_results(self, provider_batch_id: str) -> AsyncIterator[BatchResult]:
        """The results of an ended batch, one per request, streamed as the API sends its
        JSONL (not held all at once). A succeeded request gives its cards and usage, or
        the `InvalidOutput` (with usage) its answer raises synchronously.

        Raises:
            ValueError: the id is not one the API gives (letters, digits, ``_``, ``-``,
                ``.``, ``~``).
            TransientError: the batch has not ended yet, or the stream broke. A line
                that cannot be read is not raised: it is the `TransientError` result of
                the request it names (one that names none is logged and skipped).
            RateLimited, PermanentError: as for `analyze`.
        """
        _check_batch_id(provider_batch_id)
        response = await self._results_response(provider_batch_id)
        # The response's lines, split here: the SDK's decoder and httpx's aiter_lines
        # would leave generators to the garbage collector when the caller stops early.
        chunks = response.aiter_bytes()
        ended = False
        try:
            buffer = b""
            #: The start of a line too long to hold, while the rest of it is skipped.
            head: bytes | None = None
            while not ended:
                with self._errors():
                    try:
                        chunk = await anext(chunks)
                    except StopAsyncIteration:
                        chunk, ended = b"\n", True
                lines = (buffer + chunk).split(b"\n")
                buffer = lines.pop()
                if head is not None and lines:
                    # The end of the long line: the rest of it is dropped.
                    long = self._unreadable(provider_batch_id, head, "is too long")
                    if long is not None:
                        yield long
                    head, lines = None, lines[1:]
                for line in lines:
                    result = self._result_of(provider_batch_id, line) if line.strip() else None
                    if result is not None:
                        yield result
                if head is not None:
                    buffer = b""
                elif len(buffer) > _MAX_RESULT_LINE:
                    head, buffer = buffer[:_HEAD_BYTES], b""
        finally:
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + 5
                await response.aclose()
                if not ended:
                    # Left early: with the connection closed, reading on (what was
                    # already buffered, then an error) ends every generator of the
                    # stream, httpx's and httpcore's; closing only the outer one would
                    # leave the inner ones to the garbage collector.
                    with suppress(Exception):
                        for _ in range(_DRAIN_READS):
                            await anext(chunks)
                await chunks.aclose()

    async def _results_response(self, provider_batch_id: str) -> Any:
        """The streamed response of the batch's ``results_url``, which the API says may
        be anywhere: any path of the API's own origin (the SDK would send the key to any
        host it names, so another origin is refused). A redirect from there to another
        origin is followed without credentials (see `_credentials_stay_home`)."""
        with self._errors():
            batch = await self._client.messages.batches.retrieve(provider_batch_id)
        url = getattr(batch, "results_url", None)
        if not url:
            status = self._hide(str(getattr(batch, "processing_status", "") or "unknown"))
            raise TransientError(f"batch {provider_batch_id} has no results yet ({status})")
        url = str(url)
        if not _same_origin(url, self._client.base_url):
            raise PermanentError(
                f"batch {provider_batch_id}: results_url {self._hide(_origin_of(url))} is not "
                f"on the API's host; the API key is not sent there"
            )
        get: Any = self._client.get
        with self._errors():
            # The raw response, unread: its lines are split as they arrive.
            return await get(
                url,
                cast_to=_sdk_http().Response,
                options={"headers": {"Accept": "application/binary"}},
                stream=True,
            )

    def _result_of(self, provider_batch_id: str, line: bytes) -> BatchResult | None:
        """One results line as its result. A line that cannot be read (not JSON, nested
        or numbered past what the parser takes, not a result) is an error of its own
        request, a `TransientError` as the same answer is in `analyze`; the other lines
        are read as usual."""
        from anthropic.types.messages import MessageBatchIndividualResponse

        try:
            value = json.loads(line)
        except (ValueError, RecursionError):
            # ValueError: not JSON, or an integer longer than int() reads; RecursionError:
            # arrays or objects nested deeper than the parser goes.
            return self._unreadable(provider_batch_id, line, "is not JSON the parser reads")
        if not isinstance(value, dict):
            return self._unreadable(provider_batch_id, line, "is not a JSON object")
        try:
            return self._result(MessageBatchIndividualResponse.construct(**value))
        except (ValueError, TypeError, RecursionError):
            return self._unreadable(provider_batch_id, line, "is not a result cardmill reads")

    def _unreadable(self, provider_batch_id: str, line: bytes, why: str) -> BatchResult | None:
        """The result for a line that cannot be read: an error of the request its
        ``custom_id`` names, read from the start of the line, where the API puts it. A line
        that names none is logged and skipped (its request is then missing)."""
        found = _CUSTOM_ID_AT_START.match(line[:_HEAD_BYTES])
        if found is None:
            log.warning(
                "batch %s: a results line %s and names no request; it is skipped",
                provider_batch_id,
                why,
            )
            return None
        error = TransientError(f"malformed response: the results line {why}")
        return BatchResult(found.group(1).decode("ascii"), "errored", error=error)

    def _result(self, line: Any) -> BatchResult:
        custom_id = str(getattr(line, "custom_id", ""))
        result = getattr(line, "result", None)
        kind = str(getattr(result, "type", "") or "")
        if kind == "succeeded":
            message = getattr(result, "message", None)
            usage = _usage(message)
            try:
                cards = self._drafts(message)
            except InvalidOutput as exc:
                return BatchResult(custom_id, kind, error=InvalidOutput(str(exc), usage=usage))
            answered = getattr(message, "model", None)
            return BatchResult(custom_id, kind, analysis=Analysis(cards, usage, model=answered))
        if kind == "errored":
            return BatchResult(custom_id, kind, error=errored(result, self._hide))
        if kind in ("canceled", "expired"):
            return BatchResult(custom_id, kind)
        return BatchResult(
            custom_id,
            kind,
            error=TransientError(f"batch result of unknown type {self._hide(kind)!r}"),
        )

    def _classify(self, exc: anthropic.APIStatusError) -> ProviderError:
        status = exc.status_code
        headers = exc.response.headers
        message = self._hide(exc.api_message or exc.message or "")
        kind = exc.type or "error"
        text = f"{status} {kind}: {message}"
        if status == 429:
            if is_spend_limit(message):
                return PermanentError(f"spend limit: {text}")
            hint = rate_hint(headers)
            return RateLimited(
                text, retry_after=retry_after(headers), limit=limit_hit(hint, message), hint=hint
            )
        if status == 529:
            return Overloaded(text, retry_after=retry_after(headers))
        if status >= 500 or status in (408, 409):
            return TransientError(text)
        if is_spend_limit(message):
            return PermanentError(f"spend limit: {text}")
        return PermanentError(text)


def _check_batch_id(provider_batch_id: str) -> None:
    # "The format and length of IDs may change": any id made of URL-safe characters
    # (RFC 3986's unreserved set) is followed; one that would need escaping in a path, or
    # is only dots, is not one the API gives.
    if (
        not isinstance(provider_batch_id, str)
        or not re.fullmatch(r"[A-Za-z0-9._~-]{1,256}", provider_batch_id)
        or not provider_batch_id.strip(".")
    ):
        raise ValueError(
            f"provider_batch_id must be 1 to 256 letters, digits, '_', '-', '.' or '~' "
            f"(not only dots), not {provider_batch_id!r:.80}"
        )


def _sdk_http() -> Any:
    """The HTTP package the installed SDK is built on: ``httpx2`` from SDK 2, ``httpx``
    before (its objects and the other's do not mix)."""
    from anthropic import _base_client

    return getattr(_base_client, "httpx2", None) or getattr(_base_client, "httpx")  # noqa: B009


def _origin_of(url: str) -> str:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return "(unreadable URL)"
    # Host and port only: the URL's user and password are nobody's business.
    port = f":{parsed.port}" if parsed.port is not None else ""
    return f"{parsed.scheme}://{parsed.host}{port}"


def _same_origin(url: str, base: Any) -> bool:
    """``url`` is relative, or has the scheme, host and port of ``base``."""
    try:
        parsed = httpx.URL(url)
        home = httpx.URL(str(base))
    except (httpx.InvalidURL, TypeError, ValueError):  # unreadable: not the API's
        return False
    if parsed.is_relative_url:
        return not parsed.netloc
    return (parsed.scheme, parsed.host, parsed.port) == (home.scheme, home.host, home.port)


def _usage(message: Any) -> Usage:
    u = getattr(message, "usage", None)
    if u is None:
        return Usage()
    # Usage takes the counts as sent and reads nonsense (negative, not a number) as 0.
    return Usage(
        input_tokens=getattr(u, "input_tokens", 0),
        output_tokens=getattr(u, "output_tokens", 0),
        cache_read_input_tokens=getattr(u, "cache_read_input_tokens", 0),
        cache_creation_input_tokens=getattr(u, "cache_creation_input_tokens", 0),
    )
