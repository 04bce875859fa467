"""Every exception cardmill raises, in one hierarchy.

```
CardmillError
├── InputError (ValueError)          bad input from the caller, named in the message
│   ├── DocumentError                a document that cannot be read or is not supported
│   └── InvalidDraft                 a card draft that breaks the size limits
├── StorageError                     a backend failed; the original error is the __cause__
│   ├── RunNotFound (LookupError)    no run has this id
│   ├── UploadNotFound (LookupError) no upload has this id
│   └── DatabaseError                the file is not a cardmill database, or a newer one
└── ProviderError                    a provider could not turn a document into cards
    ├── RateLimited                  429: our quota is spent for now (retry_after, limit)
    ├── Overloaded                   529: the provider is overloaded, not our quota
    ├── TransientError               5xx, timeouts, resets: try again
    └── PermanentError               400/401/403/404/413, spend limit, invalid output
```

Provider errors carry the facts the engine needs to decide (``retry_after`` in seconds,
the ``limit`` that was hit) and never the API key.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .providers import RateHint

__all__ = [
    "CardmillError",
    "DatabaseError",
    "DocumentError",
    "InputError",
    "InvalidDraft",
    "Limit",
    "Overloaded",
    "PermanentError",
    "ProviderError",
    "RateLimited",
    "RunNotFound",
    "StorageError",
    "TransientError",
    "UploadNotFound",
]


class CardmillError(Exception):
    """Base class of every error cardmill raises on purpose."""


class InputError(CardmillError, ValueError):
    """Input from the caller is invalid; the message names it."""


class DocumentError(InputError):
    """A document cannot be read, or its type is not supported."""


class InvalidDraft(InputError):
    """A card draft breaks the size limits of :class:`cardmill.CardDraft`."""


class StorageError(CardmillError):
    """A storage backend failed."""


class RunNotFound(StorageError, LookupError):
    """No run has the given id."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"no run with id {run_id!r}")
        self.run_id = run_id


class UploadNotFound(StorageError, LookupError):
    """No upload has the given id."""

    def __init__(self, upload_id: str) -> None:
        super().__init__(f"no upload with id {upload_id!r}")
        self.upload_id = upload_id


class DatabaseError(StorageError):
    """The database is not a cardmill database, or was written by a newer cardmill."""


class Limit(StrEnum):
    """Which provider limit a 429 says was hit."""

    REQUESTS = "requests"
    INPUT_TOKENS = "input_tokens"
    OUTPUT_TOKENS = "output_tokens"
    UNKNOWN = "unknown"


class ProviderError(CardmillError):
    """A provider could not analyse a document."""


class RateLimited(ProviderError):
    """The provider answered 429: our quota is spent for now.

    Args:
        message: a one-line reason.
        retry_after: seconds the provider asked us to wait, when it said.
        limit: which limit was hit, when the answer said.
        hint: the rate-limit headers that came with the answer.
    """

    def __init__(
        self,
        message: str = "rate limited (429)",
        *,
        retry_after: float | None = None,
        limit: Limit = Limit.UNKNOWN,
        hint: RateHint | None = None,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.limit = limit
        self.hint = hint


class Overloaded(ProviderError):
    """The provider answered 529: it is overloaded; our quota is not the cause."""

    def __init__(self, message: str = "overloaded (529)", *, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class TransientError(ProviderError):
    """A failure worth retrying: 5xx, a timeout, a reset connection."""


class PermanentError(ProviderError):
    """A failure that retrying will not fix: bad request, auth, spend limit, bad document."""
