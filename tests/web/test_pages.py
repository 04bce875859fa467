"""Every route of the viewer, over ASGI: status codes, escaping, headers, paging, filters."""

from __future__ import annotations

import csv
import io
import json

import httpx
import pytest

from cardmill import CardDraft, MemoryStorage, Recipe, RunStatus
from cardmill.model import AnswerAsked
from cardmill.web import create_app

from .conftest import (
    HOSTILE_BODY,
    HOSTILE_ERROR,
    HOSTILE_NAME,
    HOSTILE_QUOTE,
    HOSTILE_RUN,
    HOSTILE_TAG,
    HOSTILE_TITLE,
    client_of,
    doc,
    hostile_run,
    settle,
)

HOSTILE = (
    HOSTILE_TITLE,
    HOSTILE_BODY,
    HOSTILE_TAG,
    HOSTILE_QUOTE,
    HOSTILE_NAME,
    HOSTILE_ERROR,
    HOSTILE_RUN,
)


def assert_inert(html: str) -> None:
    """No markup from a document or a model survives as markup."""
    for raw in HOSTILE:
        assert raw not in html, raw
    assert "<script>" not in html
    assert 'href="javascript:' not in html
    assert "onerror=" not in html.replace("onerror=&#34;", "").replace("onerror=window", "")
    assert "<script " not in html.replace('<script src="/static/viewer.js" defer>', "")


async def test_the_runs_page_lists_every_run_newest_first(
    storage: MemoryStorage, client: httpx.AsyncClient
) -> None:
    empty = await client.get("/")
    assert empty.status_code == 200
    assert "No runs yet" in empty.text
    first = await hostile_run(storage)
    second = await storage.create_run([doc("a.md")], name="second")
    page = (await client.get("/")).text
    assert page.index("second") < page.index("&lt;b&gt;bold&lt;/b&gt; run")
    assert f'href="/runs/{first.id}"' in page
    assert f'href="/runs/{second.id}"' in page
    assert "PARTIAL" in page
    assert "PENDING" in page
    assert "3,600 in · 1,020 out" in page  # three settled uploads of 1,200 + 340 tokens
    assert "$0.0250" in page  # two completed uploads at $0.0125
    assert "/data/cards.db" in page
    assert_inert(page)


async def test_a_run_page_shows_counters_uploads_errors_and_the_chart(
    storage: MemoryStorage, client: httpx.AsyncClient
) -> None:
    run = await hostile_run(storage)
    answer = await client.get(f"/runs/{run.id}")
    assert answer.status_code == 200
    page = answer.text
    assert_inert(page)
    assert "&lt;b&gt;bold&lt;/b&gt; run" in page
    assert "model said &lt;script&gt;window.__pwned=1&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=window.__pwned=1&gt;.md" in page
    assert 'data-live="done">3 / 3<' in page
    assert "<rect " in page
    assert "2 completed over" in page
    assert "completed (2)" in page
    assert "failed (1)" in page
    for fmt in ("jsonl", "csv", "md"):
        assert f'href="/runs/{run.id}/export.{fmt}"' in page


async def test_uploads_filter_by_status(storage: MemoryStorage, client: httpx.AsyncClient) -> None:
    run = await hostile_run(storage)
    failed = (await client.get(f"/runs/{run.id}", params={"status": "failed"})).text
    assert "broken.md" in failed
    assert "plain.md" not in failed
    completed = (await client.get(f"/runs/{run.id}", params={"status": "COMPLETED"})).text
    assert "plain.md" in completed
    assert "broken.md" not in completed
    bad = await client.get(f"/runs/{run.id}", params={"status": "<x>"})
    assert bad.status_code == 400
    assert "unknown status &#39;&lt;x&gt;&#39;" in bad.text


async def test_uploads_page_by_a_hundred(storage: MemoryStorage, client: httpx.AsyncClient) -> None:
    run = await storage.create_run([doc(f"doc-{i:03d}.md") for i in range(130)])
    first = (await client.get(f"/runs/{run.id}")).text
    assert "doc-099.md" in first
    assert "doc-100.md" not in first
    assert 'rel="next"' in first
    assert 'rel="prev"' not in first
    second = (await client.get(f"/runs/{run.id}", params={"page": "2"})).text
    assert "doc-100.md" in second
    assert "doc-129.md" in second
    assert "doc-099.md" not in second
    assert 'rel="next"' not in second
    assert 'rel="prev"' in second
    for bad in ("0", "-1", "x", "1e3", "99999999", "١"):
        answer = await client.get(f"/runs/{run.id}", params={"page": bad})
        assert answer.status_code == 400, bad


