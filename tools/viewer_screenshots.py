"""Screenshots of the web viewer for the docs: docs/img/viewer-*.png.

Analyses the bundled examples offline (the extractive provider), and again through the
Message Batches API of the loopback FakeAnthropicServer, into a MemoryStorage,
serves the viewer on a free loopback port and photographs three pages with Debian's
headless Chromium (/usr/bin/chromium, never a downloaded browser)::

    .venv/bin/python tools/viewer_screenshots.py
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import attrs
import trio

from cardmill import Document, Engine, ExtractiveProvider, MemoryStorage
from cardmill.engine import BatchExecutor
from cardmill.providers import AnthropicProvider
from cardmill.testing import FakeAnthropicServer
from cardmill.web import serve

ROOT = Path(__file__).resolve().parents[1]
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def photograph(url: str, run_id: str, cards_run_id: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 760})
        for name, path in (
            ("runs", ""),
            ("run", f"runs/{run_id}"),
            ("cards", f"runs/{cards_run_id}/cards?q=starter"),
        ):
            page.goto(url + path)
            page.screenshot(path=str(ROOT / "docs" / "img" / f"viewer-{name}.png"))
        browser.close()


async def main() -> None:
    paths = sorted(p for p in (ROOT / "examples").iterdir() if p.is_file())
    documents = [
        attrs.evolve(Document.from_path(p), name=f"examples/{p.name}")
        for p in paths
        if p.suffix in {".md", ".txt", ".html", ".pdf"}
    ]
    storage = MemoryStorage()
    offline = await storage.create_run(documents, name="examples/ (offline)")
    async with ExtractiveProvider() as provider:
        await Engine(storage, provider).execute(offline.id)
    # The same documents through the Message Batches API of the loopback fake: a run
    # with tokens, a cost at the batch price, and its batch.
    run = await storage.create_run(documents, name="examples/ (batch)")
    server = FakeAnthropicServer()
    async with server, AnthropicProvider(api_key="fake-key", base_url=server.url) as provider:
        await BatchExecutor(storage, provider, poll_interval=0.05).execute(run.id)
    async with trio.open_nursery() as nursery:
        url: Any = await nursery.start(partial(serve, storage, port=0, database="cardmill.db"))
        await trio.to_thread.run_sync(photograph, url, run.id, offline.id)
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
