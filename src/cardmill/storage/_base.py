"""The Storage protocol every backend implements, and helpers the backends share."""

from __future__ import annotations

import math
import secrets
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Final, Protocol, Self, runtime_checkable

import attrs

from .._cost import MAX_COST_USD
from .._recipe import STUDY_CARDS, Recipe
from ..errors import InputError, UnstorableData
from ..model import (
    AnswerAsked,
    AnswerStats,
    Batch,
    BatchCounts,
    BatchItem,
    BatchState,
    Card,
    CardDraft,
    CardPage,
    Document,
    Run,
    StoredAnswer,
    Upload,
    UploadStatus,
    Usage,
    clean_text,
)

__all__ = ["AnswerStore", "Storage"]

MAX_ERROR_CHARS = 500


@runtime_checkable
class Storage(Protocol):
    """Where runs, uploads, documents and cards live.

    Every method is atomic: it happens completely or not at all, also when the process
    dies in the middle. Four invariants hold after every call, after a crash at any
    instant and under concurrent callers:

    1. ``run.total_cards`` equals the number of stored cards of the run.
    2. ``run.completed_items`` / ``failed_items`` equal the COMPLETED / FAILED uploads.
    3. An upload has cards iff it is COMPLETED, exactly ``card_count`` of them, and no two
       share ``(upload_id, ordinal)``.
    4. ``completed_items + failed_items <= total_items``, equal once the run is finished.

    Methods that take a ``worker`` apply fencing when it is given: the call changes
    nothing unless that worker holds the upload's lease. Those that also take an
    ``attempt`` fence by claim, not just by name: pass the ``attempts`` of the
    [`Upload`][cardmill.Upload] that [`claim_upload`][cardmill.Storage.claim_upload]
    returned, and the call changes
    nothing unless the upload is LOADING under that very claim. A worker that re-claims
    its own expired upload holds a new claim, so its older one can no longer commit.
    """

    async def create_run(
        self,
        documents: Iterable[Document],
        *,
        name: str | None = None,
        recipe: Recipe = STUDY_CARDS,
        provider: str = "",
        model: str = "",
    ) -> Run:
        """Store a new PENDING run with one PENDING upload per document, content included.

        The run keeps its ``recipe`` (the whole text and its digest): resuming uses it,
        and `complete_upload` refuses cards that do not fit it. It keeps the names of
        its ``provider`` and ``model`` too (`Run.provider`, `Run.model`).

        The run exists for every other method only once all its documents are stored: a
        run whose creation failed or died half-way is never seen, claimed or settled.

        Raises:
            InputError: an item of ``documents`` is not a Document (or reading one
                raised it), ``recipe`` is not a Recipe, or ``provider`` or ``model`` is
                not a short printable name; nothing of the run remains.
        """
        ...

    async def get_recipe(self, run_id: str) -> Recipe:
        """The recipe the run was created with (`STUDY_CARDS` for runs made before
        recipes). Raises RunNotFound."""
        ...

    async def get_run(self, run_id: str) -> Run:
        """The run with this id. Raises RunNotFound."""
        ...

    async def list_runs(self) -> list[Run]:
        """Every run, oldest first."""
        ...

    async def list_uploads(self, run_id: str, status: UploadStatus | None = None) -> list[Upload]:
        """The run's uploads in submission order, optionally only those with ``status``."""
        ...

    async def list_cards(self, run_id: str, upload_id: str | None = None) -> list[Card]:
        """The run's cards (or one upload's), by upload order then ordinal."""
        ...

    async def get_uploads(self, run_id: str, upload_ids: Sequence[str]) -> list[Upload]:
        """The run's uploads among ``upload_ids`` (at most 1,000), in submission order.

        One short read, whatever the size of the run: an id that names no upload of
        the run is left out, one given twice comes once. Raises RunNotFound, and
        InputError for more than 1,000 ids or an id that is not a str.
        """
        ...

    def iter_uploads(self, run_id: str, *, batch: int = 1000) -> AsyncIterator[Upload]:
        """The run's uploads in submission order, read ``batch`` at a time.

        Memory stays flat whatever the size of the run: each page is one short read,
        resumed after the last position seen, and nothing is held between pages.
        Raises RunNotFound (when iteration starts) and InputError (at once) for a
        ``batch`` below 1.
        """
        ...

    def iter_cards(
        self, run_id: str, *, upload_id: str | None = None, batch: int = 1000
    ) -> AsyncIterator[Card]:
        """The run's cards (or one upload's), by upload order then ordinal, ``batch`` at a time.

        Each page is one short read transaction resumed after the last (upload position,
        ordinal) seen, so a million-card run streams in constant memory and no lock is held
        between pages. An upload's cards are stored in one transaction, so they come whole:
        an upload completed during the iteration appears in full if it lies ahead of the
        cursor, and not at all otherwise. An unknown ``upload_id`` has no cards. Raises
        RunNotFound (when iteration starts) and InputError (at once) for a ``batch`` below 1.
        """
        ...

    async def search_cards(
        self,
        run_id: str,
        *,
        text: str | None = None,
        upload_id: str | None = None,
        tag: str | None = None,
        field: tuple[str, str] | None = None,
        after: str | None = None,
        limit: int = 50,
    ) -> CardPage:
        """One page of the run's cards that pass every filter given, in the run's order.

        - ``text``: every word of it starts a word of the card's title, body, quote, tags
          or text fields, case aside (accents count). Words are runs of letters and
          digits; the first 12 count, and a text without any matches every card. The
          text is never read as query syntax: quotes, ``*``, ``AND``, ``NEAR(`` are
          plain characters (or words).
        - ``upload_id``: the cards of that upload only (an unknown one has none).
        - ``tag``: one of the card's tags equals it, case aside.
        - ``field``: ``(name, value)``; the run's recipe field holds the value (text and
          lists contain it, case aside; numbers equal it; flags read yes/no,
          true/false or 1/0).

        Pages are read by cursor, not offset: pass the page's ``next_cursor`` as
        ``after`` for the next one, so a deep page costs what the first does. A page
        holds at most ``limit`` cards (1 to 500); its ``next_cursor`` is None once the
        end of the run is reached. A page may be short, even empty, and still have a
        cursor, when the call stopped after a bounded amount of reading (a filter the
        index cannot narrow, such as ``field``, or words so many cards hold that the
        run's cards are checked one by one instead). A call whose caller is cancelled
        stops its read soon after. Each call is one short read: cards of
        an upload that completes meanwhile appear whole, or not at all, as in
        `iter_cards`.

        Raises:
            RunNotFound: there is no such run.
            InputError: ``limit`` is out of range, ``after`` is not a cursor this method
                returned, an argument has the wrong type, or ``field`` names a field
                the run's recipe does not have.
        """
        ...

    async def load_document(self, upload_id: str) -> Document:
        """The stored document of an upload. Raises UploadNotFound."""
        ...

    async def claim_upload(
        self, run_id: str, *, worker: str, lease_seconds: float
    ) -> Upload | None:
        """Take the next PENDING upload (or a LOADING one whose lease expired).

        It becomes LOADING, held by ``worker`` for ``lease_seconds``, with attempts + 1;
        the run becomes RUNNING. Returns None when nothing is claimable.
        """
        ...

    async def renew_lease(
        self, upload_id: str, *, worker: str, lease_seconds: float, attempt: int | None = None
    ) -> bool:
        """Extend the lease ``worker`` holds on a LOADING upload; False if it lost it.

        With ``attempt``, only while the upload is still under that claim.
        """
        ...

    async def complete_upload(
        self,
        upload_id: str,
        drafts: Sequence[CardDraft],
        *,
        worker: str | None = None,
        attempt: int | None = None,
        usage: Usage | None = None,
        cost_usd: float = 0.0,
        requests: int = 0,
        rate_limited: int = 0,
    ) -> bool:
        """In ONE transaction: store the cards, mark the upload COMPLETED, add to the counters.

        ``usage`` and ``cost_usd`` (what the requests for this upload used and cost, not yet
        recorded), ``requests`` (how many requests this claim made) and ``rate_limited``
        (how many of them were answered 429) are added to the upload's and the run's
        totals in the same transaction, only when the call changes something. A negative
        or non-finite ``cost_usd``, or a count that is negative, not a whole number, above
        a million, or a ``rate_limited`` above ``requests``, is an `InputError`.

        Cards must fit the run's recipe (see [`Recipe.check`][cardmill.Recipe.check]):
        otherwise `UnstorableData` naming the upload and the field, and nothing changes.
        Idempotent: returns False and changes nothing when the upload is already
        COMPLETED or FAILED (or, with ``worker`` / ``attempt``, when that worker or that
        claim no longer holds it).
        """
        ...

    async def complete_and_claim(
        self,
        upload_id: str,
        drafts: Sequence[CardDraft],
        *,
        worker: str,
        attempt: int | None = None,
        run_id: str,
        lease_seconds: float,
        usage: Usage | None = None,
        cost_usd: float = 0.0,
        requests: int = 0,
        rate_limited: int = 0,
    ) -> tuple[bool, Upload | None]:
        """``complete_upload(upload_id, drafts, worker=..., attempt=...)``, then
        ``claim_upload(run_id, worker=..., lease_seconds=...)``; returns what each did.

        The engine's workers call it to settle an upload and take their next in one
        trip to the database. The built-in backends do both in one transaction; a
        backend of your own may simply make the two calls.
        """
        ...

    async def fail_upload(
        self,
        upload_id: str,
        error: str,
        *,
        worker: str | None = None,
        attempt: int | None = None,
        usage: Usage | None = None,
        cost_usd: float = 0.0,
        requests: int = 0,
        rate_limited: int = 0,
    ) -> bool:
        """Mark a non-terminal upload FAILED with a one-line reason; False if nothing changed.

        ``usage``, ``cost_usd``, ``requests`` and ``rate_limited`` are recorded as
        `complete_upload` records them.
        """
        ...

    async def release_upload(
        self,
        upload_id: str,
        *,
        worker: str | None = None,
        attempt: int | None = None,
        usage: Usage | None = None,
        cost_usd: float = 0.0,
        requests: int = 0,
        rate_limited: int = 0,
    ) -> bool:
        """Put a LOADING upload back to PENDING; False if it was not LOADING (or not ours).

        ``usage``, ``cost_usd``, ``requests`` and ``rate_limited`` (of the requests made
        under this claim) are recorded as `complete_upload` records them.
        """
        ...

    # -- provider batches ------------------------------------------------------------

    async def create_batch(
        self,
        run_id: str,
        upload_ids: Sequence[str],
        *,
        lease_seconds: float,
        creator: str | None = None,
    ) -> tuple[Batch, tuple[BatchItem, ...]] | None:
        """In ONE transaction: take those of ``upload_ids`` (uploads of ``run_id``) that are
        PENDING, or LOADING with an expired lease, and record a SUBMITTING batch of them.

        Each taken upload becomes LOADING under the batch's ``holder`` for
        ``lease_seconds``, attempts + 1 (its item's ``attempt``); its ``custom_id`` is the
        upload id. The run becomes RUNNING. Items come in the order of ``upload_ids``;
        uploads that cannot be taken are left out, and when none can, nothing is recorded
        and the result is None. ``creator`` (the recording executor's worker id) is kept
        on the batch. Raises RunNotFound.
        """
        ...

    async def set_batch_submitted(self, batch_id: str, provider_batch_id: str) -> Batch:
        """The provider accepted the batch: record its id; SUBMITTING becomes LIVE, and a
        batch already CANCELING (cancelled while its create call was in flight) stays so.

        Idempotent for the same ``provider_batch_id``; InputError for another one, or for
        a batch that has one or has ended. Raises BatchNotFound.
        """
        ...

    async def update_batch(
        self,
        batch_id: str,
        *,
        state: BatchState | None = None,
        counts: BatchCounts | None = None,
        expect: BatchState | None = None,
    ) -> Batch:
        """Record a batch's new state and/or the provider's latest counts.

        With ``expect``, only if the batch is in that state when the transaction runs
        (a compare-and-set: what the caller read may be stale); otherwise nothing changes
        and the batch is returned as it is now. A DONE or ABANDONED batch stays so (the
        call changes nothing and returns it).
        Setting ABANDONED releases the uploads still held by the batch back to PENDING,
        and DONE requires that none is still held (InputError otherwise), in the same
        transaction. Raises BatchNotFound.
        """
        ...

    async def get_batch(self, batch_id: str) -> Batch:
        """The batch with this id. Raises BatchNotFound."""
        ...

    async def list_batches(self, run_id: str, *, open_only: bool = False) -> list[Batch]:
        """The run's batches, oldest first; with ``open_only`` only SUBMITTING, LIVE and
        CANCELING ones. Raises RunNotFound."""
        ...

    async def batch_items(self, batch_id: str) -> list[BatchItem]:
        """The batch's items in the order they were recorded. Raises BatchNotFound."""
        ...

    async def finish_run(self, run_id: str) -> Run:
        """Settle the run's status from its counts.

        SUCCEEDED when every upload completed, PARTIAL when some failed, FAILED when none
        completed; CANCELLED (resumable) while uploads remain and nobody holds them, and
        RUNNING while another worker still holds a live lease.
        """
        ...

    async def aclose(self) -> None:
        """Release the backend's resources."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@runtime_checkable
class AnswerStore(Protocol):
    """A storage that keeps providers' answers for reuse (every built-in backend does).

    An answer is kept under a key that digests what determined it (see
    [`answer_key`][cardmill.engine.answer_key]): a later upload with the same key, in any
    run of the database, is completed from it by `complete_from_answer` without a
    request. Only answers that completed an upload are kept, never a failure.
    """

    async def claim_answer(
        self, key: str, *, upload_id: str, attempt: int
    ) -> StoredAnswer | AnswerAsked | None:
        """The answer kept under ``key``; else `AnswerAsked` while another upload's live
        claim is asking for it (wait, and look again); else None: the claim of
        ``upload_id`` at ``attempt`` is now the one asking, and others wait for it."""
        ...

    async def find_answers(self, keys: Sequence[str]) -> dict[str, StoredAnswer]:
        """The answers kept under any of ``keys`` (at most 1,000), by key; a read that
        changes nothing (a dry run's)."""
        ...

    async def store_answer(
        self,
        key: str,
        drafts: Sequence[CardDraft],
        *,
        upload_id: str,
        provider: str = "",
        model: str = "",
        usage: Usage | None = None,
        cost_usd: float = 0.0,
    ) -> None:
        """Keep a provider's answer under ``key`` as soon as it arrives, before its upload
        is completed, so that a crash in between does not pay for it again; the first
        answer kept under a key stays. ``usage`` and ``cost_usd`` are what its requests
        used and cost."""
        ...

    async def complete_from_answer(
        self,
        upload_id: str,
        answer: StoredAnswer,
        *,
        worker: str | None = None,
        attempt: int | None = None,
    ) -> bool:
        """`Storage.complete_upload` with ``answer``'s cards (new ids, this upload's), in
        ONE transaction with marking the upload reused and adding to the run's
        ``reused_items``, ``saved_tokens`` and ``saved_cost_usd``; no request, cost or
        token is recorded. Fenced and idempotent as `complete_upload`."""
        ...

    async def answer_stats(self) -> AnswerStats:
        """What the store holds."""
        ...

    async def forget_answers(
        self, *, before: datetime | None = None, model: str | None = None
    ) -> int:
        """Delete the answers last used before ``before`` (any, when None) of ``model``
        (any, when None); returns how many. Uploads completed from them keep their
        cards."""
        ...


def answer_usage(usage: Usage | None) -> Usage:
    """What an answer kept records of its requests' usage: all their input tokens
    (uncached, cache reads and writes) and their output tokens."""
    u = usage or Usage()
    read, written = u.cache_read_input_tokens, u.cache_creation_input_tokens
    return Usage(u.input_tokens + read + written, u.output_tokens)


def check_answer_keys(keys: object) -> tuple[str, ...]:
    """Refuse more than 1,000 keys, or one that is not a key."""
    if isinstance(keys, str) or not isinstance(keys, Sequence) or len(keys) > 1000:
        raise InputError("keys must be a sequence of at most 1,000 answer keys")
    return tuple(check_answer_key(key) for key in keys)


def check_answer_key(key: object) -> str:
    """Refuse a key that is not a short printable string."""
    if not isinstance(key, str) or not 0 < len(key) <= 200 or not key.isprintable():
        raise InputError(f"answer key must be a short printable string, not {key!r}")
    return key


def new_id(prefix: str) -> str:
    """A short random id such as ``run-3f9a1c2b7d4e``."""
    return f"{prefix}-{secrets.token_hex(6)}"


def card_id(upload_id: str, ordinal: int) -> str:
    """Cards are named after their upload and place: unique by construction."""
    return f"{upload_id}.{ordinal}"


def one_line(error: str) -> str:
    """Fold an error message onto one bounded line every store can hold (see
    `clean_text`: a message quoting bad text must not fail as that text did)."""
    text = " ".join(clean_text(str(error)).split()) or "unknown error"
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 1] + "…"
    return text