async def test_progress_json_says_what_the_page_updates(
    storage: MemoryStorage, client: httpx.AsyncClient
) -> None:
    run = await storage.create_run([doc("a.md"), doc("b.md")])
    answer = await client.get(f"/runs/{run.id}/progress.json")
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert (body["status"], body["live"], body["done"], body["total"]) == ("pending", True, 0, 2)
    await settle(storage, run, {"a.md": [CardDraft("t", "b")], "b.md": "gone"})
    body = (await client.get(f"/runs/{run.id}/progress.json")).json()
    assert (body["status"], body["live"], body["done"]) == ("partial", False, 2)
    assert body["text"]["done"] == "2 / 2"
    assert body["text"]["cards"] == "1"
    assert body["batches"] == []


async def test_batches_show_their_progress(
    storage: MemoryStorage, client: httpx.AsyncClient
) -> None:
    from cardmill.model import BatchCounts, BatchState

    run = await storage.create_run([doc("a.md"), doc("b.md"), doc("c.md")])
    uploads = await storage.list_uploads(run.id)
    made = await storage.create_batch(run.id, [u.id for u in uploads], lease_seconds=60)
    assert made is not None
    batch, _ = made
    await storage.set_batch_submitted(batch.id, "msgbatch_<i>x</i>")
    await storage.update_batch(
        batch.id, state=BatchState.LIVE, counts=BatchCounts(processing=1, succeeded=2)
    )
    page = (await client.get(f"/runs/{run.id}")).text
    assert f'data-batch="{batch.id}"' in page
    assert "msgbatch_&lt;i&gt;x&lt;/i&gt;" in page
    assert '<progress max="3" value="2">' in page
    (record,) = (await client.get(f"/runs/{run.id}/progress.json")).json()["batches"]
    assert (record["state"], record["done"], record["size"]) == ("live", 2, 3)
    assert record["text"] == "2 / 3"


async def test_a_fast_run_shows_its_count_and_span_without_a_rate_per_minute(
    storage: MemoryStorage, client: httpx.AsyncClient
) -> None:
    run = await storage.create_run([doc(f"d{i}.md") for i in range(30)])
    await settle(storage, run, {f"d{i}.md": [CardDraft("t", "b")] for i in range(30)})
    page = (await client.get(f"/runs/{run.id}")).text
    pace = page[page.index("<h2>Pace</h2>") : page.index("<h2>Uploads</h2>")]
    assert "30 completed over" in pace
    assert "peak" not in pace
    assert "/min" not in pace


async def test_an_abandoned_batch_then_a_synchronous_run_shows_its_chart(
    storage: MemoryStorage, client: httpx.AsyncClient
) -> None:
    from cardmill.model import BatchState

    run = await storage.create_run([doc(f"d{i}.md") for i in range(4)])
    uploads = await storage.list_uploads(run.id)
    batch = await storage.create_batch(run.id, [u.id for u in uploads], lease_seconds=60)
    assert batch is not None
    await storage.update_batch(batch[0].id, state=BatchState.ABANDONED)
    await settle(storage, run, {f"d{i}.md": [CardDraft("t", "b")] for i in range(4)})
    page = (await client.get(f"/runs/{run.id}")).text
    pace = page[page.index("<h2>Pace</h2>") : page.index("<h2>Uploads</h2>")]
    assert "requests done" not in pace
    assert "4 completed over" in pace
    body = (await client.get(f"/runs/{run.id}/progress.json")).json()
    assert body["text"]["batch_progress"] == ""
    # A batch that reached the provider, and answered one upload of four: the rest were
    # settled without it, and the chart tells the run's pace.
    mixed = await storage.create_run([doc(f"m{i}.md") for i in range(4)])
    first, *_ = await storage.list_uploads(mixed.id)
    carried = await storage.create_batch(mixed.id, [first.id], lease_seconds=60)
    assert carried is not None
    assert await storage.complete_upload(first.id, [CardDraft("t", "b")])
    from cardmill.model import BatchCounts

    await storage.update_batch(
        carried[0].id, state=BatchState.DONE, counts=BatchCounts(succeeded=1)
    )
    await settle(storage, mixed, {f"m{i}.md": [CardDraft("t", "b")] for i in range(1, 4)})
    page = (await client.get(f"/runs/{mixed.id}")).text
    pace = page[page.index("<h2>Pace</h2>") : page.index("<h2>Uploads</h2>")]
    assert "requests done" not in pace
    assert "4 completed over" in pace


