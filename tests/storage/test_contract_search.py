"""The storage contract for card search: every backend finds the same cards, by cursor."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence

import attrs
import pytest

from cardmill import (
    CardDraft,
    Document,
    Field,
    InputError,
    MemoryStorage,
    Recipe,
    Run,
    RunNotFound,
    Storage,
)
from cardmill.storage import _search
from cardmill.storage._sqlbackend import SQLBackend
from cardmill.storage._transactions import Tx
from cardmill.testing import check_invariants

HOSTILE = [
    '"',
    '""',
    "*",
    "AND OR NEAR(",
    "NOT",
    "^",
    "-",
    "a:b",
    "title : moon",
    "{title body} : moon",
    "moon*",
    "(((",
    ")",
    "'",
    "\\",
    "& | ! <->",
    "x:* & y:B",
    "NEAR(moon sea, 2)",
    "\x00",
    "\ud800",
    "moon" * 500,
    " ".join(["AND"] * 40),
]

PAGES = [
    [
        CardDraft("Tide tables", "The Moon pulls the sea.", ("Sea life", "moon"), "spring tides"),
        CardDraft("Bread", "Flour, water and salt.", ("bread",)),
        CardDraft("Café au lait", "Coffee with milk, in Paris.", ("drink",)),
    ],
    [
        CardDraft("Moonlight", "Reflected sunlight.", ("Moon",)),
        CardDraft("Naïve set theory", "Sets of sets; the Straße of logic.", ("Maths",)),
    ],
    [CardDraft("Sourdough", "A starter, flour and time.", ("BREAD", "sea life"))],
]


async def settled_run(storage: Storage, pages: Sequence[Sequence[CardDraft]]) -> Run:
    documents = [Document(f"d{i}.md", f"doc {i}".encode()) for i in range(len(pages))]
    run = await storage.create_run(documents)
    uploads = await storage.list_uploads(run.id)
    for upload, drafts in zip(uploads, pages, strict=True):
        assert await storage.complete_upload(upload.id, list(drafts))
    return run


async def titles(storage: Storage, run: Run, **query: object) -> list[str]:
    """Every match of the query, page by page."""
    found: list[str] = []
    after = None
    while True:
        page = await storage.search_cards(run.id, after=after, **query)  # type: ignore[arg-type]
        found += [c.title for c in page.cards]
        if page.next_cursor is None:
            return found
        after = page.next_cursor


async def test_words_match_as_prefixes_case_aside_accents_kept(storage: Storage) -> None:
    run = await settled_run(storage, PAGES)
    assert await titles(storage, run, text="MOON") == ["Tide tables", "Moonlight"]
    assert await titles(storage, run, text="moon sea") == ["Tide tables"]
    assert await titles(storage, run, text="spring") == ["Tide tables"]  # the quote
    assert await titles(storage, run, text="life") == ["Tide tables", "Sourdough"]  # a tag
    assert await titles(storage, run, text="flo") == ["Bread", "Sourdough"]
    assert await titles(storage, run, text="oon") == []  # not inside a word
    assert await titles(storage, run, text="café") == ["Café au lait"]
    assert await titles(storage, run, text="CAFÉ LAIT") == ["Café au lait"]
    assert await titles(storage, run, text="cafe") == []  # accents count
    assert await titles(storage, run, text="naïve") == ["Naïve set theory"]
    assert await titles(storage, run, text="STRASSE") == ["Naïve set theory"]  # case-folded
    assert await titles(storage, run, text="moon bread") == []
    every = ["Tide tables", "Bread", "Café au lait", "Moonlight", "Naïve set theory", "Sourdough"]
    assert await titles(storage, run) == every
    assert await titles(storage, run, text="  ,;  ") == every  # no words: no text filter
    # The first twelve words count; a thirteenth is not looked for.
    twelve = "the moon pulls sea tide tables spring tides life ti ta sp"
    assert await titles(storage, run, text=twelve + " zebra") == ["Tide tables"]
    assert await titles(storage, run, text="zebra " + twelve) == []


async def test_tags_equal_case_aside_and_filters_combine(storage: Storage) -> None:
    run = await settled_run(storage, PAGES)
    other = await settled_run(storage, PAGES[:1])
    first, _, third = await storage.list_uploads(run.id)
    assert await titles(storage, run, tag="bread") == ["Bread", "Sourdough"]
    assert await titles(storage, run, tag="SEA LIFE") == ["Tide tables", "Sourdough"]
    assert await titles(storage, run, tag="sea") == []
    assert await titles(storage, run, tag="life sea") == []
    assert await titles(storage, run, tag="moon", text="tide") == ["Tide tables"]
    assert await titles(storage, run, upload_id=third.id) == ["Sourdough"]
    assert await titles(storage, run, upload_id=first.id, text="flour") == ["Bread"]
    assert await titles(storage, run, upload_id=first.id, tag="bread") == ["Bread"]
    assert await titles(storage, run, upload_id="up-nope") == []
    # Another run's cards never show, even by its upload's id.
    (theirs,) = await storage.list_uploads(other.id)
    assert await titles(storage, run, upload_id=theirs.id) == []
    assert await titles(storage, other, text="moon") == ["Tide tables"]


async def test_hostile_queries_are_plain_words(storage: Storage) -> None:
    run = await settled_run(storage, PAGES)
    everything = await titles(storage, run)
    for query in HOSTILE:
        for kind in ("text", "tag", "upload_id"):
            page = await storage.search_cards(run.id, **{kind: query})  # type: ignore[arg-type]
            if kind == "text" and not re.search(r"[^\W_]", query):
                assert [c.title for c in page.cards] == everything, query
    assert await titles(storage, run, text="moon*") == ["Tide tables", "Moonlight"]
    assert await titles(storage, run, text="title : moon") == []
    assert await titles(storage, run, text="NEAR(moon sea, 2)") == []
    assert await titles(storage, run, text='"moon" OR bread') == []


async def test_pages_follow_cursors_to_the_end(storage: Storage) -> None:
    pages = [
        [CardDraft(f"card {u} {i}", "body", (f"t{i % 3}",)) for i in range(7)] for u in range(4)
    ]
    run = await settled_run(storage, pages)
    every = [c.title for c in await storage.list_cards(run.id)]
    for limit in (1, 3, 7, 28, 29, 500):
        seen: list[str] = []
        after = None
        while True:
            page = await storage.search_cards(run.id, limit=limit, after=after)
            assert 0 < len(page.cards) <= limit
            seen += [c.title for c in page.cards]
            if page.next_cursor is None:
                break
            after = page.next_cursor
        assert seen == every, limit
    # A full last page says so: no cursor to an empty page.
    exact = await storage.search_cards(run.id, tag="t0", limit=12)
    assert len(exact.cards) == 12
    assert exact.next_cursor is None
    first = await storage.search_cards(run.id, tag="T1", limit=5)
    assert first.next_cursor is not None
    rest = await storage.search_cards(run.id, tag="t1", after=first.next_cursor)
    assert [c.title for c in first.cards + rest.cards] == [
        t for t in every if int(t.split()[2]) % 3 == 1
    ]
    assert rest.next_cursor is None


async def test_words_the_index_holds_too_often_are_found_card_by_card(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    pages = [
        [CardDraft(f"card {u} {i}", f"moon w{i % 4}", (f"t{i % 3}",)) for i in range(7)]
        for u in range(4)
    ]
    run = await settled_run(storage, pages)
    queries: list[dict[str, object]] = [
        {"text": "moon"},
        {"text": "moon w1"},
        {"text": "w"},
        {"tag": "t2"},
        {"text": "w3", "tag": "t0"},
        {"text": "card 2"},
    ]
    expected = [await titles(storage, run, limit=3, **q) for q in queries]
    assert expected[0] == [c.title for c in await storage.list_cards(run.id)]
    assert len(expected[1]) == 8
    # The index is not asked for more than 4 matches: past that, the same answers.
    monkeypatch.setattr(_search, "INDEX_BUDGET", 4)
    assert [await titles(storage, run, limit=3, **q) for q in queries] == expected


async def test_cards_completed_after_a_page_appear_past_the_cursor(storage: Storage) -> None:
    run = await storage.create_run([Document(f"d{i}.md", b"x") for i in range(3)])
    a, b, c = await storage.list_uploads(run.id)
    assert await storage.complete_upload(b.id, [CardDraft("moon b", "x")] * 2)
    page = await storage.search_cards(run.id, text="moon", limit=1)
    assert [x.title for x in page.cards] == ["moon b"]
    assert await storage.complete_upload(a.id, [CardDraft("moon a", "x")])  # behind the cursor
    assert await storage.complete_upload(c.id, [CardDraft("moon c", "x")])  # ahead of it
    assert not await storage.complete_upload(c.id, [CardDraft("moon c again", "x")])
    rest = await storage.search_cards(run.id, text="moon", after=page.next_cursor)
    assert [x.title for x in rest.cards] == ["moon b", "moon c"]
    assert rest.next_cursor is None
    assert await titles(storage, run, text="moon") == ["moon a", "moon b", "moon b", "moon c"]
    await check_invariants(storage, run.id)


PEOPLE = Recipe(
    "people",
    "One card per person.",
    (
        Field("person"),
        Field("age", "integer", required=False),
        Field("alive", "boolean", required=False),
        Field("roles", "list", required=False),
    ),
)


async def test_recipe_fields_filter_and_their_text_is_searched(storage: Storage) -> None:
    cards = [
        PEOPLE.draft({"person": "Ada Lovelace", "age": 36, "alive": False, "roles": ["Poet"]}),
        PEOPLE.draft({"person": "Grace Hopper", "age": 85, "roles": ["admiral", "coder"]}),
        PEOPLE.draft({"person": "Alan Turing", "alive": True}),
    ]
    run = await storage.create_run([Document("p.md", b"people")], recipe=PEOPLE)
    (upload,) = await storage.list_uploads(run.id)
    assert await storage.complete_upload(upload.id, cards)

    async def people(**query: object) -> list[object]:
        found = await storage.search_cards(run.id, **query)  # type: ignore[arg-type]
        return [(c.fields or {})["person"] for c in found.cards]

    assert await people(field=("person", "LOVE")) == ["Ada Lovelace"]
    assert await people(field=("age", "85")) == ["Grace Hopper"]
    assert await people(field=("age", "85.0")) == ["Grace Hopper"]
    assert await people(field=("age", "nan")) == []
    assert await people(field=("alive", "no")) == ["Ada Lovelace"]
    assert await people(field=("alive", "TRUE")) == ["Alan Turing"]
    assert await people(field=("roles", "cod")) == ["Grace Hopper"]
    assert await people(field=("roles", "cod"), text="ada") == []
    assert await people(text="admiral") == ["Grace Hopper"]
    assert await people(text="turing") == ["Alan Turing"]
    assert await people(text="36") == []  # numbers are not text
    with pytest.raises(InputError, match="no field 'height'"):
        await storage.search_cards(run.id, field=("height", "1"))


async def store_fields(storage: Storage, upload_id: str, ordinal: int, fields: str) -> None:
    """Write a card's stored fields as they are, past every check (a database written by
    an older version)."""
    if isinstance(storage, MemoryStorage):
        cards = storage._cards[upload_id]
        card = cards[ordinal]
        changed = attrs.evolve(card, fields=json.loads(fields))
        storage._cards[upload_id] = (*cards[:ordinal], changed, *cards[ordinal + 1 :])
        return

    def write(tx: Tx) -> None:
        sql = "UPDATE cards SET fields_json = ? WHERE upload_id = ? AND ordinal = ?"
        tx.run(sql, (fields, upload_id, ordinal))

    assert isinstance(storage, SQLBackend)
    await storage._call(write, write=True)


async def test_a_stored_integer_too_long_for_a_float_is_compared_exactly(
    storage: Storage,
) -> None:
    huge = 10**400  # 401 digits: no float holds it
    cards = [
        PEOPLE.draft({"person": "Grace Hopper", "age": 85}),
        PEOPLE.draft({"person": "Huge", "age": 1}),
        PEOPLE.draft({"person": "Negative", "age": 2}),
    ]
    run = await storage.create_run([Document("p.md", b"people")], recipe=PEOPLE)
    (upload,) = await storage.list_uploads(run.id)
    assert await storage.complete_upload(upload.id, cards)
    await store_fields(storage, upload.id, 1, json.dumps({"person": "Huge", "age": huge}))
    await store_fields(storage, upload.id, 2, json.dumps({"person": "Negative", "age": -huge}))

    async def people(value: str) -> list[object]:
        found = await storage.search_cards(run.id, field=("age", value))
        return [(c.fields or {})["person"] for c in found.cards]

    assert await people(str(huge)) == ["Huge"]
    assert await people("1e400") == ["Huge"]
    assert await people(" 1E+400 ") == ["Huge"]
    assert await people(str(-huge)) == ["Negative"]
    assert await people(str(huge + 1)) == []
    assert await people("1e401") == []
    assert await people("85") == ["Grace Hopper"]
    assert await people("85.0") == ["Grace Hopper"]
    for nothing in ("inf", "-inf", "nan", "sNaN", "1e999999999999", "-1e-999999999999", "x"):
        assert await people(nothing) == [], nothing
    listed = [c.title for c in await storage.list_cards(run.id)]
    assert listed == ["Grace Hopper", "Huge", "Negative"]


async def test_a_filter_the_index_cannot_narrow_reads_a_bounded_amount(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    cards = [PEOPLE.draft({"person": f"p{i}", "age": i % 10}) for i in range(60)]
    run = await storage.create_run([Document("p.md", b"people")], recipe=PEOPLE)
    (upload,) = await storage.list_uploads(run.id)
    assert await storage.complete_upload(upload.id, cards)
    monkeypatch.setattr(_search, "SCAN_BUDGET", 8)
    first = await storage.search_cards(run.id, field=("age", "7"), limit=2)
    # Eight cards read, one found: a short page, and a cursor just past what was read.
    assert [c.title for c in first.cards] == ["p7"]
    second = await storage.search_cards(run.id, field=("age", "7"), after=first.next_cursor)
    assert [c.title for c in second.cards] == []
    assert second.next_cursor is not None
    found = await titles(storage, run, field=("age", "7"), limit=2)
    assert found == [f"p{i}" for i in range(7, 60, 10)]


async def test_bad_arguments_name_themselves(storage: Storage) -> None:
    run = await settled_run(storage, PAGES[:1])
    for cursor in ("", "1", "x:1", "-1:0", "1:2:3", "1:" + "9" * 11, " 1:2"):
        with pytest.raises(InputError, match="after must be a cursor"):
            await storage.search_cards(run.id, after=cursor)
    for limit in (0, -1, 501, True, 2.5):
        with pytest.raises(InputError, match="limit must be"):
            await storage.search_cards(run.id, limit=limit)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="text must be"):
        await storage.search_cards(run.id, text=b"moon")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="field must be"):
        await storage.search_cards(run.id, field="age")  # type: ignore[arg-type]
    with pytest.raises(RunNotFound):
        await storage.search_cards("run-nope")
    with pytest.raises(RunNotFound):
        await storage.search_cards("run-nope", text="moon")


def oracle(drafts: Sequence[CardDraft], text: str) -> list[str]:
    """What a text search must find, written without the library's matcher."""

    def toks(s: str) -> list[str]:
        return re.findall(r"[^\W_]+", s.casefold())

    terms = toks(text)[:12]
    out = []
    for d in drafts:
        have = toks(" ".join([d.title, d.body, d.quote or "", *d.tags]))
        if all(any(w.startswith(t) for w in have) for t in terms):
            out.append(d.title)
    return out


