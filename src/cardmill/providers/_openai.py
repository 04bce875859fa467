"""OpenAICompatibleProvider: chat completions with a JSON schema, over httpx."""

from __future__ import annotations

import json
import os
from typing import Any, Final, Self, final

import attrs
import httpx
import trio

from .._recipe import JSON_ANSWER, STUDY_CARDS, Recipe
from ..errors import (
    InputError,
    InvalidOutput,
    Overloaded,
    PermanentError,
    ProviderError,
    RateLimited,
    TransientError,
)
from ..model import Document, RateHint, Usage
from ._base import Analysis, answered_with_error, fingerprint, prompt_tokens
from ._headers import check_api_key, is_spend_limit, limit_hit, rate_hint, retry_after, scrub
from ._reading import read_off_loop
from ._schema import card_schema, drafts_from
from ._text import check_size, document_text
from ._url import redact_url, url_secrets

__all__ = ["DEFAULT_OPENAI_MODEL", "OpenAICompatibleProvider"]

DEFAULT_OPENAI_MODEL: Final = "gpt-4o-mini"
"""The model `OpenAICompatibleProvider` asks when neither `model` nor `CARDMILL_MODEL` says."""
DEFAULT_BASE_URL: Final = "https://api.openai.com/v1"


@final
class OpenAICompatibleProvider:
    """Cards from any server speaking OpenAI's chat completions: OpenAI, vLLM,
    llama.cpp, Ollama and others.

    The answer is constrained with a JSON-schema ``response_format``; PDFs are sent as
    their extracted text, so servers without file support work too.

    Args:
        api_key: defaults to ``OPENAI_API_KEY``; local servers often need none. Never
            logged, stored or shown. Printable ASCII with no spaces: a key with
            surrounding whitespace or a control character is refused.
        base_url: defaults to ``OPENAI_BASE_URL``, then OpenAI's API. The attribute
            `base_url` shows it without credentials (`redact_url`).
        model: defaults to ``CARDMILL_MODEL``, then a small OpenAI model.
        max_tokens: output budget per request.
        max_tokens_count: OpenAI counts a request's ``max_tokens`` against its
            tokens-per-minute limit on top of the prompt, and the pace follows suit;
            pass False for a server that counts only the tokens used.
        max_cards: the most cards kept per document; the recipe's by default.
        timeout: HTTP timeout, seconds.
        client: an ``httpx.AsyncClient`` to use (e.g. with a mock transport in tests).
        parse_timeout: seconds one document may take to read (PDFs in a worker process
            that is killed then) before it fails.
        recipe: the instructions and card fields (`STUDY_CARDS` by default): its
            instructions are the system message, its schema the response format; the
            document goes in the user message, as data.

    Raises:
        InputError: no key for OpenAI's own API, a ``base_url`` that is not HTTP(S), or
            a key with whitespace or a control character in it (the message does not
            show it).
    """

    name = "openai"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        model: str | None = None,
        max_tokens: int = 4096,
        max_tokens_count: bool = True,
        max_cards: int | None = None,
        timeout: float = 120.0,
        client: httpx.AsyncClient | None = None,
        parse_timeout: float = 60.0,
        recipe: Recipe = STUDY_CARDS,
    ) -> None:
        if not isinstance(recipe, Recipe):
            raise InputError(f"recipe must be a Recipe, not {type(recipe).__name__}")
        if max_cards is None:
            max_cards = recipe.max_cards
        if max_cards < 1:
            raise ValueError("max_cards must be >= 1")
        if not parse_timeout > 0:
            raise ValueError("parse_timeout must be > 0")
        self._key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        if self._key:
            check_api_key(self._key, "api_key" if api_key is not None else "OPENAI_API_KEY")
        url = base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        if not url.startswith(("http://", "https://")):
            raise InputError(f"base_url must start with http:// or https://: {redact_url(url)!r}")
        self._url = url.rstrip("/")
        # What may be shown: credentials in the URL are as secret as the key.
        self.base_url = redact_url(self._url)
        self._secrets = (self._key, *url_secrets(self._url))
        if not self._key and self._url == DEFAULT_BASE_URL:
            raise InputError(
                "no OpenAI API key: pass api_key=... or set OPENAI_API_KEY "
                "(a local server needs none: pass its base_url=...)"
            )
        self.model = model or os.environ.get("CARDMILL_MODEL") or DEFAULT_OPENAI_MODEL
        self.max_tokens = max_tokens
        self.max_tokens_count = max_tokens_count
        self.max_cards = max_cards
        self.recipe = recipe
        self._client = client or httpx.AsyncClient(timeout=timeout)
        self.parse_timeout = parse_timeout
        self._limiter = trio.CapacityLimiter(2)

    def __repr__(self) -> str:
        return f"OpenAICompatibleProvider(base_url={self.base_url!r}, model={self.model!r})"

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()
        await trio.lowlevel.checkpoint()  # closing an idle client may not checkpoint

    async def __aenter__(self) -> Self:
        await trio.lowlevel.checkpoint()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _hide(self, text: str) -> str:
        """A message without the key or the URL's credentials."""
        for secret in self._secrets:
            text = scrub(text, secret)
        return text

    def _headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if self._key:
            headers["authorization"] = f"Bearer {self._key}"
        return headers

    async def _read(self, document: Document) -> str:
        # pypdf can run away on a crafted PDF: PDFs are read in a process the deadline
        # kills. Text, Markdown and HTML readers take time linear in the document.
        return await read_off_loop(
            document_text,
            document,
            limiter=self._limiter,
            seconds=self.parse_timeout,
            isolated=document.media_type == "application/pdf",
        )

    def overhead_tokens(self) -> int:
        """The input tokens each request carries besides its document, counted
        generously from what is sent: the recipe's system message, the response
        format's schema, the framing of the document (see `request_overhead_tokens`)."""
        return prompt_tokens(self.payload("", ""))

    def request_fingerprint(self) -> str:
        """What determines this provider's answers besides the document: the server
        (its URL without credentials) and the chat-completions body around the document
        (model, ``max_tokens``, the recipe's system message and schema; see
        `cardmill.providers.request_fingerprint`)."""
        return fingerprint(self.name, self.base_url, self.recipe.digest, self.payload("", ""))

    def payload(self, text: str, name: str) -> dict[str, Any]:
        """The chat-completions request body for one document's text."""
        return {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "messages": [
                {
                    "role": "system",
                    "content": self.recipe.system_prompt(JSON_ANSWER),
                },
                {
                    "role": "user",
                    "content": f"<document name={name!r}>\n{text}\n</document>\n"
                    f"Make cards from the document {name!r}.",
                },
            ],
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "cards",
                    "strict": True,
                    "schema": card_schema(self.max_cards, self.recipe),
                },
            },
        }

    async def analyze(self, document: Document) -> Analysis:
        """One request for one document's cards.

        Raises:
            DocumentError: the document cannot be sent (unsupported, unreadable,
                undecodable, too long for one request, or still being read at the
                deadline); no request was made.
            InvalidOutput: the answer is not valid cards (with its usage and headers).
        """
        text = await self._read(document)
        body = self.payload(check_size(document, text), document.name)

        data, hint = await self._post(body)
        u = data.get("usage")
        u = u if isinstance(u, dict) else {}
        usage = Usage(u.get("prompt_tokens"), u.get("completion_tokens"))
        if self.max_tokens_count and usage.input_tokens:
            usage = attrs.evolve(usage, limit_input_tokens=usage.input_tokens + self.max_tokens)
        try:
            cards = self._drafts(data)
        except InvalidOutput as exc:
            raise InvalidOutput(str(exc), usage=usage, hint=hint) from None
        return Analysis(cards, usage, hint, data.get("model"))

    def _drafts(self, data: dict[str, Any]) -> tuple[Any, ...]:
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise InvalidOutput("no choices in the answer")
        choice = choices[0]
        if choice.get("finish_reason") == "length":
            raise InvalidOutput(f"output cut off at max_tokens={self.max_tokens}")
        message = choice.get("message") or {}
        content = message.get("content")
        if not isinstance(content, str):
            raise InvalidOutput("the answer has no text content")
        try:
            parsed = json.loads(content)
        except ValueError:
            raise InvalidOutput("the answer is not valid JSON") from None
        return drafts_from(parsed, self.max_cards, self.recipe)

    async def _post(self, body: dict[str, Any]) -> tuple[dict[str, Any], RateHint | None]:
        url = f"{self._url}/chat/completions"
        try:
            response = await self._client.post(url, json=body, headers=self._headers())
        except httpx.TimeoutException:
            raise TransientError("request timed out") from None
        except httpx.TransportError as exc:
            raise TransientError(
                f"connection error: {self._hide(str(exc) or type(exc).__name__)}"
            ) from None
        if response.status_code >= 400:
            raise answered_with_error(self._classify(response))
        try:
            data = response.json()
        except ValueError:
            raise TransientError("malformed response: body is not JSON") from None
        if not isinstance(data, dict):
            raise TransientError("malformed response: body is not a JSON object")
        return data, rate_hint(response.headers)

    def _classify(self, response: httpx.Response) -> ProviderError:
        status = response.status_code
        try:
            error = response.json().get("error") or {}
        except (ValueError, AttributeError):
            error = {}
        if not isinstance(error, dict):
            error = {"message": str(error)}
        message = self._hide(str(error.get("message") or response.reason_phrase or ""))
        code = str(error.get("code") or error.get("type") or "error")
        text = f"{status} {code}: {message}"
        if status == 429:
            if code == "insufficient_quota" or is_spend_limit(message):
                return PermanentError(f"spend limit: {text}")
            hint = rate_hint(response.headers)
            return RateLimited(
                text,
                retry_after=retry_after(response.headers),
                limit=limit_hit(hint, message),
                hint=hint,
            )
        if status == 529:
            return Overloaded(text, retry_after=retry_after(response.headers))
        if status == 503 and "overload" in message.lower():
            return Overloaded(text, retry_after=retry_after(response.headers))
        if status >= 500 or status in (408, 409):
            return TransientError(text)
        return PermanentError(text)
