"""`/metrics` of the viewer: what the database holds for every run, in Prometheus's text."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from cardmill import CardDraft, MemoryStorage, Usage
from cardmill._printable import printable
from cardmill.metrics import PROMETHEUS_CONTENT_TYPE, storage_prometheus_text
from cardmill.model import BatchCounts, BatchState

from .conftest import HOSTILE_RUN, client_of, doc, hostile_run

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> tuple[Samples, dict[str, str]]:
    samples: Samples = {}
    kinds: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        kinds[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples, kinds


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def test_metrics_are_off_unless_asked_for(storage: MemoryStorage) -> None:
    async with client_of(storage) as client:
        answer = await client.get("/metrics")
    assert answer.status_code == 404


async def test_every_runs_numbers_from_the_database(storage: MemoryStorage) -> None:
    finished = await hostile_run(storage)
    going = await storage.create_run([doc(f"g{i}.md") for i in range(5)], name="going")
    # One completed with tokens and cost, two held by a batch the provider is working on,
    # one claimed by a worker (LOADING), one still PENDING.
    first = await storage.claim_upload(going.id, worker="w", lease_seconds=60)
    assert first is not None
    used = Usage(
        input_tokens=500, output_tokens=60, cache_read_input_tokens=7, cache_creation_input_tokens=3
    )
    await storage.complete_upload(
        first.id, [CardDraft("a", "b"), CardDraft("c", "d")], usage=used, cost_usd=0.25
    )
    pending = await storage.list_uploads(going.id)
    made = await storage.create_batch(going.id, [pending[1].id, pending[2].id], lease_seconds=60)
    assert made is not None
    batch, _ = made
    await storage.set_batch_submitted(batch.id, "msgbatch_1")
    await storage.update_batch(
        batch.id, state=BatchState.LIVE, counts=BatchCounts(processing=1, succeeded=1)
    )
    assert await storage.claim_upload(going.id, worker="w", lease_seconds=60) is not None

    async with client_of(storage, metrics=True) as client:
        answer = await client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == PROMETHEUS_CONTENT_TYPE
    assert answer.headers["cache-control"] == "no-store"
    assert "content-security-policy" in answer.headers
    samples, kinds = parse(answer.text)
    assert set(kinds.values()) == {"gauge"}

    g = going.id
    uploads = {
        s: value(samples, "cardmill_run_uploads", cardmill_run_id=g, cardmill_upload_status=s)
        for s in ("pending", "loading", "completed", "failed")
    }
    assert uploads == {"pending": 1, "loading": 3, "completed": 1, "failed": 0}
    assert value(samples, "cardmill_run_cards", cardmill_run_id=g) == 2
    tokens = {
        t: value(samples, "cardmill_run_tokens", cardmill_run_id=g, cardmill_token_type=t)
        for t in ("input", "output", "cache_read", "cache_write")
    }
    assert tokens == {"input": 500, "output": 60, "cache_read": 7, "cache_write": 3}
    assert value(samples, "cardmill_run_cost_usd", cardmill_run_id=g) == 0.25
    assert value(samples, "cardmill_run_batches_open", cardmill_run_id=g) == 1
    states = {
        s: value(
            samples,
            "cardmill_run_batch_requests",
            cardmill_run_id=g,
            cardmill_batch_request_state=s,
        )
        for s in ("processing", "succeeded", "errored", "canceled", "expired")
    }
    assert states == {"processing": 1, "succeeded": 1, "errored": 0, "canceled": 0, "expired": 0}

    f = finished.id
    assert value(samples, "cardmill_run_cards", cardmill_run_id=f) == 3
    assert value(samples, "cardmill_run_cost_usd", cardmill_run_id=f) == 0.025
    assert value(samples, "cardmill_run_batches_open", cardmill_run_id=f) == 0
    assert (
        value(samples, "cardmill_run_uploads", cardmill_run_id=f, cardmill_upload_status="failed")
        == 1
    )
    # The run's name is a label value: escaped in the text, whole once parsed.
    info = {
        labels: v
        for (name, labels), v in samples.items()
        if name == "cardmill_run_info" and dict(labels)["cardmill_run_id"] == f
    }
    [(labels, one)] = info.items()
    assert one == 1
    assert dict(labels)["cardmill_run_name"] == HOSTILE_RUN
    assert dict(labels)["cardmill_run_status"] == "partial"
    assert value(samples, "cardmill_runs", cardmill_run_status="partial") == 1
    assert value(samples, "cardmill_runs", cardmill_run_status="running") == 1


async def test_label_values_that_would_break_the_format_are_escaped(
    storage: MemoryStorage,
) -> None:
    name = 'a "quoted" \\ name\nwith a line} 1\ncardmill_run_cards{cardmill_run_id="x"} 999'
    run = await storage.create_run([doc("a.md")], name=name)
    text = await storage_prometheus_text(storage)
    samples, _ = parse(text)
    names = [dict(k)["cardmill_run_name"] for (n, k) in samples if n == "cardmill_run_info"]
    assert names == [name]
    cards: dict[str, Any] = {
        dict(k)["cardmill_run_id"]: v for (n, k), v in samples.items() if n == "cardmill_run_cards"
    }
    assert cards == {run.id: 0}


async def test_an_empty_database_gives_the_families_and_no_samples(
    storage: MemoryStorage,
) -> None:
    samples, kinds = parse(await storage_prometheus_text(storage))
    assert samples == {}
    assert "cardmill_run_uploads" in kinds


async def test_control_and_bidi_characters_in_a_label_are_shown_escaped(
    storage: MemoryStorage,
) -> None:
    # A run's name is the user's: a terminal or a dashboard reading the labels would
    # otherwise act on ESC and show the name reversed.
    run = await storage.create_run([doc("a.md")], name="x\x1b[2J\x07\u202ey\u200e\u2066")
    text = await storage_prometheus_text(storage)
    for raw in "\x1b\x07\u202e\u200e\u2066":
        assert raw not in text
    samples, _ = parse(text)
    names = [dict(k)["cardmill_run_name"] for (n, k) in samples if n == "cardmill_run_info"]
    assert names == [printable(run.name)]
    assert names[0].endswith("y\\u200e\\u2066")