def run_name(name: str | None, run_id: str) -> str:
    """The name a run is stored under: the one given, cleaned, or its id."""
    return (clean_text(name) if name else "") or run_id


def check_drafts(drafts: Sequence[CardDraft]) -> tuple[CardDraft, ...]:
    """Refuse anything that is not a CardDraft before a transaction starts."""
    out = tuple(drafts)
    for i, d in enumerate(out):
        if not isinstance(d, CardDraft):
            raise InputError(f"drafts[{i}] is a {type(d).__name__}, not a CardDraft")
    return out


def check_names(provider: object, model: object) -> None:
    """Refuse a provider or model name that is not a short line of printable text."""
    for what, value in (("provider", provider), ("model", model)):
        if not isinstance(value, str) or len(value) > 200 or not value.isprintable():
            raise InputError(f"{what} must be a printable name of at most 200 characters")


def check_recipe(recipe: object) -> None:
    """Refuse anything that is not a Recipe before a run is created."""
    if not isinstance(recipe, Recipe):
        raise InputError(f"recipe must be a Recipe, not {type(recipe).__name__}")


def check_against(recipe: Recipe, drafts: Sequence[CardDraft]) -> None:
    """Refuse drafts that do not fit the run's recipe, before anything is written."""
    for i, draft in enumerate(drafts):
        try:
            recipe.check(draft, where=f"cards[{i}]")
        except InputError as exc:
            raise UnstorableData(f"does not fit recipe {recipe.name!r}: {exc}") from None


