"""Runs with hostile cards in a MemoryStorage, and a client of the viewer over ASGI."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import httpx
import pytest

from cardmill import CardDraft, Document, MemoryStorage, Run, Usage
from cardmill.storage import Storage
from cardmill.web import create_app

HOSTILE_TITLE = "<script>window.__pwned = 1</script>Tides"
HOSTILE_BODY = (
    '<a href="javascript:window.__pwned=1">click me</a> & <img src=x onerror="window.__pwned=1">'
)
HOSTILE_TAG = '"><svg onload=window.__pwned=1>'
HOSTILE_QUOTE = "</blockquote><script>window.__pwned = 1</script>"
HOSTILE_NAME = "<img src=x onerror=window.__pwned=1>.md"
HOSTILE_ERROR = "model said <script>window.__pwned=1</script>"
HOSTILE_RUN = "<b>bold</b> run"


def doc(name: str) -> Document:
    return Document(name, f"# {name}\n\ntext".encode(), "text/markdown")


async def settle(
    storage: Storage,
    run: Run,
    answers: dict[str, Sequence[CardDraft] | str],
    *,
    cost_usd: float = 0.0,
) -> None:
    """Claim each upload named in ``answers`` and complete it with the drafts (or fail it
    with the text), in submission order."""
    for _ in answers:
        upload = await storage.claim_upload(run.id, worker="t", lease_seconds=60)
        assert upload is not None
        answer = answers[upload.name]
        usage = Usage(input_tokens=1200, output_tokens=340)
        if isinstance(answer, str):
            await storage.fail_upload(upload.id, answer, usage=usage)
        else:
            await storage.complete_upload(upload.id, answer, usage=usage, cost_usd=cost_usd)
    await storage.finish_run(run.id)


async def hostile_run(storage: Storage) -> Run:
    """A finished run: a hostile card, a hostile document name, a hostile error."""
    run = await storage.create_run(
        [doc("plain.md"), doc(HOSTILE_NAME), doc("broken.md")], name=HOSTILE_RUN
    )
    await settle(
        storage,
        run,
        {
            "plain.md": [
                CardDraft("Sourdough starter", "Flour and water, fed daily.", tags=("bread",)),
                CardDraft("Oven spring", "Steam keeps the crust soft early.", tags=("bread",)),
            ],
            HOSTILE_NAME: [
                CardDraft(HOSTILE_TITLE, HOSTILE_BODY, tags=(HOSTILE_TAG,), quote=HOSTILE_QUOTE)
            ],
            "broken.md": HOSTILE_ERROR,
        },
        cost_usd=0.0125,
    )
    return await storage.get_run(run.id)


@pytest.fixture
async def storage() -> AsyncIterator[MemoryStorage]:
    async with MemoryStorage() as opened:
        yield opened


def client_of(storage: Storage, **options: object) -> httpx.AsyncClient:
    app = create_app(storage, **options)  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8765")


@pytest.fixture
async def client(storage: MemoryStorage) -> AsyncIterator[httpx.AsyncClient]:
    async with client_of(storage, database="/data/cards.db") as opened:
        yield opened
