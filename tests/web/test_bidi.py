"""Bidirectional and control characters from documents and models reach no page raw:
the viewer shows them escaped, as the command line prints them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx

from cardmill import CardDraft, Document, MemoryStorage, Recipe, SQLiteStorage
from cardmill._printable import printable

from .conftest import client_of, settle

RLO, PDF, LRI, PDI, RLM, ALM = "\u202e", "\u202c", "\u2066", "\u2069", "\u200f", "\u061c"
# A name that shows as "exe.png.md", one with an isolate, one with controls a store
# keeps (C0 controls but line ends and tabs are dropped as text is stored; the last test
# puts them in a database as another program could).
REVERSED = f"{RLO}gnp.exe{PDF}.md"
ISOLATED = f"report{LRI}txt.exe{PDI}.md"
CONTROLS = "csi\x9b31m del\x7f cr\r.md"
RAW = [RLO, PDF, LRI, PDI, RLM, ALM, "\x07", "\x1b", "\x9b", "\x9c", "\x9d", "\r", "\x7f"]


def assert_no_raw(text: str, where: str) -> None:
    for char in RAW:
        assert char not in text, (where, f"U+{ord(char):04X}")


def doc(name: str) -> Document:
    return Document(name, b"# notes\n\ntext", "text/markdown")


async def bidi_run(storage: MemoryStorage) -> str:
    recipe = Recipe.from_toml(
        """