async def test_a_batch_run_shows_its_batches_progress_not_a_rate_per_minute(
    storage: MemoryStorage, client: httpx.AsyncClient
) -> None:
    from cardmill.model import BatchCounts, BatchState

    run = await storage.create_run([doc(f"d{i}.md") for i in range(5)])
    uploads = await storage.list_uploads(run.id)
    first = await storage.create_batch(run.id, [u.id for u in uploads[:3]], lease_seconds=60)
    second = await storage.create_batch(run.id, [u.id for u in uploads[3:]], lease_seconds=60)
    assert first is not None
    assert second is not None
    # The first batch's answers arrive together: three uploads complete in one burst.
    for upload in uploads[:3]:
        assert await storage.complete_upload(upload.id, [CardDraft("t", "b")])
    await storage.update_batch(
        first[0].id, state=BatchState.LIVE, counts=BatchCounts(succeeded=2, errored=1)
    )
    await storage.update_batch(
        second[0].id, state=BatchState.LIVE, counts=BatchCounts(processing=2)
    )
    page = (await client.get(f"/runs/{run.id}")).text
    pace = page[page.index("<h2>Pace</h2>") : page.index("<h2>Uploads</h2>")]
    assert "per minute" not in pace
    assert "/min" not in pace
    assert "peak" not in pace
    assert "<svg" not in pace
    assert 'data-live="batch_progress">3 / 5 requests done, sent as 2 batches</span>' in pace
    body = (await client.get(f"/runs/{run.id}/progress.json")).json()
    assert body["text"]["batch_progress"] == "3 / 5 requests done, sent as 2 batches"

    single = await storage.create_run([doc("a.md")])
    (upload,) = await storage.list_uploads(single.id)
    assert await storage.create_batch(single.id, [upload.id], lease_seconds=60)
    page = (await client.get(f"/runs/{single.id}")).text
    assert "0 / 1 requests done, sent as 1 batch<" in page
    # A run sent without batches keeps its chart.
    plain = await storage.create_run([doc("p.md")])
    await settle(storage, plain, {"p.md": [CardDraft("t", "b")]})
    page = (await client.get(f"/runs/{plain.id}")).text
    assert "1 completed over" in page
    assert "per minute" in page
    assert "requests done" not in page
    assert (await client.get(f"/runs/{plain.id}/progress.json")).json()["text"][
        "batch_progress"
    ] == ""


async def test_unknown_ids_and_paths_are_404(
    storage: MemoryStorage, client: httpx.AsyncClient
) -> None:
    run = await hostile_run(storage)
    for path in (
        "/runs/run-nope",
        "/runs/run-nope/cards",
        "/runs/run-nope/progress.json",
        "/runs/run-nope/export.csv",
        f"/runs/{run.id}/export.exe",
        "/static/../../etc/passwd",
        "/static/other.js",
        "/nowhere",
    ):
        answer = await client.get(path)
        assert answer.status_code == 404, path
    hostile = await client.get("/runs/%3Cimg%20src=x%20onerror=alert(1)%3E")
    assert hostile.status_code == 404
    assert "<img src=x" not in hostile.text
    assert "no run &#39;&lt;img src=x onerror=alert(1)&gt;&#39;" in hostile.text


async def test_the_cards_page_shows_each_card_with_its_quote_and_document(
    storage: MemoryStorage, client: httpx.AsyncClient
) -> None:
    run = await hostile_run(storage)
    answer = await client.get(f"/runs/{run.id}/cards")
    assert answer.status_code == 200
    page = answer.text
    assert_inert(page)
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;Tides" in page
    assert "&lt;a href=&#34;javascript:window.__pwned=1&#34;&gt;click me&lt;/a&gt;" in page
    assert "&lt;/blockquote&gt;&lt;script&gt;" in page
    assert "from <a" in page
    assert "&lt;img src=x onerror=window.__pwned=1&gt;.md</a>" in page
    assert page.count('<article class="card"') == 3
    # A tag links to its own filter, percent-encoded: never a live attribute or scheme.
    assert "tag=%22%3E%3Csvg+onload%3Dwindow.__pwned%3D1%3E" in page


