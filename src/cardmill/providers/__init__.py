"""Providers turn one document into card drafts.

* `AnthropicProvider` — Claude through the official SDK.
* `OpenAICompatibleProvider` — any chat-completions server, over httpx.
* `ExtractiveProvider` — offline, deterministic, no API key.

Write your own by implementing `Provider`.
"""

from __future__ import annotations

from ._anthropic import DEFAULT_ANTHROPIC_MODEL as DEFAULT_ANTHROPIC_MODEL
from ._anthropic import AnthropicProvider as AnthropicProvider
from ._base import BATCH_MAX_BYTES as BATCH_MAX_BYTES
from ._base import BATCH_MAX_REQUESTS as BATCH_MAX_REQUESTS
from ._base import Analysis as Analysis
from ._base import BatchProvider as BatchProvider
from ._base import BatchResult as BatchResult
from ._base import BatchStatus as BatchStatus
from ._base import Provider as Provider
from ._base import estimate_input_tokens as estimate_input_tokens
from ._base import request_fingerprint as request_fingerprint
from ._base import request_overhead_tokens as request_overhead_tokens
from ._extractive import ExtractiveProvider as ExtractiveProvider
from ._headers import rate_hint as rate_hint
from ._headers import retry_after as retry_after
from ._openai import DEFAULT_OPENAI_MODEL as DEFAULT_OPENAI_MODEL
from ._openai import OpenAICompatibleProvider as OpenAICompatibleProvider
from ._schema import card_schema as card_schema
from ._schema import drafts_from as drafts_from
from ._url import redact_url as redact_url

__all__ = [
    "BATCH_MAX_BYTES",
    "BATCH_MAX_REQUESTS",
    "DEFAULT_ANTHROPIC_MODEL",
    "DEFAULT_OPENAI_MODEL",
    "Analysis",
    "AnthropicProvider",
    "BatchProvider",
    "BatchResult",
    "BatchStatus",
    "ExtractiveProvider",
    "OpenAICompatibleProvider",
    "Provider",
    "card_schema",
    "drafts_from",
    "estimate_input_tokens",
    "rate_hint",
    "redact_url",
    "request_fingerprint",
    "request_overhead_tokens",
    "retry_after",
]
