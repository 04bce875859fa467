"""The engine with OpenAICompatibleProvider against a server limited the way OpenAI
documents it: a tokens-per-minute limit that counts each request's ``max_tokens`` on
top of its prompt, stated in ``x-ratelimit-*`` headers, in virtual time."""

from __future__ import annotations

import json
import random
from typing import Any

import httpx
import trio
import trio.testing

from cardmill import Document, LimitKind, RunStatus
from cardmill.engine import Engine
from cardmill.providers import OpenAICompatibleProvider
from cardmill.storage import MemoryStorage
from cardmill.testing import HiddenLimits, check_invariants

CARDS = {"cards": [{"title": "T", "body": "B", "tags": ["t"], "quote": None}]}
TPM = 60_000
MAX_TOKENS = 1_000
LATENCY = 1.0


class OpenAIShapedServer:
    """Counts prompt + max_tokens against its TPM bucket when a request arrives.

    Its headers state the bucket as it was when the request was admitted, as a gateway
    in front of the model does.
    """

    def __init__(self, *, counts_max_tokens: bool = True) -> None:
        self.limits = HiddenLimits(
            input_tokens_per_minute=TPM, burst_seconds={LimitKind.INPUT_TOKENS: 10.0}
        )
        self.counts_max_tokens = counts_max_tokens
        self.accepted: list[tuple[float, int]] = []
        self.refused = 0

    def headers(self, *, answer_in: float = 0.0) -> dict[str, str]:
        hint = self.limits.hint(trio.current_time())
        reset = max(0.0, (hint.input_tokens_reset or 0.0) - answer_in)
        return {
            "x-ratelimit-limit-tokens": str(int(hint.input_tokens_limit or 0)),
            "x-ratelimit-remaining-tokens": str(int(hint.input_tokens_remaining or 0)),
            "x-ratelimit-reset-tokens": f"{reset:.3f}s",
        }

    async def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        prompt = 200 + sum(len(m["content"]) for m in body["messages"]) // 4
        counted = prompt + (int(body["max_tokens"]) if self.counts_max_tokens else 0)
        now = trio.current_time()
        admission = self.limits.admit(now, counted)
        if not admission.admitted:
            self.refused += 1
            message = "Rate limit reached for gpt-4o-mini on tokens per min (TPM)"
            return httpx.Response(
                429,
                json={"error": {"message": message, "code": "rate_limit_exceeded"}},
                headers={**self.headers(), "retry-after": f"{admission.wait:.3f}"},
            )
        self.accepted.append((now, counted))
        headers = self.headers(answer_in=LATENCY)
        await trio.sleep(LATENCY)
        answer: dict[str, Any] = {
            "choices": [
                {
                    "message": {"role": "assistant", "content": json.dumps(CARDS)},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": prompt, "completion_tokens": 40},
        }
        return httpx.Response(200, json=answer, headers=headers)


async def run(server: OpenAIShapedServer, *, max_tokens_count: bool) -> None:
    rng = random.Random(3)
    documents = [Document(f"d{i}.txt", b"x" * rng.randrange(400, 2400)) for i in range(150)]
    client = httpx.AsyncClient(transport=httpx.MockTransport(server.handle))
    provider = OpenAICompatibleProvider(
        api_key="fake-openai-key-42",
        base_url="http://127.0.0.1:9/v1",
        model="gpt-4o-mini",
        max_tokens=MAX_TOKENS,
        max_tokens_count=max_tokens_count,
        client=client,
    )
    storage = MemoryStorage()
    run_ = await storage.create_run(documents)
    async with provider:
        engine = Engine(storage, provider, concurrency=8, rng=random.Random(1))
        summary = await engine.execute(run_.id)
    assert summary.run.status == RunStatus.SUCCEEDED
    await check_invariants(storage, run_.id)


def goodput(server: OpenAIShapedServer) -> float:
    """Tokens counted per second from 30 s in, over the limit."""
    start = server.accepted[0][0] + 30.0
    end = server.accepted[-1][0]
    counted = sum(c for t, c in server.accepted if start <= t < end)
    return counted / (end - start) / (TPM / 60)


async def test_max_tokens_counted_by_the_provider_are_paced_for(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The headers say what remains after prompt + max_tokens; the answer's usage names
    # only the prompt. Charging the prompt alone, the pace would run at the stated limit
    # in prompt tokens, a few times what the provider counts (one request in ten was
    # refused).
    server = OpenAIShapedServer()
    await run(server, max_tokens_count=True)
    share = server.refused / (len(server.accepted) + server.refused)
    assert share <= 0.02, (server.refused, len(server.accepted))
    assert goodput(server) >= 0.95


async def test_a_server_that_counts_only_what_was_used_is_not_slowed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # max_tokens_count=False for a server that counts only the prompt: the guesses
    # follow the usage, and the pace the limit.
    server = OpenAIShapedServer(counts_max_tokens=False)
    await run(server, max_tokens_count=False)
    share = server.refused / (len(server.accepted) + server.refused)
    assert share <= 0.02, (server.refused, len(server.accepted))
    assert goodput(server) >= 0.95
