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
    from playwright.sync_api import expect, sync_playwright

    # A shared machine can be slow: wait for what the page must show longer than 5 s.
    expect.set_options(timeout=15_000)
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


async def test_a_batch_runs_counts_advance_on_the_page_while_the_executor_works() -> None:
    from cardmill._cost import DEFAULT_PRICES
    from cardmill.cli._runner import shown_cost
    from cardmill.engine import BatchExecutor

    from ..engine.batch_fakes import FakeBatchAPI

    storage = MemoryStorage()
    docs = [doc(f"d{i}.md") for i in range(3)]
    run = await storage.create_run(docs, name="batched")
    # The fake API's own clock moves only when the test says: request i is processed at
    # tick i + 1, so each step of the page follows one step of the provider.
    ticks = [0.0]
    api = FakeBatchAPI(seconds_per_request=1.0, clock=lambda: ticks[0])
    executor = BatchExecutor(
        storage,
        api,
        prices=DEFAULT_PRICES,
        poll_interval=0.05,
        max_poll_interval=0.1,
    )

    async with trio.open_nursery() as nursery:
        url = await nursery.start(
            lambda task_status: serve(storage, port=0, poll_seconds=0.2, task_status=task_status)
        )

        def tick(to: float) -> None:
            trio.from_thread.run_sync(lambda: ticks.__setitem__(0, to))

        def script(page: Any) -> dict[str, Any]:
            from playwright.sync_api import expect

            page.goto(f"{url}runs/{run.id}")
            hidden = page.locator("#batches").is_hidden()
            # The batch is submitted after the page was drawn: its row appears by itself.
            trio.from_thread.run_sync(lambda: nursery.start_soon(executor.execute, run.id))
            row = page.locator("tr[data-batch]")
            text = row.locator("[data-batch-part=text]")
            expect(text).to_have_text("0 / 3")
            expect(row.locator("[data-batch-part=state]")).to_have_text("live")
            seen = [text.text_content()]
            provider_id = row.locator("[data-batch-part=provider_id]").text_content()
            counts = []
            for i in range(1, 4):
                tick(float(i))
                expect(text).to_have_text(f"{i} / 3")
                seen.append(text.text_content())
                counts.append(row.locator("[data-batch-part=counts]").text_content())
            page.wait_for_selector("text=SUCCEEDED")
            expect(row.locator("[data-batch-part=state]")).to_have_text("done")
            return {
                "hidden": hidden,
                "seen": seen,
                "provider_id": provider_id,
                "counts": counts,
                "cost": page.locator("[data-live=cost]").text_content(),
                "tokens": page.locator("[data-live=tokens]").text_content(),
                "requests": page.locator("[data-live=requests]").text_content(),
                "rate_limited": page.locator("[data-live=rate_limited]").text_content(),
            }

        seen = await trio.to_thread.run_sync(in_browser, script)
        nursery.cancel_scope.cancel()
    finished = await storage.get_run(run.id)
    assert seen["hidden"]
    assert seen["seen"] == ["0 / 3", "1 / 3", "2 / 3", "3 / 3"]
    assert seen["provider_id"] == "msgbatch_0001"
    assert seen["counts"][0].startswith("1 succeeded · 0 errored · 2 processing")
    assert finished.cost_usd > 0
    assert seen["cost"] == shown_cost(finished)
    # The fake API bills each answer by what its request held.
    billed = [api.billed(d) for d in docs]
    tokens_in, tokens_out = (
        sum(u.input_tokens for u in billed),
        sum(u.output_tokens for u in billed),
    )
    assert (finished.usage.input_tokens, finished.usage.output_tokens) == (tokens_in, tokens_out)
    assert seen["tokens"] == f"{tokens_in:,} in · {tokens_out:,} out"
    # Drawn at 0 before the batch was sent; one request per answer, live.
    assert (seen["requests"], seen["rate_limited"]) == ("3", "0")
    assert (finished.requests, finished.rate_limited) == (3, 0)