def check_batch(batch: int) -> None:
    if not batch >= 1:
        raise InputError("batch must be >= 1")


def holds(
    status: UploadStatus,
    holder: str | None,
    attempts: int,
    worker: str | None,
    attempt: int | None,
) -> bool:
    """Whether a call fenced by ``worker`` and ``attempt`` (either may be None) may act."""
    if worker is None and attempt is None:
        return True
    return (
        status == UploadStatus.LOADING
        and (worker is None or holder == worker)
        and (attempt is None or attempts == attempt)
    )


NANOS_PER_USD: Final = 1_000_000_000
MAX_PROVIDER_BATCH_ID_CHARS: Final = 256
MAX_BATCH_COUNT: Final = 2**31 - 1


def check_cost(cost_usd: float) -> None:
    """Refuse a cost that cannot be added up."""
    if not (
        isinstance(cost_usd, int | float)
        and not isinstance(cost_usd, bool)
        and math.isfinite(cost_usd)
        and 0 <= cost_usd <= MAX_COST_USD
    ):
        raise InputError(
            f"cost_usd must be a finite number from 0 to {MAX_COST_USD:g}, not {cost_usd!r}"
        )


def check_usage(usage: object) -> None:
    """Refuse a usage that is not a Usage (or None)."""
    if usage is not None and not isinstance(usage, Usage):
        raise InputError(f"usage must be a Usage or None, not {type(usage).__name__}")


