"""The numbers a database holds for every run, in Prometheus's text format.

A process's own metrics ([`EngineMetrics`][cardmill.metrics.EngineMetrics]) count what
that process did since it started; these read the storage on each scrape, so they cover
every run whoever worked on it, and survive restarts. Their names follow the process's
(``cardmill_run_tokens`` beside ``cardmill_tokens_total``, the same label names), with
``cardmill_run_`` for what is read per run.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from ..model import BatchCounts, Run, UploadStatus
from ..storage import Storage
from ._prometheus import escape, help_text, number

__all__ = ["storage_prometheus_text"]

_FAMILIES: Final = {
    "cardmill_runs": "Runs in the database, by status.",
    "cardmill_run_info": "One per run: its name, status and recipe as labels.",
    "cardmill_run_uploads": "A run's uploads, by status.",
    "cardmill_run_cards": "A run's stored cards.",
    "cardmill_run_tokens": "Tokens a run's requests reported, by type: uncached input, "
    "output, cache read and write.",
    "cardmill_run_cost_usd": "What a run's requests cost (USD, as recorded; 0 when the "
    "model had no price).",
    "cardmill_run_batches_open": "A run's provider batches not yet collected.",
    "cardmill_run_batch_requests": "Requests of a run's open batches, by the state the "
    "provider last gave them.",
}
_BATCH_STATES: Final = ("processing", "succeeded", "errored", "canceled", "expired")

Sample = tuple[str, tuple[tuple[str, str], ...], float | int]


async def storage_prometheus_text(storage: Storage) -> str:
    """What ``storage`` holds for every run, rendered in Prometheus's text format 0.0.4.

    Every family is a gauge: ``cardmill_runs`` (by ``cardmill_run_status``), and per run
    (``cardmill_run_id``) ``cardmill_run_info``, ``cardmill_run_uploads`` (by
    ``cardmill_upload_status``), ``cardmill_run_cards``, ``cardmill_run_tokens`` (by
    ``cardmill_token_type``), ``cardmill_run_cost_usd``, ``cardmill_run_batches_open`` and
    ``cardmill_run_batch_requests`` (by ``cardmill_batch_request_state``, summed over the
    open batches). 429s, the pace and the learnt limits are known only to a running
    process: its ``--metrics-port``.

    A scrape reads the list of runs, and for a run with uploads still to settle its
    LOADING uploads and open batches: finished runs cost no more than their row.

    Args:
        storage: an open storage, only read.
    """
    runs = await storage.list_runs()
    samples: list[Sample] = []
    by_status: dict[str, int] = {}
    for run in runs:
        by_status[run.status.value] = by_status.get(run.status.value, 0) + 1
        samples.extend(await _run_samples(storage, run))
    for status, count in sorted(by_status.items()):
        samples.append(("cardmill_runs", (("cardmill_run_status", status),), count))
    return _render(samples)


async def _run_samples(storage: Storage, run: Run) -> list[Sample]:
    rid = ("cardmill_run_id", run.id)
    settled = run.completed_items + run.failed_items
    loading = 0
    open_counts: list[BatchCounts] = []
    if settled < run.total_items:
        loading = len(await storage.list_uploads(run.id, UploadStatus.LOADING))
        open_counts = [b.counts for b in await storage.list_batches(run.id, open_only=True)]
    pending = max(run.total_items - settled - loading, 0)
    info = (
        rid,
        ("cardmill_run_name", run.name),
        ("cardmill_run_status", run.status.value),
        ("cardmill_recipe", run.recipe_label),
    )
    samples: list[Sample] = [("cardmill_run_info", info, 1)]
    for status, count in (
        ("pending", pending),
        ("loading", loading),
        ("completed", run.completed_items),
        ("failed", run.failed_items),
    ):
        samples.append(("cardmill_run_uploads", (rid, ("cardmill_upload_status", status)), count))
    samples.append(("cardmill_run_cards", (rid,), run.total_cards))
    usage = run.usage
    for kind, count in (
        ("input", usage.input_tokens),
        ("output", usage.output_tokens),
        ("cache_read", usage.cache_read_input_tokens),
        ("cache_write", usage.cache_creation_input_tokens),
    ):
        samples.append(("cardmill_run_tokens", (rid, ("cardmill_token_type", kind)), count))
    samples.append(("cardmill_run_cost_usd", (rid,), run.cost_usd))
    samples.append(("cardmill_run_batches_open", (rid,), len(open_counts)))
    if open_counts:
        for state in _BATCH_STATES:
            total = sum(getattr(c, state) for c in open_counts)
            labels = (rid, ("cardmill_batch_request_state", state))
            samples.append(("cardmill_run_batch_requests", labels, total))
    return samples


def _render(samples: Iterable[Sample]) -> str:
    grouped: dict[str, list[str]] = {name: [] for name in _FAMILIES}
    for name, labels, value in samples:
        inner = ",".join(f'{k}="{escape(v)}"' for k, v in labels)
        grouped[name].append(f"{name}{{{inner}}} {number(value)}")
    out: list[str] = []
    for name, lines in grouped.items():
        out.append(f"# HELP {name} {help_text(_FAMILIES[name])}")
        out.append(f"# TYPE {name} gauge")
        out.extend(lines)
    return "".join(line + "\n" for line in out)
