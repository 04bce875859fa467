"""AnthropicProvider's batches against a server that follows the documentation but not
our fake: other id shapes, results elsewhere and out of order, unknown fields."""

from __future__ import annotations

import functools

import pytest

from cardmill import Document, PermanentError
from cardmill.providers import AnthropicProvider, BatchResult

from .docs_batch_server import BASE, KEY, DocsBatchServer


def doc(i: int) -> Document:
    return Document(f"notes-{i}.md", f"# Topic {i}\n\nFact number {i} is true.\n".encode())


async def round_trip(p: AnthropicProvider, n: int = 3) -> tuple[str, dict[str, BatchResult]]:
    items = [await p.batch_request(doc(i), f"u{i}") for i in range(n)]
    batch = await p.create_batch(items)
    assert (await p.retrieve_batch(batch.provider_batch_id)).ended
    results = {r.custom_id: r async for r in p.batch_results(batch.provider_batch_id)}
    return batch.provider_batch_id, results


def titles(results: dict[str, BatchResult]) -> dict[str, str]:
    out = {}
    for custom_id, result in results.items():
        assert result.analysis is not None, result
        out[custom_id] = result.analysis.cards[0].title
    return out


@pytest.mark.parametrize(
    "results_url",
    [
        pytest.param(lambda b: f"{BASE}/v1/files/{b}/content", id="another-path"),
        pytest.param(lambda b: f"/v1/results/{b}.jsonl", id="host-relative"),
        pytest.param(lambda b: f"{BASE}/v1/messages/batches/{b}/results?sig=x%2Fy", id="query"),
    ],
)
async def test_results_are_read_from_the_batch_results_url_in_any_order(
    results_url: object,
) -> None:
    server = DocsBatchServer(results_url=results_url)  # type: ignore[arg-type]
    _batch_id, results = await round_trip(server.provider())
    assert titles(results) == {f"u{i}": f"card u{i}" for i in range(3)}


async def test_a_results_url_on_another_host_is_not_sent_the_api_key() -> None:
    server = DocsBatchServer(
        results_url=lambda b: f"https://someone:pw-of-theirs@elsewhere.test/{b}/results"
    )
    p = server.provider()
    with pytest.raises(PermanentError) as caught:
        await round_trip(p)
    assert "https://elsewhere.test" in str(caught.value)
    assert "pw-of-theirs" not in str(caught.value)
    assert KEY not in str(caught.value)
    assert all(r.url.host == "batches.test" for r in server.seen)


async def test_a_results_url_on_another_port_or_scheme_is_not_sent_the_api_key() -> None:
    for url in ("http://batches.test:8443/r", "https://batches.test/r"):
        server = DocsBatchServer(results_url=functools.partial("{}/{}".format, url))
        with pytest.raises(PermanentError):
            await round_trip(server.provider())
        assert all(r.url.port is None and r.url.scheme == "http" for r in server.seen)


@pytest.mark.parametrize("shape", ["msgbatch.{n:08d}", "mb~{n}.v2", "{n:0200d}"])
async def test_batch_ids_of_other_url_safe_shapes_are_followed(shape: str) -> None:
    # "The format and length of IDs may change over time."
    server = DocsBatchServer(batch_id=lambda n: shape.format(n=n))
    batch_id, results = await round_trip(server.provider())
    assert batch_id == shape.format(n=1)
    assert titles(results) == {f"u{i}": f"card u{i}" for i in range(3)}


async def test_an_archived_batch_reads_as_archived() -> None:
    server = DocsBatchServer()
    p = server.provider()
    batch = await p.create_batch([await p.batch_request(doc(0), "u0")])
    assert not (await p.retrieve_batch(batch.provider_batch_id)).archived
    server.archived_at = "2026-12-29T00:00:00Z"
    archived = await p.retrieve_batch(batch.provider_batch_id)
    assert archived.ended
    assert archived.archived
