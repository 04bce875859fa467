"""Every exception cardmill raises, in one hierarchy.

```
CardmillError
├── InputError (ValueError)          bad input from the caller, named in the message
│   ├── DocumentError                a document that cannot be read or is not supported
│   └── InvalidDraft                 a card draft that breaks the size limits
├── StorageError                     a backend failed; the original error is the __cause__
│   ├── TransientStorageError        a lock wait timed out, the connection was lost: try again
│   ├── UnstorableData               a value the backend cannot store (NUL in PostgreSQL text)
│   ├── RunNotFound (LookupError)    no run has this id
│   ├── UploadNotFound (LookupError) no upload has this id
│   └── DatabaseError                the file is not a cardmill database, or a newer one
├── MissingExtra (ImportError)       an optional part is used but not installed: names the extra
├── WrongEventLoop (RuntimeError)    a trio API awaited outside trio: names cardmill.aio
└── ProviderError                    a provider could not turn a document into cards
    ├── RateLimited                  429: our quota is spent for now (retry_after, limit)
    ├── Overloaded                   529: the provider is overloaded, not our quota
    ├── TransientError               5xx, timeouts, resets: try again
    ├── InvalidOutput                the model answered, but not with valid cards: ask again
    └── PermanentError               400/401/403/404/413, spend limit, output that stays invalid

Terminated (KeyboardInterrupt)       SIGTERM received: stopped as for Ctrl-C
```

Provider errors carry the facts the engine needs to decide (``retry_after`` in seconds,
the ``limit`` that was hit, the ``usage`` a failed request cost) and never the API key.
A provider raises [`DocumentError`][cardmill.DocumentError] for a document it cannot send at all
(unreadable, unsupported, too large): no request was made, and the upload fails alone.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Final

import trio

if TYPE_CHECKING:
    # For annotations only: errors imports nothing of cardmill when it runs, and the
    # values it names sit on the floor below it.
    from ._rates import LimitKind, RateHint, Usage

__all__ = [
    "MAX_RETRY_AFTER",
    "BatchNotFound",
    "CardmillError",
    "DatabaseError",
    "DocumentError",
    "InputError",
    "InvalidDraft",
    "InvalidOutput",
    "MissingExtra",
    "Overloaded",
    "PermanentError",
    "ProviderError",
    "RateLimited",
    "RunNotFound",
    "StorageError",
    "Terminated",
    "TransientError",
    "TransientStorageError",
    "UnstorableData",
    "UploadNotFound",
    "WrongEventLoop",
]


MAX_RETRY_AFTER: Final = 3600.0
"""The longest wait, in seconds, a provider's Retry-After can impose: one hour.

A longer one is cut to this; one that is not a finite, non-negative number (``inf``,
``nan``, ``-5``) is ignored, as if the provider had not said. No provider asks for more
between retries of a rate limit: a longer wait is a quota a person should look at, and
waiting for ever would hold the upload (its lease renewed by the heartbeat) for ever.
"""


class CardmillError(Exception):
    """Base class of every error cardmill raises on purpose."""


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM, and stopped as for Ctrl-C (a `KeyboardInterrupt`):
    the command with status 143, `cardmill.analyze_sync` by raising this."""


class WrongEventLoop(CardmillError, RuntimeError):
    """A trio-only API (the engine, a database's ``open``) was awaited outside a trio
    run, from asyncio most often; the message names `cardmill.aio`, which runs it there."""


def require_trio(what: str) -> None:
    """Raise `WrongEventLoop` unless called from a trio task.

    Awaited from asyncio, trio code fails deep inside with ``Task got bad yield``; this
    says at once what to use instead.
    """
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        raise WrongEventLoop(
            f"{what} runs under trio, not in this event loop: from asyncio, await "
            "cardmill.aio.analyze(...) (or another cardmill.aio function); from "
            "synchronous code, call cardmill.analyze_sync(...)"
        ) from None


class InputError(CardmillError, ValueError):
    """Input from the caller is invalid; the message names it."""


class DocumentError(InputError):
    """A document cannot be read, or its type is not supported."""


class InvalidDraft(InputError):
    """A card draft breaks the size limits of [`CardDraft`][cardmill.CardDraft]."""


class StorageError(CardmillError):
    """A storage backend failed."""


class TransientStorageError(StorageError):
    """A storage call failed in a way that may pass if it is tried again: a lock wait
    timed out (another session holds the row), the connection to the database was lost,
    the pool had no connection to give.

    The call's transaction did not commit, except when the message says the connection
    was lost while committing: then whether it committed is unknown. The engine tries
    again only calls that are safe to repeat (see docs/storage.md).
    """