# The most requests one settlement may record: far more than any retry policy makes
# for one claim, far less than the stored sums can hold.
MAX_SETTLED_REQUESTS: Final = 1_000_000


@attrs.frozen
class Spent:
    """What one settlement adds to its upload and run: tokens, the cost in whole
    nano-dollars, the requests made and how many of them were answered 429."""

    usage: Usage | None = None
    nanos: int = 0
    requests: int = 0
    rate_limited: int = 0

    @property
    def nothing(self) -> bool:
        """Whether there is nothing to add."""
        return self.usage is None and not (self.nanos or self.requests or self.rate_limited)


def check_count(name: str, value: object) -> int:
    """Refuse a request count that is not a whole number from 0 to MAX_SETTLED_REQUESTS."""
    if not (
        isinstance(value, int)
        and not isinstance(value, bool)
        and 0 <= value <= MAX_SETTLED_REQUESTS
    ):
        raise InputError(
            f"{name} must be a whole number from 0 to {MAX_SETTLED_REQUESTS:,}, not {value!r}"
        )
    return value


def check_spend(
    usage: object, cost_usd: float, requests: object = 0, rate_limited: object = 0
) -> Spent:
    """Check a settlement's ``usage``, ``cost_usd``, ``requests`` and ``rate_limited``.

    Costs are kept as integers (nano-dollars) so that sums are exact and the same on
    every backend. A 429 is the answer to a request: ``rate_limited`` is at most
    ``requests``.
    """
    check_cost(cost_usd)
    check_usage(usage)
    made = check_count("requests", requests)
    refused = check_count("rate_limited", rate_limited)
    if refused > made:
        raise InputError(
            f"rate_limited ({refused}) must not exceed requests ({made}): a 429 answers a request"
        )
    assert usage is None or isinstance(usage, Usage)
    return Spent(usage, round(cost_usd * NANOS_PER_USD), made, refused)