name = "people"
instructions = "One card per person."
[[fields]]
name = "person"
type = "string"
[[fields]]
name = "roles"
type = "list"
required = false
"""
    )
    run = await storage.create_run(
        [doc(REVERSED), doc(ISOLATED), doc(CONTROLS)], name=f"run {RLO}nur{PDF}", recipe=recipe
    )
    card = CardDraft(
        f"title {RLO}eltit{PDF}",
        "",
        tags=(f"tag{LRI}gat{PDI}", f"mark{RLM}{ALM}"),
        quote=f"line one{RLO}\nline two\x9d0;retitled\x9c",
        fields={"person": f"Ada {RLO}ecalevol{PDF}", "roles": (f"maths{LRI}",)},
    )
    await settle(
        storage,
        run,
        {
            REVERSED: [card],
            ISOLATED: [CardDraft("t", "", fields={"person": "p"})],
            CONTROLS: f"model said {RLO}deliaf{PDF}\x9b31m",
        },
    )
    return run.id


async def test_every_page_shows_bidi_and_control_characters_escaped(
    storage: MemoryStorage, client: httpx.AsyncClient
) -> None:
    run_id = await bidi_run(storage)
    pages = {}
    for path in ("/", f"/runs/{run_id}", f"/runs/{run_id}/cards", f"/runs/{run_id}?status=failed"):
        answer = await client.get(path)
        assert answer.status_code == 200, path
        pages[path] = answer.text
    for path, text in pages.items():
        assert_no_raw(text, path)
    run_page = pages[f"/runs/{run_id}"]
    # Exactly what the command line prints for the same text.
    for name in (REVERSED, ISOLATED, CONTROLS):
        assert printable(name) in run_page, name
    assert "\\u202egnp.exe\\u202c.md" in run_page
    assert "report\\u2066txt.exe\\u2069.md" in run_page
    assert "csi\\x9b31m del\\x7f cr\\r.md" in run_page
    assert "run \\u202enur\\u202c" in run_page
    assert "run \\u202enur\\u202c" in pages["/"]
    assert "model said \\u202edeliaf\\u202c\\x9b31m" in pages[f"/runs/{run_id}?status=failed"]
    cards = pages[f"/runs/{run_id}/cards"]
    assert "title \\u202eeltit\\u202c" in cards
    assert "tag\\u2066gat\\u2069" in cards
    assert "mark\\u200f\\u061c" in cards
    assert "\\u202egnp.exe\\u202c.md (1)" in cards  # the document choices
    # Line ends stay in bodies, quotes and fields (their elements keep them).
    assert "line one\\u202e\nline two\\x9d0;retitled\\x9c" in cards
    assert "Ada \\u202eecalevol\\u202c" in cards
    assert "maths\\u2066" in cards


async def test_searches_and_errors_echo_no_raw_character(
    storage: MemoryStorage, client: httpx.AsyncClient
) -> None:
    run_id = await bidi_run(storage)
    cards = f"/runs/{run_id}/cards"
    answers = [
        await client.get(cards, params={"q": f"title {RLO}x", "tag": f"a{LRI}b"}),
        await client.get(cards, params={"field": f"no{RLO}such", "value": "x"}),
        await client.get(f"/runs/{RLO}nope{PDF}"),
        await client.get(f"/runs/{run_id}", params={"status": f"x{RLO}"}),
    ]
    assert [a.status_code for a in answers] == [200, 400, 404, 400]
    for answer in answers:
        assert_no_raw(answer.text, str(answer.url))
    assert 'value="title \\u202ex"' in answers[0].text
    assert "no\\u202esuch" in answers[1].text


async def test_text_another_program_wrote_to_the_database_is_shown_escaped(
    tmp_path: Path,
) -> None:
    # What the command line's tests write into a database, and what `cardmill show` prints.
    hostile = "x\x1b[2J\x9b31m\x07\u202ey"
    path = tmp_path / "cards.db"
    async with SQLiteStorage.open(str(path)) as storage:
        run = await storage.create_run([doc("a.md"), doc("b.md")])
        await settle(storage, run, {"a.md": [CardDraft("t", "b", tags=("x",))], "b.md": "no"})
        batched = await storage.create_run([doc("c.md")])
        uploads = await storage.list_uploads(batched.id)
        made = await storage.create_batch(batched.id, [u.id for u in uploads], lease_seconds=60)
        assert made is not None
        await storage.set_batch_submitted(made[0].id, "msgbatch_1")
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE batches SET provider_batch_id = ?", (hostile,))
        conn.execute("UPDATE runs SET name = ?", (hostile,))
        conn.execute("UPDATE uploads SET name = ?, error = ?", (hostile, hostile))
        conn.execute("UPDATE cards SET title = ?, body = ?", (hostile, hostile))
    conn.close()
    async with SQLiteStorage.open(str(path)) as storage, client_of(storage) as client:
        for page in ("/", f"/runs/{run.id}", f"/runs/{run.id}/cards"):
            answer = await client.get(page)
            assert answer.status_code == 200, page
            assert_no_raw(answer.text, page)
            assert "x\\x1b[2J\\x9b31m\\x07\\u202ey" in answer.text, page
        progress = await client.get(f"/runs/{batched.id}/progress.json")
        (batch,) = progress.json()["batches"]
        assert batch["provider_id"] == "x\\x1b[2J\\x9b31m\\x07\\u202ey"
        assert_no_raw(progress.text, "progress.json")
        page = (await client.get(f"/runs/{batched.id}")).text
        assert_no_raw(page, "the batched run's page")
        assert ">x\\x1b[2J\\x9b31m\\x07\\u202ey</div>" in page


async def test_a_lone_surrogate_an_older_release_stored_is_shown_and_exported(
    tmp_path: Path,
) -> None:
    # Tags were stored as JSON with ASCII escapes: a model's lone surrogate came back whole.
    path = tmp_path / "cards.db"
    async with SQLiteStorage.open(str(path)) as storage:
        run = await storage.create_run([doc("a.md")])
        await settle(storage, run, {"a.md": [CardDraft("t", "b", tags=("x",))]})
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE cards SET tags = ?", (r'["bad\ud800tag"]',))
    conn.close()
    async with SQLiteStorage.open(str(path)) as storage, client_of(storage) as client:
        answer = await client.get(f"/runs/{run.id}/cards")
        assert answer.status_code == 200
        assert "bad\\ud800tag" in answer.text
        assert "tag=bad%ED%A0%80tag" in answer.text  # its link, encoded
        assert (await client.get(f"/runs/{run.id}/cards?tag=bad%ED%A0%80tag")).status_code == 200
        for fmt in ("jsonl", "md", "csv"):
            answer = await client.get(f"/runs/{run.id}/export.{fmt}")
            assert answer.status_code == 200, fmt
            assert "bad\ufffdtag" in answer.content.decode("utf-8"), fmt


def test_printable_escapes_every_bidirectional_control() -> None:
    bidi = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
    assert printable(bidi) == "".join(f"\\u{ord(c):04x}" for c in bidi)
    assert printable(f"{RLO}\n", lines=True) == "\\u202e\n"
    # What stays: letters of right-to-left scripts, other marks, and backslashes.
    assert printable("שלום مرحبا é \\u202e") == "שלום مرحبا é \\u202e"