async def test_random_cards_and_queries_match_an_oracle(storage: Storage) -> None:
    rng = random.Random(5)
    vocabulary = [
        "moon",
        "Moonlight",
        "sea",
        "séance",
        "SEAL",
        "bread",
        "brea",
        "Ünïcode",
        "x-ray",
        "o'clock",
        "4ever",
        "e=mc2",
        "straße",
        "ΣΊΣΥΦΟΣ",
        "日本語",
    ]

    def text(n: int) -> str:
        return " ".join(rng.choice(vocabulary) for _ in range(n))

    drafts = [
        CardDraft(f"{i} {text(2)}", text(6), tuple(text(1) for _ in range(rng.randrange(3))))
        for i in range(40)
    ]
    run = await settled_run(storage, [drafts[:25], drafts[25:]])
    queries = [
        "moon",
        "MOONL",
        "sea",
        "séa",
        "sea bread",
        "x ray",
        "o",
        "4",
        "mc2",
        "STRASSE",
        "σίσυφος",
        "日本",
        "ünï",
        "brea",
        "bread",
    ]
    for query in queries:
        assert await titles(storage, run, text=query, limit=7) == oracle(drafts, query), query


async def test_every_letter_and_digit_is_a_word_character(storage: Storage) -> None:
    # Words a text search parser would drop or cut differently: each backend finds them.
    run = await settled_run(
        storage,
        [
            [
                CardDraft("Squares", "x² and ½ of it", ("Ω",)),
                CardDraft("Numbers", "1e5x, 3rd, 0x1f and 1.5"),
                CardDraft("Ligatures", "the ﬁne print; ǅemal"),
            ]
        ],
    )
    assert await titles(storage, run, text="x²") == ["Squares"]
    assert await titles(storage, run, text="½") == ["Squares"]
    assert await titles(storage, run, text="ω") == ["Squares"]
    assert await titles(storage, run, tag="Ω") == ["Squares"]
    assert await titles(storage, run, text="1e5x") == ["Numbers"]
    assert await titles(storage, run, text="1e5") == ["Numbers"]
    assert await titles(storage, run, text="3r 0x1") == ["Numbers"]
    assert await titles(storage, run, text="5") == ["Numbers"]  # 1.5 is two words
    assert await titles(storage, run, text="fine") == ["Ligatures"]  # ﬁ folds to fi
    assert await titles(storage, run, text="ǄEMAL") == ["Ligatures"]