def to_usd(nanos: int) -> float:
    """A stored cost in nano-dollars as dollars."""
    return nanos / NANOS_PER_USD


def plain_usage(usage: Usage) -> Usage:
    """The four token counts a store keeps (``limit_input_tokens`` is pacing's, not
    bookkeeping's)."""
    return Usage(
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_read_input_tokens,
        usage.cache_creation_input_tokens,
    )


def add_usage(total: Usage, more: Usage | None) -> Usage:
    """``total`` plus ``more``, as a store keeps it."""
    if more is None:
        return plain_usage(total)
    return plain_usage(plain_usage(total) + plain_usage(more))


def check_upload_ids(upload_ids: object) -> tuple[str, ...]:
    """The upload ids a batch is asked to take, each once, in order."""
    if isinstance(upload_ids, str | bytes) or not isinstance(upload_ids, Sequence):
        raise InputError(
            f"upload_ids must be a sequence of upload ids, not {type(upload_ids).__name__}"
        )
    for i, each in enumerate(upload_ids):
        if not isinstance(each, str):
            raise InputError(f"upload_ids[{i}] is a {type(each).__name__}, not a str")
    return tuple(dict.fromkeys(upload_ids))


MAX_UPLOADS_BY_ID: Final = 1000


def check_wanted_uploads(upload_ids: object) -> tuple[str, ...]:
    """The ids `get_uploads` is asked for, each once, at most `MAX_UPLOADS_BY_ID`."""
    if isinstance(upload_ids, str | bytes) or not isinstance(upload_ids, Sequence):
        raise InputError(
            f"upload_ids must be a sequence of upload ids, not {type(upload_ids).__name__}"
        )
    if len(upload_ids) > MAX_UPLOADS_BY_ID:
        raise InputError(f"upload_ids holds {len(upload_ids)} ids, more than {MAX_UPLOADS_BY_ID}")
    for i, each in enumerate(upload_ids):
        if not isinstance(each, str):
            raise InputError(f"upload_ids[{i}] is a {type(each).__name__}, not a str")
    # No upload id holds NUL, and PostgreSQL refuses to even compare one.
    return tuple(dict.fromkeys(each for each in upload_ids if "\x00" not in each))


