"""The viewer shows each run's and each upload's requests and 429s, live on the run page."""

from __future__ import annotations

import httpx

from cardmill import CardDraft, MemoryStorage

from .conftest import doc

CARD = [CardDraft("t", "b")]


async def test_runs_and_run_pages_show_requests_and_429s(
    storage: MemoryStorage, client: httpx.AsyncClient
) -> None:
    busy = await storage.create_run([doc("a.md"), doc("b.md"), doc("c.md")], name="busy")
    await storage.create_run([doc("a.md")], name="quiet")
    a, b, c = await storage.list_uploads(busy.id)
    for _ in range(2):
        await storage.claim_upload(busy.id, worker="t", lease_seconds=60)
    assert await storage.release_upload(a.id, worker="t", requests=1000, rate_limited=999)
    assert await storage.complete_upload(a.id, CARD, requests=234, rate_limited=201)
    assert await storage.fail_upload(b.id, "no", requests=7, rate_limited=3)

    page = (await client.get("/")).text
    head = page[page.index("<thead>") : page.index("</thead>")]
    assert head.index('<th class="num">Requests</th>') < head.index('<th class="num">429s</th>')
    rows = {n: page[page.index(f">{n}</a>") :].split("</tr>", 1)[0] for n in ("busy", "quiet")}
    assert '<td class="num">1,241</td>\n  <td class="num">1,203</td>' in rows["busy"]
    assert '<td class="num">0</td>\n  <td class="num">0</td>' in rows["quiet"]

    run_page = (await client.get(f"/runs/{busy.id}")).text
    assert 'data-live="requests">1,241<' in run_page
    assert 'data-live="rate_limited">1,203<' in run_page
    uploads = run_page[run_page.index('<table class="uploads">') :]
    cells = {u.name: uploads[uploads.index(f"{u.name}") :].split("</tr>", 1)[0] for u in (a, b, c)}
    assert '<td class="num">1,234</td>\n  <td class="num">1,200</td>' in cells["a.md"]
    assert '<td class="num">7</td>\n  <td class="num">3</td>' in cells["b.md"]
    assert '<td class="num">0</td>\n  <td class="num">0</td>' in cells["c.md"]

    # Live: a settlement made after the page was served shows in its progress.
    before = (await client.get(f"/runs/{busy.id}/progress.json")).json()
    assert (before["requests"], before["rate_limited"]) == (1241, 1203)
    await storage.claim_upload(busy.id, worker="t", lease_seconds=60)
    assert await storage.complete_upload(c.id, CARD, requests=5, rate_limited=4)
    after = (await client.get(f"/runs/{busy.id}/progress.json")).json()
    assert (after["requests"], after["rate_limited"]) == (1246, 1207)
    assert (after["text"]["requests"], after["text"]["rate_limited"]) == ("1,246", "1,207")