async def test_cards_are_found_by_text_upload_and_tag(
    storage: MemoryStorage, client: httpx.AsyncClient
) -> None:
    run = await hostile_run(storage)
    path = f"/runs/{run.id}/cards"

    async def titles(**params: str) -> list[str]:
        page = (await client.get(path, params=params)).text
        return [
            line.split(">", 1)[1].split("<", 1)[0]
            for line in page.splitlines()
            if '<h2 class="card-title">' in line
        ]

    assert await titles(q="STARTER flour") == ["Sourdough starter"]
    assert await titles(q="starter crust") == []
    assert await titles(q="click") == ["&lt;script&gt;window.__pwned = 1&lt;/script&gt;Tides"]
    assert await titles(tag="BREAD") == ["Sourdough starter", "Oven spring"]
    assert await titles(tag="brea") == []
    plain = (await storage.list_uploads(run.id))[0]
    assert await titles(upload=plain.id) == ["Sourdough starter", "Oven spring"]
    assert await titles(upload=plain.id, q="oven") == ["Oven spring"]
    assert await titles(upload="upload-nope") == []


async def test_cards_page_by_fifty(storage: MemoryStorage, client: httpx.AsyncClient) -> None:
    run = await storage.create_run([doc("a.md"), doc("b.md")])
    drafts = [
        CardDraft(f"card {i:02d}", "body", tags=("even" if i % 2 == 0 else "odd",))
        for i in range(40)
    ]
    await settle(storage, run, {"a.md": drafts, "b.md": drafts})
    path = f"/runs/{run.id}/cards"
    first = (await client.get(path)).text
    assert first.count('<article class="card"') == 50
    assert "Cards 1–50 (more follow)" in first
    second = (await client.get(path, params={"page": "2"})).text
    assert second.count('<article class="card"') == 30
    assert "Cards 51–80" in second
    assert "more follow" not in second
    evens = (await client.get(path, params={"tag": "even", "page": "1"})).text
    assert evens.count('<article class="card"') == 40
    assert 'rel="next"' not in evens
    beyond = (await client.get(path, params={"page": "3"})).text
    assert "No card matches on this page" in beyond
    # The next link carries the cursor: following it is one search, from where page 1 ended.
    link = first.split('rel="next" href="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    assert "after=" in link
    followed = (await client.get(link)).text
    assert followed.count('<article class="card"') == 30
    assert "Cards 51–80" in followed
    assert '<h2 class="card-title">card 10</h2>' in followed  # b.md's eleventh card


async def test_hostile_searches_and_cursors_are_answered_plainly(
    storage: MemoryStorage, client: httpx.AsyncClient
) -> None:
    run = await storage.create_run([doc("a.md")])
    await settle(storage, run, {"a.md": [CardDraft("Moon", "tide", ("sea",))]})
    path = f"/runs/{run.id}/cards"
    for q in ['"', "*", "AND OR NEAR(", "moon*", "x:* & !y", "\\", "'"]:
        response = await client.get(path, params={"q": q})
        assert response.status_code == 200, q
    assert '<h2 class="card-title">Moon</h2>' in (await client.get(path, params={"q": "*"})).text
    for cursor in ("x", "1:2:3", "-1:0", "9" * 40):
        response = await client.get(path, params={"after": cursor})
        assert response.status_code == 400, cursor
        assert "after must be a cursor" in response.text


async def test_cards_filter_by_recipe_field(
    storage: MemoryStorage, client: httpx.AsyncClient
) -> None:
    recipe = Recipe.from_toml(
        """
name = "people"
instructions = "One card per person."
[[fields]]
name = "person"
type = "string"
[[fields]]
name = "age"
type = "integer"
required = false
[[fields]]
name = "alive"
type = "boolean"
required = false
[[fields]]
name = "roles"
type = "list"
required = false
"""
    )
    run = await storage.create_run([doc("a.md")], recipe=recipe)
    people = [
        CardDraft(
            "Ada <b>Lovelace</b>",
            "",
            fields={
                "person": "Ada <b>Lovelace</b>",
                "age": 36,
                "alive": False,
                "roles": ("maths",),
            },
        ),
        CardDraft(
            "Grace Hopper", "", fields={"person": "Grace Hopper", "age": 85, "roles": ("navy",)}
        ),
    ]
    await settle(storage, run, {"a.md": people})
    path = f"/runs/{run.id}/cards"

    async def count(**params: str) -> int:
        answer = await client.get(path, params=params)
        assert answer.status_code == 200, answer.text
        return answer.text.count('<article class="card"')

    assert await count() == 2
    assert await count(field="person", value="grace") == 1
    assert await count(field="age", value="36") == 1
    assert await count(field="age", value="36.0") == 1
    assert await count(field="age", value="nan") == 0
    assert await count(field="alive", value="no") == 1
    assert await count(field="roles", value="NAVY") == 1
    page = (await client.get(path)).text
    assert "Ada &lt;b&gt;Lovelace&lt;/b&gt;" in page
    assert "<b>Lovelace" not in page
    unknown = await client.get(path, params={"field": "<nope>", "value": "x"})
    assert unknown.status_code == 400
    assert "no field &#39;&lt;nope&gt;&#39;" in unknown.text


async def test_exports_stream_what_the_command_line_writes(
    storage: MemoryStorage, client: httpx.AsyncClient
) -> None:
    run = await hostile_run(storage)
    jsonl = await client.get(f"/runs/{run.id}/export.jsonl")
    assert jsonl.status_code == 200
    assert jsonl.headers["content-type"] == "application/x-ndjson; charset=utf-8"
    assert jsonl.headers["content-disposition"] == f'attachment; filename="{run.id}.jsonl"'
    records = [json.loads(line) for line in jsonl.text.splitlines()]
    assert [r["title"] for r in records] == ["Sourdough starter", "Oven spring", HOSTILE_TITLE]
    assert records[2]["document"] == HOSTILE_NAME
    assert records[2]["quote"] == HOSTILE_QUOTE
    table = await client.get(f"/runs/{run.id}/export.csv")
    assert table.headers["content-type"] == "text/csv; charset=utf-8"
    rows = list(csv.reader(io.StringIO(table.text)))
    assert rows[0] == ["document", "ordinal", "title", "body", "tags", "quote", "upload_id"]
    assert len(rows) == 4
    md = await client.get(f"/runs/{run.id}/export.md")
    assert md.headers["content-type"] == "text/markdown; charset=utf-8"
    assert md.text.startswith(f"# {HOSTILE_RUN}\n")
    # Served as a download, never as a page the browser would render.
    for answer in (jsonl, table, md):
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert "text/html" not in answer.headers["content-type"]


async def test_the_export_of_a_run_of_many_cards_is_whole(
    storage: MemoryStorage, client: httpx.AsyncClient
) -> None:
    run = await storage.create_run([doc(f"d{i}.md") for i in range(30)])
    await settle(
        storage,
        run,
        {f"d{i}.md": [CardDraft(f"c{i}.{j}", "b") for j in range(50)] for i in range(30)},
    )
    answer = await client.get(f"/runs/{run.id}/export.jsonl")
    assert len(answer.text.splitlines()) == 1500


async def test_a_run_id_that_is_not_a_plain_name_is_quoted_in_links_and_file_names() -> None:
    storage = MemoryStorage()
    run = await storage.create_run([doc("a.md")])
    assert run.status == RunStatus.PENDING
    app = create_app(storage)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://localhost"
    ) as client:
        assert (await client.get("/")).status_code == 200
    from cardmill.web._format import href

    assert href("runs", 'a/b?c"<d>') == "/runs/a%2Fb%3Fc%22%3Cd%3E"
    assert href("runs", "x", "cards", q="a&b", tag=None, page=2) == "/runs/x/cards?q=a%26b&page=2"


