"""The viewer in a real headless Chromium: live progress, search, and inert hostile cards.

Playwright's sync API runs in a worker thread (it drives its own event loop there);
the server, the storage and the engine stay on trio, and the browser's thread hands
back to trio (``trio.from_thread``) to let the engine advance. Nothing waits on a clock:
each step waits for the page to show what the engine has just done.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

from cardmill import CardDraft, Document, Engine, MemoryStorage
from cardmill.providers import Analysis
from cardmill.web import serve

from .conftest import doc, hostile_run

CHROMIUM = "/usr/bin/chromium"
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
T = TypeVar("T")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists() or shutil.which("chromium") is None,
        reason="no /usr/bin/chromium (apt-get install chromium)",
    ),
]


def in_browser(script: Callable[[Any], T]) -> T:
    """Run ``script(page)`` in a fresh headless Chromium (call from a worker thread)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(15_000)
            return script(page)
        finally:
            browser.close()


async def started(nursery: trio.Nursery, storage: MemoryStorage, **options: Any) -> str:
    """The viewer of ``storage`` on a free loopback port; its URL."""
    url: str = await nursery.start(partial(serve, storage, port=0, **options))
    return url


class GatedProvider:
    """Answers each document only when the test opens the gate once more."""

    name = "gated"

    def __init__(self) -> None:
        self.send, self._receive = trio.open_memory_channel[None](0)

    async def analyze(self, document: Document) -> Analysis:
        await self._receive.receive()
        return Analysis((CardDraft(f"card of {document.name}", "body"),))


async def test_a_live_run_advances_on_the_page_while_the_engine_works() -> None:
    storage = MemoryStorage()
    run = await storage.create_run([doc(f"d{i}.md") for i in range(3)], name="live")
    provider = GatedProvider()
    engine = Engine(storage, provider, concurrency=1)

    def release() -> None:
        trio.from_thread.run(provider.send.send, None)

    async with trio.open_nursery() as nursery:
        url = await nursery.start(
            lambda task_status: serve(storage, port=0, poll_seconds=0.2, task_status=task_status)
        )
        nursery.start_soon(engine.execute, run.id)

        def script(page: Any) -> list[str]:
            from playwright.sync_api import expect

            page.goto(f"{url}runs/{run.id}")
            done = page.locator("[data-live=done]")
            seen = [done.text_content()]
            for i in range(1, 4):
                release()
                expect(done).to_have_text(f"{i} / 3")
                seen.append(done.text_content())
            # Settled: the page reloads itself once, with the finished uploads and chart.
            page.wait_for_selector("text=SUCCEEDED")
            page.wait_for_selector("svg rect")
            seen.append(str(page.evaluate("document.getElementById('progress').value")))
            return seen

        seen = await trio.to_thread.run_sync(in_browser, script)
        nursery.cancel_scope.cancel()
    assert seen == ["0 / 3", "1 / 3", "2 / 3", "3 / 3", "3"]
    assert (await storage.get_run(run.id)).total_cards == 3


async def test_search_finds_a_card() -> None:
    storage = MemoryStorage()
    run = await hostile_run(storage)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(
            lambda task_status: serve(storage, port=0, task_status=task_status)
        )

        def script(page: Any) -> tuple[list[str], list[str]]:
            page.goto(f"{url}runs/{run.id}/cards")
            before = page.locator(".card-title").all_text_contents()
            page.fill("input[name=q]", "oven")
            page.click("button[type=submit]")
            page.wait_for_url("**q=oven**")
            return before, page.locator(".card-title").all_text_contents()

        before, after = await trio.to_thread.run_sync(in_browser, script)
        nursery.cancel_scope.cancel()
    assert len(before) == 3
    assert after == ["Oven spring"]


async def test_hostile_cards_run_no_script_and_inline_script_is_refused() -> None:
    storage = MemoryStorage()
    run = await hostile_run(storage)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(
            lambda task_status: serve(storage, port=0, task_status=task_status)
        )

        def script(page: Any) -> dict[str, Any]:
            violations: list[str] = []
            page.on(
                "console",
                lambda m: (
                    violations.append(m.text) if "Content Security Policy" in m.text else None
                ),
            )
            shown = {}
            for path in ("", f"runs/{run.id}", f"runs/{run.id}/cards"):
                page.goto(url + path)
                page.wait_for_load_state("load")
                shown[path] = page.evaluate("window.__pwned === undefined")
            title = page.locator(".card-title").nth(2).text_content()
            links = page.evaluate(
                "[...document.querySelectorAll('a')].map(a => a.getAttribute('href'))"
            )
            # Now try what an injected page would: inline script, an inline handler.
            page.evaluate(
                """() => {
                  window.__violations = [];
                  document.addEventListener('securitypolicyviolation', e => {
                      window.__violations.push(e.violatedDirective);
                      document.body.dataset.violations = window.__violations.length;
                  });
                  const s = document.createElement('script');
                  s.textContent = 'window.__pwned = 1';
                  document.body.appendChild(s);
                  const d = document.createElement('div');
                  d.innerHTML = '<img src="/static/none.png" onerror="window.__pwned = 2">';
                  document.body.appendChild(d);
                }"""
            )
            page.wait_for_selector("body[data-violations='2']", state="attached")
            return {
                "clean": shown,
                "title": title,
                "links": links,
                "pwned": page.evaluate("window.__pwned === undefined"),
                "violations": page.evaluate("window.__violations"),
                "console": violations,
            }

        seen = await trio.to_thread.run_sync(in_browser, script)
        nursery.cancel_scope.cancel()
    assert all(seen["clean"].values()), seen["clean"]
    assert seen["title"] == "<script>window.__pwned = 1</script>Tides"
    assert not [h for h in seen["links"] if h and h.strip().lower().startswith("javascript:")]
    assert seen["pwned"]
    assert {v.split(" ")[0] for v in seen["violations"]} <= {
        "script-src-elem",
        "script-src-attr",
        "script-src",
    }
    assert len(seen["violations"]) >= 2
    assert seen["console"]