class UnstorableData(StorageError):
    """The backend refused a value the call would write (PostgreSQL text cannot hold
    NUL characters or lone surrogates); the message names the upload, never the value."""


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


class BatchNotFound(StorageError, LookupError):
    """No batch has the given id."""

    def __init__(self, batch_id: str) -> None:
        super().__init__(f"no batch with id {batch_id!r}")
        self.batch_id = batch_id


class DatabaseError(StorageError):
    """The database is not a cardmill database, or was written by a newer cardmill."""


class MissingExtra(CardmillError, ImportError):
    """An optional part of cardmill is used, but the packages it needs are not installed.

    The message names the extra that installs them, in one line:
    `PostgreSQL support needs the postgres extra: pip install 'cardmill[postgres]'`.

    Args:
        feature: what was asked for, as the message names it.
        extra: the extra to install.
        module: the module that could not be imported.
    """

    def __init__(self, feature: str, extra: str, *, module: str | None = None) -> None:
        super().__init__(
            f"{feature} needs the {extra} extra: pip install 'cardmill[{extra}]'", name=module
        )
        self.feature = feature
        self.extra = extra


class ProviderError(CardmillError):
    """A provider could not analyse a document.

    Args:
        message: a one-line reason.
        usage: the tokens the failed request used, as the provider reported them: zero
            for a request the provider refused with an error, ``None`` (the default) when
            nobody knows (a timeout, a reset connection). The engine reconciles its rate
            accounting with it and counts it in the run's tokens.
    """

    usage: Usage | None = None

    def __init__(self, message: str = "", *, usage: Usage | None = None) -> None:
        super().__init__(message)
        self.usage = usage


def _seconds(value: object) -> float | None:
    """A Retry-After as a bounded wait: None for what is not a finite, non-negative
    number of seconds, `MAX_RETRY_AFTER` for anything longer."""
    if value is None:
        return None
    if not isinstance(value, int | float):
        raise TypeError(f"retry_after must be a number of seconds, not {value!r}")
    if isinstance(value, int):  # an int too large for a float is still just "too long"
        return None if value < 0 else float(min(value, MAX_RETRY_AFTER))
    if not math.isfinite(value) or value < 0:
        return None
    return min(value, MAX_RETRY_AFTER)


class RateLimited(ProviderError):
    """The provider answered 429: our quota is spent for now.

    Args:
        message: a one-line reason.
        retry_after: seconds the provider asked us to wait, when it said; ``inf``,
            ``nan`` and negative waits are dropped, longer ones cut to
            `MAX_RETRY_AFTER`.
        limit: which limit was hit (a `LimitKind`), when the answer said.
        hint: the rate-limit headers that came with the answer.

    Example:
        `RateLimited("429 rate_limit_error", retry_after=2.0, limit=LimitKind.REQUESTS)`
    """

    def __init__(
        self,
        message: str = "rate limited (429)",
        *,
        retry_after: float | None = None,
        limit: LimitKind | None = None,
        hint: RateHint | None = None,
    ) -> None:
        super().__init__(message)
        self.retry_after = _seconds(retry_after)
        self.limit = limit
        self.hint = hint


class Overloaded(ProviderError):
    """The provider answered 529: it is overloaded; our quota is not the cause.

    Args:
        message: a one-line reason.
        retry_after: seconds the provider asked us to wait, bounded as
            `RateLimited`'s is.
    """

    def __init__(
        self, message: str = "overloaded (529)", *, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after = _seconds(retry_after)


class TransientError(ProviderError):
    """A failure worth retrying: 5xx, a timeout, a reset connection."""


class PermanentError(ProviderError):
    """A failure that retrying will not fix: bad request, auth, spend limit, bad document."""


class InvalidOutput(ProviderError):
    """The model answered, but its output is not valid cards: cut off at the output
    budget, not the forced tool or schema, or not JSON.

    Asking again often helps; the engine does, through the rate limiter, up to
    ``RetryPolicy.output_retries`` times, then fails the upload.

    Args:
        message: what is wrong with the output.
        usage: the tokens the answer used (it was a real request, and it counts).
        hint: the rate-limit headers that came with the answer.
    """

    def __init__(
        self, message: str, *, usage: Usage | None = None, hint: RateHint | None = None
    ) -> None:
        super().__init__(message, usage=usage)
        self.hint = hint