@pytest.mark.parametrize("poll_seconds", [0.0, 0.05, 61.0, float("nan")])
def test_create_app_refuses_a_bad_poll_interval(poll_seconds: float) -> None:
    with pytest.raises(ValueError, match=r"poll_seconds must be from 0\.1 to 60"):
        create_app(MemoryStorage(), poll_seconds=poll_seconds)


async def test_the_database_is_named_as_given(storage: MemoryStorage) -> None:
    async with client_of(storage, database="postgresql://app:***@db/cards") as client:
        page = (await client.get("/")).text
    assert "postgresql://app:***@db/cards" in page


async def test_costs_read_as_the_command_line_shows_them(
    storage: MemoryStorage, client: httpx.AsyncClient
) -> None:
    from cardmill.cli._runner import shown_cost

    unpriced = await storage.create_run([doc("a.md")], name="unpriced")
    await settle(storage, unpriced, {"a.md": [CardDraft("t", "b")]}, cost_usd=0.0)
    dear = await storage.create_run([doc("a.md")], name="dear")
    await settle(storage, dear, {"a.md": [CardDraft("t", "b")]}, cost_usd=1.5)
    idle = await storage.create_run([doc("a.md")], name="idle")
    runs = {r.name: r for r in await storage.list_runs()}
    assert shown_cost(runs["unpriced"]) == "unknown"
    assert shown_cost(runs["dear"]) == "$1.5000"
    assert shown_cost(runs["idle"]) == "$0.00"

    page = (await client.get("/")).text
    rows = {name: page[page.index(f">{name}</a>") :].split("</tr>", 1)[0] for name in runs}
    for name, run in runs.items():
        assert f'<td class="num">{shown_cost(run)}</td>' in rows[name], name
        assert f"<td>{run.recipe_name}</td>" in rows[name]
    assert "1,200 in · 340 out" in rows["unpriced"]
    assert "PENDING" in rows["idle"]

    run_page = (await client.get(f"/runs/{unpriced.id}")).text
    assert 'data-live="cost">unknown<' in run_page
    assert '<td class="num">unknown</td>' in run_page  # the upload's own cost
    progress = (await client.get(f"/runs/{dear.id}/progress.json")).json()
    assert progress["text"]["cost"] == "$1.5000"
    assert progress["text"]["tokens"] == "1,200 in · 340 out"
    assert (await client.get(f"/runs/{idle.id}/progress.json")).json()["text"]["cost"] == "$0.00"


