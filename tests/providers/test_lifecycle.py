"""Every provider is an async context manager with `aclose()`, so any one of them can take
another's place in `async with ... as provider:`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio.testing

from cardmill import Document, Engine, MemoryStorage, RunStatus
from cardmill.providers import AnthropicProvider, ExtractiveProvider, OpenAICompatibleProvider
from cardmill.testing import FakeAnthropicServer

KEY = "fake-key-lifecycle"
TIDES = b"# Tides\n\nThe moon pulls the sea. Twice a day.\n"
DOCS = [Document(f"doc-{i}.md", TIDES) for i in range(3)]


def openai_answer(request: httpx.Request) -> httpx.Response:
    cards: dict[str, Any] = {
        "cards": [{"title": "Tides", "body": "The moon.", "tags": [], "quote": None}]
    }
    message = {"role": "assistant", "content": json.dumps(cards)}
    return httpx.Response(200, json={"choices": [{"message": message}]})


Factory = Callable[[], Any]


@asynccontextmanager
async def factory(kind: str) -> AsyncIterator[Factory]:
    """A function making a fresh provider of this kind, with what it talks to."""
    if kind == "anthropic":
        async with FakeAnthropicServer(api_key=KEY) as server:
            yield lambda: AnthropicProvider(api_key=KEY, base_url=server.url)
    elif kind == "openai":
        yield lambda: OpenAICompatibleProvider(
            base_url="http://127.0.0.1:9/v1",
            client=httpx.AsyncClient(transport=httpx.MockTransport(openai_answer)),
        )
    else:
        yield ExtractiveProvider


KINDS = ["anthropic", "openai", "extractive"]


@pytest.mark.parametrize("kind", KINDS)
async def test_every_provider_runs_a_run_inside_async_with(kind: str) -> None:
    storage = MemoryStorage()
    run = await storage.create_run(DOCS)
    async with factory(kind) as make:
        async with make() as provider:
            summary = await Engine(storage, provider).execute(run.id)
        await provider.aclose()  # closing again is harmless
    assert summary.run.status == RunStatus.SUCCEEDED
    assert summary.run.completed_items == len(DOCS)


@pytest.mark.parametrize("kind", KINDS)
async def test_entering_and_closing_checkpoint(kind: str) -> None:
    async with factory(kind) as make:
        provider = make()
        with trio.testing.assert_checkpoints():
            await provider.__aenter__()
        with trio.testing.assert_checkpoints():
            await provider.aclose()
