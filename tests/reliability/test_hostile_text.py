"""Text no store can hold, from a model or in an error, is cleaned at the model boundary:
the run goes on and every upload ends COMPLETED or FAILED, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from cardmill import (
    Document,
    Engine,
    PermanentError,
    RunStatus,
    SQLiteStorage,
    Storage,
    UploadStatus,
)
from cardmill.providers import OpenAICompatibleProvider
from cardmill.storage import PostgresStorage
from cardmill.testing import ScriptedProvider, Step, check_invariants

from .. import pg

# As a provider's JSON spells them: NUL, ESC, BEL, and lone surrogates.
RAW_JSON_TITLE = r'"Owls\u0000 at \u001b[2Jnight\u0007 \ud800 and \udcff"'
CLEAN_TITLE = "Owls at [2Jnight \ufffd and \ufffd"


@pytest.fixture(params=["sqlite", "postgres"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    if request.param == "sqlite":
        async with SQLiteStorage.open(tmp_path / "hostile.db") as sqlite:
            yield sqlite
        return
    pg.require()
    schema = pg.new_schema()
    try:
        async with PostgresStorage.open(pg.DSN, schema=schema) as postgres:
            yield postgres
    finally:
        pg.drop_schema(schema)


def provider_answering(title_json: str) -> OpenAICompatibleProvider:
    content = '{"cards": [{"title": %s, "body": %s, "tags": [%s]}]}' % ((title_json,) * 3)

    def respond(request: httpx.Request) -> httpx.Response:
        body = {
            "choices": [{"message": {"content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5},
        }
        return httpx.Response(200, content=json.dumps(body).encode())

    client = httpx.AsyncClient(transport=httpx.MockTransport(respond))
    return OpenAICompatibleProvider(
        api_key="k", base_url="http://127.0.0.1:9/v1", model="m", client=client
    )


async def test_model_output_no_store_can_hold_is_stored_clean(storage: Storage) -> None:
    run = await storage.create_run([Document("owls.md", b"# Owls\n\nThey hunt.")])
    async with provider_answering(RAW_JSON_TITLE) as provider:
        summary = await Engine(storage, provider).execute(run.id)
    assert summary.run.status == RunStatus.SUCCEEDED
    (card,) = await storage.list_cards(run.id)
    assert (card.title, card.body, card.tags) == (CLEAN_TITLE, CLEAN_TITLE, (CLEAN_TITLE,))
    await check_invariants(storage, run.id)


async def test_an_error_quoting_such_text_fails_its_upload_alone(storage: Storage) -> None:
    # A document name from a file that is not UTF-8, and an error quoting what the model
    # said: the failure is recorded, the other upload completes.
    bad = Document("caf\udce9\x00.txt", b"text")
    run = await storage.create_run([bad, Document("good.txt", b"fine")])
    provider = ScriptedProvider(
        {bad.name: [Step(error=PermanentError("model said \x00\ud800\x1b]0;pwned\x07"))]}
    )
    summary = await Engine(storage, provider).execute(run.id)
    assert summary.run.status == RunStatus.PARTIAL
    failed, done = await storage.list_uploads(run.id)
    assert (failed.name, failed.status) == ("caf\ufffd.txt", UploadStatus.FAILED)
    assert failed.error == "model said \ufffd]0;pwned"
    assert done.status == UploadStatus.COMPLETED
    await check_invariants(storage, run.id)