async def test_a_run_without_batches_has_the_table_ready_and_hidden(
    storage: MemoryStorage, client: httpx.AsyncClient
) -> None:
    run = await storage.create_run([doc("a.md")])
    page = (await client.get(f"/runs/{run.id}")).text
    assert '<section id="batches" hidden>' in page
    assert '<tbody id="batch-rows">\n\n</tbody>' in page


async def test_a_card_deep_in_a_long_run_is_shown_with_its_document(
    storage: MemoryStorage, client: httpx.AsyncClient
) -> None:
    names = [f"doc{i:03d}.md" for i in range(620)]
    run = await storage.create_run([doc(n) for n in names])
    answers = {
        n: [CardDraft(f"card of {n}", "body", ("last",) if n == names[-1] else ())] for n in names
    }
    await settle(storage, run, answers)  # type: ignore[arg-type]
    page = (await client.get(f"/runs/{run.id}/cards", params={"tag": "last"})).text
    assert '<h2 class="card-title">card of doc619.md</h2>' in page
    assert ">doc619.md</a> · #0" in page


async def test_a_run_page_shows_reused_uploads_and_what_they_saved(
    storage: MemoryStorage, client: httpx.AsyncClient
) -> None:
    first = await storage.create_run([doc("a.md")])
    await settle(storage, first, {"a.md": [CardDraft("Tides", "Moon.")]}, cost_usd=0.25)
    (answered,) = await storage.list_uploads(first.id)
    await storage.store_answer(
        "k" * 64, [CardDraft("Tides", "Moon.")], upload_id=answered.id, cost_usd=0.25
    )
    again = await storage.create_run([doc("a.md"), doc("b.md")])
    upload = await storage.claim_upload(again.id, worker="w", lease_seconds=60)
    assert upload is not None
    found = await storage.claim_answer("k" * 64, upload_id=upload.id, attempt=upload.attempts)
    assert found is not None
    assert not isinstance(found, AnswerAsked)
    assert await storage.complete_from_answer(upload.id, found, worker="w")
    page = (await client.get(f"/runs/{again.id}")).text
    assert '<dd data-live="reused">1 ($0.2500 saved)</dd>' in page
    assert page.count('<span class="reused"') == 1
    progress = (await client.get(f"/runs/{again.id}/progress.json")).json()
    assert (progress["reused"], progress["saved_cost_usd"]) == (1, 0.25)
    assert progress["text"]["reused"] == "1 ($0.2500 saved)"
    plain = (await client.get(f"/runs/{first.id}")).text
    assert '<dd data-live="reused">none</dd>' in plain