async def test_hostile_recipe_fields_names_and_errors_stay_inert_and_no_secret_shows() -> None:
    from cardmill import Recipe
    from cardmill.cli._runner import shown_db
    from cardmill.engine import RetryPolicy
    from cardmill.providers import AnthropicProvider
    from cardmill.testing import FakeAnthropicServer

    key = "fake-viewer-secret-key-0123456789"
    password = "pg-viewer-secret-pw"
    dsn = f"postgresql://cardmill:{password}@db.example:5432/cards"
    storage = MemoryStorage()
    # A run through the real SDK with the key: answers refused (401, 400) leave errors.
    async with FakeAnthropicServer(api_key=key, hostile=True) as server:
        server.inject("401", "400")
        provider = AnthropicProvider(api_key=key, base_url=server.url)
        sent = await storage.create_run(
            [doc("refused-1.md"), doc("refused-2.md"), doc("answered.md")], name="sdk"
        )
        async with provider:
            await Engine(
                storage, provider, concurrency=1, retry=RetryPolicy(max_attempts=1)
            ).execute(sent.id)
    recipe = Recipe.from_toml(
        """
name = "links"
instructions = "One card per link."
[[fields]]
name = "url"
type = "string"
[[fields]]
name = "labels"
type = "list"
required = false
"""
    )
    name = "javascript:window.__pwned=4//.md"
    run = await storage.create_run(
        [doc(name), doc("<b>err</b>.md")],
        name="<i>run</i><script>window.__pwned=5</script>",
        recipe=recipe,
    )
    first = await storage.claim_upload(run.id, worker="t", lease_seconds=60)
    assert first is not None
    await storage.complete_upload(
        first.id,
        [
            CardDraft(
                "javascript:window.__pwned=6",
                "",
                fields={
                    "url": "javascript:window.__pwned=7",
                    "labels": ("<img src=x onerror=window.__pwned=8>", "javascript:x"),
                },
            )
        ],
    )
    second = await storage.claim_upload(run.id, worker="t", lease_seconds=60)
    assert second is not None
    await storage.fail_upload(second.id, "<script>window.__pwned=9</script> said no")
    await storage.finish_run(run.id)

    async with trio.open_nursery() as nursery:
        url = await nursery.start(
            partial(serve, storage, port=0, database=shown_db(dsn), metrics=True)
        )

        def script(page: Any) -> dict[str, Any]:
            headers: list[dict[str, str]] = []
            texts: dict[str, str] = {}
            paths = [
                "",
                f"runs/{run.id}",
                f"runs/{run.id}/cards",
                f"runs/{run.id}/cards?field=url&value=javascript",
                f"runs/{sent.id}",
                f"runs/{sent.id}/cards",
                f"runs/{sent.id}/progress.json",
                "runs/nope",
                "metrics",
            ]
            for path in paths:
                answer = page.goto(url + path)
                headers.append(answer.headers)
                page.wait_for_load_state("load")
                texts[path] = page.content()
                assert page.evaluate("window.__pwned === undefined"), path
            page.goto(f"{url}runs/{run.id}/cards?field=url&value=javascript")
            links = page.evaluate("[...document.querySelectorAll('a')].map(a => a.href)")
            fields = page.locator(".fields dd").all_text_contents()
            page.goto(f"{url}runs/{run.id}")
            return {
                "headers": headers,
                "texts": texts,
                "links": links,
                "fields": fields,
                "title": page.title(),
                "error": page.locator(".upload-error").text_content(),
                "names": page.locator("table.uploads td:first-child").all_text_contents(),
            }

        seen = await trio.to_thread.run_sync(in_browser, script)
        nursery.cancel_scope.cancel()
    errors = [u.error for u in await storage.list_uploads(sent.id) if u.error]
    assert len(errors) == 2  # the refused requests left their reasons on the pages
    for path, text in seen["texts"].items():
        assert key not in text, path
        assert password not in text, path
    assert "postgresql://cardmill:***@db.example:5432/cards" in seen["texts"][""]
    assert all(
        h.get("content-security-policy", "").startswith("default-src 'self'")
        for h in seen["headers"]
    )
    assert all(link.startswith(url.rstrip("/")) for link in seen["links"]), seen["links"]
    assert seen["fields"] == [
        "javascript:window.__pwned=7",
        "<img src=x onerror=window.__pwned=8>, javascript:x",
    ]
    assert seen["title"] == "<i>run</i><script>window.__pwned=5</script> · cardmill"
    assert seen["error"] == "<script>window.__pwned=9</script> said no"
    assert any(name in cell for cell in seen["names"])
