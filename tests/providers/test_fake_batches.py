"""FakeAnthropicServer's Message Batches endpoints, on the wire and through the SDK."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import datetime
from typing import Any

import anthropic
import httpx
import pytest
import trio

from cardmill.testing import FakeAnthropicServer

KEY = "fake-batches-server-key-0123456789"
HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}


def params(text: str = "Make cards.") -> dict[str, Any]:
    return {
        "model": "claude-fake",
        "max_tokens": 100,
        "system": [{"type": "text", "text": "x" * 400, "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
    }


def items(n: int, prefix: str = "r") -> list[dict[str, Any]]:
    return [{"custom_id": f"{prefix}{i}", "params": params(f"text {i}")} for i in range(n)]


async def create(client: httpx.AsyncClient, requests: list[dict[str, Any]]) -> httpx.Response:
    return await client.post("/v1/messages/batches", json={"requests": requests})


def client_for(server: FakeAnthropicServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, headers=HEADERS)


RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


async def test_a_batch_has_the_api_s_shape_and_ends_after_its_delay(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with FakeAnthropicServer(batch_delay=60, api_key=KEY) as server:
        async with client_for(server) as client:
            t0 = trio.current_time()
            created = (await create(client, items(2))).json()
            batch_id = created["id"]
            await trio.sleep(59)
            before = (await client.get(f"/v1/messages/batches/{batch_id}")).json()
            early = await client.get(f"/v1/messages/batches/{batch_id}/results")
            await trio.sleep(1)
            after = (await client.get(f"/v1/messages/batches/{batch_id}")).json()
            results = await client.get(f"/v1/messages/batches/{batch_id}/results")
    assert trio.current_time() - t0 == 60
    assert batch_id.startswith("msgbatch_")
    assert created["type"] == "message_batch"
    assert created["processing_status"] == "in_progress"
    assert created["request_counts"] == {
        "processing": 2,
        "succeeded": 0,
        "errored": 0,
        "canceled": 0,
        "expired": 0,
    }
    assert RFC3339.fullmatch(created["created_at"])
    assert RFC3339.fullmatch(created["expires_at"])
    created_at = datetime.fromisoformat(created["created_at"])
    expires_at = datetime.fromisoformat(created["expires_at"])
    assert (expires_at - created_at).total_seconds() == 24 * 3600
    assert created["ended_at"] is None
    assert created["results_url"] is None
    assert before["processing_status"] == "in_progress"
    assert early.status_code == 400
    assert early.json()["error"]["type"] == "invalid_request_error"
    assert after["processing_status"] == "ended"
    assert RFC3339.fullmatch(after["ended_at"])
    assert after["request_counts"]["succeeded"] == 2
    assert after["results_url"] == f"{server.url}/v1/messages/batches/{batch_id}/results"
    lines = [json.loads(line) for line in results.text.splitlines()]
    assert [line["custom_id"] for line in lines] == ["r0", "r1"]
    for line in lines:
        message = line["result"]["message"]
        assert line["result"]["type"] == "succeeded"
        assert message["type"] == "message"
        assert message["usage"]["output_tokens"] > 0
    # the cached system prompt is written once, then read
    assert lines[0]["result"]["message"]["usage"]["cache_creation_input_tokens"] == 100
    assert lines[1]["result"]["message"]["usage"]["cache_read_input_tokens"] == 100
    assert server.batch_calls == Counter(create=1, retrieve=2, results=2)


async def test_results_stream_as_chunked_jsonl() -> None:
    async with FakeAnthropicServer(batch_delay=None) as server, client_for(server) as client:
        batch_id = (await create(client, items(3))).json()["id"]
        server.end_batch(batch_id)
        async with client.stream("GET", f"/v1/messages/batches/{batch_id}/results") as response:
            assert response.headers.get("transfer-encoding") == "chunked"
            assert "content-length" not in response.headers
            lines = [line async for line in response.aiter_lines()]
    assert len(lines) == 3


async def test_the_batch_log_counts_every_submission_of_a_custom_id_and_document() -> None:
    async with FakeAnthropicServer(batch_delay=None) as server, client_for(server) as client:
        await create(client, items(2))
        await create(client, items(1))  # r0 again
        refused = await create(client, [*items(1), *items(1)])  # a duplicate: refused
    assert refused.status_code == 400
    log = server.batch_log
    assert Counter(s.custom_id for s in log) == Counter(r0=2, r1=1)
    assert Counter(s.text for s in log) == Counter({"text 0": 2, "text 1": 1})
    assert len({s.batch_id for s in log}) == 2
    assert server.batch_calls["create"] == 3


@pytest.mark.parametrize(
    ("requests", "status", "kind", "message"),
    [
        ([], 400, "invalid_request_error", "1 to 4 requests, not 0"),
        (items(5), 400, "invalid_request_error", "1 to 4 requests, not 5"),
        ([{"custom_id": "", "params": params()}], 400, "invalid_request_error", "pattern"),
        ([{"custom_id": "a" * 65, "params": params()}], 400, "invalid_request_error", "pattern"),
        ([{"custom_id": "a.b", "params": params()}], 400, "invalid_request_error", "pattern"),
        ([{"custom_id": 7, "params": params()}], 400, "invalid_request_error", "pattern"),
        ([{"params": params()}], 400, "invalid_request_error", "custom_id"),
        ([{"custom_id": "a", "params": []}], 400, "invalid_request_error", "params"),
        (
            [{"custom_id": "a", "params": params()}, {"custom_id": "a", "params": params()}],
            400,
            "invalid_request_error",
            "duplicate custom_id 'a'",
        ),
        (
            [{"custom_id": "big", "params": params("x" * 5000)}],
            413,
            "request_too_large",
            "maximum allowed number of bytes",
        ),
    ],
)
async def test_the_server_refuses_what_the_api_refuses(
    requests: list[dict[str, Any]], status: int, kind: str, message: str
) -> None:
    async with (
        FakeAnthropicServer(batch_max_requests=4, batch_max_bytes=4000) as server,
        client_for(server) as client,
    ):
        answer = await create(client, requests)
        listed = (await client.get("/v1/messages/batches")).json()
    assert answer.status_code == status
    assert answer.json()["type"] == "error"
    assert answer.json()["error"]["type"] == kind
    assert message in answer.json()["error"]["message"]
    assert server.batch_log == []
    assert listed["data"] == []


async def test_the_api_s_own_limit_of_100_000_requests() -> None:
    tiny = {"model": "m", "max_tokens": 1, "messages": []}
    async with FakeAnthropicServer() as server, client_for(server) as client:
        over = [{"custom_id": f"c{i}", "params": tiny} for i in range(100_001)]
        answer = await create(client, over)
    assert answer.status_code == 400
    assert "1 to 100000 requests, not 100001" in answer.json()["error"]["message"]


async def test_list_pages_newest_first_with_before_and_after_ids() -> None:
    async with FakeAnthropicServer(batch_delay=None) as server, client_for(server) as client:
        ids = [(await create(client, items(1, prefix=f"b{i}x"))).json()["id"] for i in range(5)]
        newest = ids[::-1]
        first = (await client.get("/v1/messages/batches", params={"limit": 2})).json()
        second = (
            await client.get(
                "/v1/messages/batches", params={"limit": 2, "after_id": first["last_id"]}
            )
        ).json()
        last = (
            await client.get(
                "/v1/messages/batches", params={"limit": 2, "after_id": second["last_id"]}
            )
        ).json()
        back = (
            await client.get(
                "/v1/messages/batches", params={"limit": 2, "before_id": last["first_id"]}
            )
        ).json()
        bad = await client.get("/v1/messages/batches", params={"limit": 1001})
    assert [b["id"] for b in first["data"]] == newest[:2]
    assert (first["first_id"], first["last_id"], first["has_more"]) == (ids[4], ids[3], True)
    assert [b["id"] for b in second["data"]] == newest[2:4]
    assert second["has_more"] is True
    assert [b["id"] for b in last["data"]] == newest[4:]
    assert last["has_more"] is False
    assert [b["id"] for b in back["data"]] == newest[2:4]
    assert back["has_more"] is True
    assert bad.status_code == 400


async def test_the_sdk_pages_through_every_batch() -> None:
    async with FakeAnthropicServer(batch_delay=None) as server:
        sdk = anthropic.AsyncAnthropic(api_key=KEY, base_url=server.url, max_retries=0)
        ids = [(await sdk.messages.batches.create(requests=items(1))).id for _ in range(7)]  # type: ignore[arg-type]
        seen = [b.id async for b in sdk.messages.batches.list(limit=3)]
        await sdk.close()
    assert seen == ids[::-1]
    assert server.batch_calls["list"] == 3


async def test_cancel_goes_through_canceling_to_ended() -> None:
    async with FakeAnthropicServer(batch_delay=None) as server, client_for(server) as client:
        batch_id = (await create(client, items(3))).json()["id"]
        canceled = (await client.post(f"/v1/messages/batches/{batch_id}/cancel")).json()
        again = (await client.post(f"/v1/messages/batches/{batch_id}/cancel")).json()
        assert server.batch_status(batch_id) == "canceling"
        server.end_batch(batch_id)
        ended = (await client.get(f"/v1/messages/batches/{batch_id}")).json()
        refused = await client.post(f"/v1/messages/batches/{batch_id}/cancel")
        lines = (await client.get(f"/v1/messages/batches/{batch_id}/results")).text
    assert canceled["processing_status"] == "canceling"
    assert RFC3339.fullmatch(canceled["cancel_initiated_at"])
    assert again["processing_status"] == "canceling"
    assert ended["processing_status"] == "ended"
    assert ended["request_counts"]["canceled"] == 3
    assert refused.status_code == 400
    kinds = [json.loads(line)["result"]["type"] for line in lines.splitlines()]
    assert kinds == ["canceled"] * 3


async def test_item_faults_apply_to_the_next_batch_holding_the_custom_id() -> None:
    async with FakeAnthropicServer(batch_delay=None) as server, client_for(server) as client:
        server.fail_batch_item("r1", "overloaded_error")
        server.fail_batch_item("r2", "expired")
        first = (await create(client, items(3))).json()["id"]
        second = (await create(client, items(3))).json()["id"]
        server.end_batch(first)
        server.end_batch(second)
        one = (await client.get(f"/v1/messages/batches/{first}/results")).text
        two = (await client.get(f"/v1/messages/batches/{second}/results")).text
    results = [json.loads(line)["result"] for line in one.splitlines()]
    assert [r["type"] for r in results] == ["succeeded", "errored", "expired"]
    error = results[1]["error"]
    assert error["type"] == "error"
    assert error["error"]["type"] == "overloaded_error"
    assert [json.loads(line)["result"]["type"] for line in two.splitlines()] == ["succeeded"] * 3


@pytest.mark.parametrize(
    ("fault", "status", "retry_after"), [("429", 429, "1"), ("500", 500, None), ("529", 529, None)]
)
async def test_faults_injected_on_the_batch_endpoints(
    fault: Any, status: int, retry_after: str | None
) -> None:
    async with FakeAnthropicServer(batch_delay=None) as server, client_for(server) as client:
        server.inject_batch(fault)
        refused = await create(client, items(1))
        accepted = await create(client, items(1))
        plain = await client.post("/v1/messages", json=params())
    assert refused.status_code == status
    assert refused.headers.get("retry-after") == retry_after
    assert accepted.status_code == 200
    assert plain.status_code == 200  # batch faults stay on the batch endpoints
    assert len(server.batch_log) == 1
    assert server.batch_calls["create"] == 2


async def test_wrong_key_unknown_batch_and_unknown_route() -> None:
    async with FakeAnthropicServer(api_key=KEY) as server:
        async with httpx.AsyncClient(base_url=server.url, headers={"x-api-key": "wrong"}) as c:
            denied = await c.post("/v1/messages/batches", json={"requests": items(1)})
        async with client_for(server) as client:
            missing = await client.get("/v1/messages/batches/msgbatch_nope")
            route = await client.delete("/v1/messages/batches/msgbatch_nope")
    assert denied.status_code == 401
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found_error"
    assert route.status_code == 404
    assert server.batch_log == []
    assert all(KEY not in json.dumps(r.headers) for r in server.requests)