def check_provider_batch_id(provider_batch_id: object) -> str:
    """Refuse a provider batch id that is not a short printable string."""
    if (
        not isinstance(provider_batch_id, str)
        or not provider_batch_id
        or len(provider_batch_id) > MAX_PROVIDER_BATCH_ID_CHARS
        or not provider_batch_id.isprintable()
    ):
        raise InputError(
            "provider_batch_id must be a printable string of 1 to "
            f"{MAX_PROVIDER_BATCH_ID_CHARS} characters, not {provider_batch_id!r:.80}"
        )
    return provider_batch_id


def check_expected_state(expect: object) -> BatchState | None:
    """Refuse an expected batch state that is not one; the state as a BatchState."""
    if expect is None or isinstance(expect, BatchState):
        return expect
    if isinstance(expect, str) and expect in BatchState.__members__.values():
        return BatchState(expect)
    raise InputError(f"expect must be a BatchState or None, not {expect!r:.40}")


def check_batch_update(state: object, counts: object) -> BatchState | None:
    """Refuse a batch state or counts that cannot be stored; the state as a BatchState."""
    if counts is not None:
        if not isinstance(counts, BatchCounts):
            raise InputError(f"counts must be BatchCounts or None, not {type(counts).__name__}")
        for field in attrs.fields(BatchCounts):
            n = getattr(counts, field.name)
            if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_BATCH_COUNT:
                raise InputError(
                    f"counts.{field.name} must be a whole number from 0 to {MAX_BATCH_COUNT},"
                    f" not {n!r}"
                )
    if state is None:
        return None
    if isinstance(state, str) and state in BatchState.__members__.values():
        return BatchState(state)
    raise InputError(f"state must be a BatchState, not {state!r:.80}")


#: A batch may get its provider id while SUBMITTING, or CANCELING when it was cancelled
#: while its create call was in flight.
SUBMITTED_FROM: Final = (BatchState.SUBMITTING, BatchState.CANCELING)


def check_creator(creator: object) -> str | None:
    """Refuse a batch creator that is not None or a short printable string."""
    if creator is not None and (
        not isinstance(creator, str)
        or not creator
        or len(creator) > MAX_PROVIDER_BATCH_ID_CHARS
        or not creator.isprintable()
    ):
        raise InputError(
            "creator must be None or a printable string of 1 to "
            f"{MAX_PROVIDER_BATCH_ID_CHARS} characters, not {creator!r:.80}"
        )
    return creator


def check_lease(lease_seconds: float) -> None:
    if not lease_seconds >= 0:
        raise InputError("lease_seconds must be >= 0")


def to_datetime(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)
