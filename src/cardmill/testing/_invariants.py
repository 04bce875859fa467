"""The four storage invariants, checkable against any backend."""

from __future__ import annotations

from collections import Counter

from ..errors import BatchNotFound
from ..model import BATCH_HOLDER_PREFIX, Run, RunStatus, Upload, UploadStatus, Usage
from ..storage import Storage

__all__ = ["InvariantViolation", "check_invariants"]


class InvariantViolation(AssertionError):
    """A storage invariant does not hold; the message says which and by how much."""


async def check_invariants(storage: Storage, run_id: str) -> None:
    """Check the storage invariants for one run, reading through the protocol.

    1. ``total_cards`` equals the stored cards; 2. ``completed_items`` / ``failed_items``
    equal the COMPLETED / FAILED uploads; 3. an upload has cards iff it is COMPLETED,
    exactly ``card_count`` of them, with distinct ordinals; 4. ``completed_items +
    failed_items <= total_items``, equal once the run is finished. Also: the run's
    ``usage``, ``cost_usd``, ``requests`` and ``rate_limited`` are the sums of its
    uploads' (costs compared in whole nano-dollars, as they are stored), no upload or
    run has more 429s than requests, ``reused_items``, ``saved_tokens`` and
    ``saved_cost_usd`` are the sums of its reused uploads' (each COMPLETED, with its
    answer's key), and every upload LOADING under a batch
    (``batch:<id>``) belongs to an open batch of the run that lists it with its current
    attempt.

    These are the invariants documented in docs/storage.md. Use it in tests of your own
    backend or integration.

    Raises:
        InvariantViolation: with every broken invariant listed.
    """
    run = await storage.get_run(run_id)
    uploads = await storage.list_uploads(run_id)
    cards = await storage.list_cards(run_id)
    problems: list[str] = []
    if run.total_cards != len(cards):
        problems.append(f"total_cards={run.total_cards} but {len(cards)} cards are stored")
    statuses = Counter(u.status for u in uploads)
    if run.completed_items != statuses[UploadStatus.COMPLETED]:
        problems.append(
            f"completed_items={run.completed_items} but "
            f"{statuses[UploadStatus.COMPLETED]} uploads are COMPLETED"
        )
    if run.failed_items != statuses[UploadStatus.FAILED]:
        problems.append(
            f"failed_items={run.failed_items} but "
            f"{statuses[UploadStatus.FAILED]} uploads are FAILED"
        )
    if run.total_items != len(uploads):
        problems.append(f"total_items={run.total_items} but the run has {len(uploads)} uploads")
    per_upload: dict[str, list[int]] = {}
    for card in cards:
        per_upload.setdefault(card.upload_id, []).append(card.ordinal)
    for u in uploads:
        ordinals = per_upload.pop(u.id, [])
        if len(set(ordinals)) != len(ordinals):
            problems.append(f"upload {u.id} has duplicate ordinals {sorted(ordinals)}")
        if u.status == UploadStatus.COMPLETED:
            if len(ordinals) != u.card_count:
                problems.append(
                    f"upload {u.id} is COMPLETED with card_count={u.card_count} "
                    f"but has {len(ordinals)} cards"
                )
        elif ordinals:
            problems.append(f"upload {u.id} is {u.status.name} but has {len(ordinals)} cards")
    if per_upload:
        problems.append(f"cards belong to uploads outside the run: {sorted(per_upload)}")
    done = run.completed_items + run.failed_items
    if done > run.total_items:
        problems.append(f"completed+failed={done} exceeds total_items={run.total_items}")
    if run.status.finished and done != run.total_items:
        problems.append(f"run is {run.status.name} but only {done}/{run.total_items} are done")
    if run.status == RunStatus.SUCCEEDED and run.failed_items:
        problems.append(f"run SUCCEEDED with {run.failed_items} failed uploads")
    problems += _spend_problems(run.usage, run.cost_usd, uploads)
    problems += _request_problems(run, uploads)
    problems += _reuse_problems(run, uploads)
    problems += await _batch_problems(storage, run_id, uploads)
    if problems:
        raise InvariantViolation(f"run {run_id}: " + "; ".join(problems))


def _nanos(cost_usd: float) -> int:
    return round(cost_usd * 1_000_000_000)


def _spend_problems(usage: Usage, cost_usd: float, uploads: list[Upload]) -> list[str]:
    total = Usage()
    for u in uploads:
        total += u.usage
    problems = []
    if usage != total:
        problems.append(f"run usage {usage} but its uploads add up to {total}")
    nanos = sum(_nanos(u.cost_usd) for u in uploads)
    if _nanos(cost_usd) != nanos:
        problems.append(f"run cost_usd={cost_usd} but its uploads add up to {nanos / 1e9}")
    return problems


def _request_problems(run: Run, uploads: list[Upload]) -> list[str]:
    problems = []
    for name in ("requests", "rate_limited"):
        total = sum(getattr(u, name) for u in uploads)
        if getattr(run, name) != total:
            problems.append(f"run {name}={getattr(run, name)} but its uploads add up to {total}")
    for u in uploads:
        if u.rate_limited > u.requests:
            problems.append(
                f"upload {u.id} has rate_limited={u.rate_limited} above requests={u.requests}"
            )
    if run.rate_limited > run.requests:
        problems.append(f"run rate_limited={run.rate_limited} above requests={run.requests}")
    return problems


def _reuse_problems(run: Run, uploads: list[Upload]) -> list[str]:
    problems = []
    reused = [u for u in uploads if u.reused]
    if run.reused_items != len(reused):
        problems.append(f"reused_items={run.reused_items} but {len(reused)} uploads are reused")
    tokens = sum(u.saved_tokens for u in reused)
    if run.saved_tokens != tokens:
        problems.append(f"run saved_tokens={run.saved_tokens} but its uploads add up to {tokens}")
    nanos = sum(_nanos(u.saved_cost_usd) for u in reused)
    if _nanos(run.saved_cost_usd) != nanos:
        problems.append(
            f"run saved_cost_usd={run.saved_cost_usd} but its uploads add up to {nanos / 1e9}"
        )
    for u in reused:
        if u.status != UploadStatus.COMPLETED or u.answer_key is None:
            problems.append(f"upload {u.id} is reused but {u.status.name}, key {u.answer_key}")
    return problems


async def _batch_problems(storage: Storage, run_id: str, uploads: list[Upload]) -> list[str]:
    problems = []
    for u in uploads:
        if u.status != UploadStatus.LOADING or not (u.worker or "").startswith(BATCH_HOLDER_PREFIX):
            continue
        assert u.worker is not None
        batch_id = u.worker.removeprefix(BATCH_HOLDER_PREFIX)
        try:
            batch = await storage.get_batch(batch_id)
        except BatchNotFound:
            problems.append(f"upload {u.id} is held by {u.worker}, which does not exist")
            continue
        if batch.run_id != run_id:
            problems.append(f"upload {u.id} is held by {u.worker} of run {batch.run_id}")
        if not batch.state.open:
            problems.append(f"upload {u.id} is held by {u.worker}, which is {batch.state}")
        items = {i.upload_id: i for i in await storage.batch_items(batch_id)}
        item = items.get(u.id)
        if item is None:
            problems.append(f"upload {u.id} is held by {u.worker}, which does not list it")
        elif item.attempt != u.attempts:
            problems.append(
                f"upload {u.id} is at attempt {u.attempts} but {u.worker} lists attempt "
                f"{item.attempt}"
            )
    return problems
