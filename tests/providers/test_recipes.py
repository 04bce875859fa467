"""Every provider takes a recipe: its schema and instructions go out, its fields come back."""

from __future__ import annotations

import json

import httpx
import pytest
import trio

from cardmill import (
    FLASHCARDS,
    KEY_POINTS,
    Document,
    Engine,
    Field,
    FieldType,
    InputError,
    InvalidOutput,
    MemoryStorage,
    Recipe,
)
from cardmill.providers import AnthropicProvider, ExtractiveProvider, OpenAICompatibleProvider
from cardmill.testing import FakeAnthropicServer, SimulatedAPI, check_invariants

KEY = "fake-key-provider-recipes"
DOC = Document(
    "notes.md", b"# Owls\n\nOwls hunt at night. They hear very well.\n\n# Bats\n\nBats fly."
)
MOODS = Recipe(
    "moods",
    "Give each part of the document a mood.",
    (
        Field("summary", max_chars=40),
        Field("mood", FieldType.ENUM, choices=("calm", "tense")),
        Field("intensity", FieldType.INTEGER, minimum=1, maximum=9),
        Field("quote", required=False),
        Field("keywords", FieldType.LIST, required=False, max_items=2),
    ),
    max_cards=5,
    language="Spanish",
)


async def test_anthropic_sends_the_recipe_and_reads_its_fields() -> None:
    async with FakeAnthropicServer(cards=2) as server:
        async with AnthropicProvider(api_key=KEY, base_url=server.url, recipe=MOODS) as p:
            analysis = await p.analyze(DOC)
        (request,) = server.requests
    tool = request.body["tools"][0]
    assert tool["input_schema"] == MOODS.schema()
    assert request.body["system"][0]["text"] == MOODS.system_prompt()
    assert "Owls hunt" not in request.body["system"][0]["text"]
    assert len(analysis.cards) == 2
    for card in analysis.cards:
        assert card.fields is not None
        assert (card.fields["mood"], card.fields["intensity"]) == ("calm", 5)
        assert card.title == card.fields["summary"]
        assert len(card.title) <= 40
        assert card.quote == card.fields["quote"]


async def test_openai_sends_the_recipe_as_the_response_format() -> None:
    seen: list[httpx.Request] = []
    content: dict[str, object] = {
        "cards": [{"question": "Who hunts at night?", "answer": "Owls.", "tags": []}]
    }

    def respond(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        message = {"role": "assistant", "content": json.dumps(content)}
        return httpx.Response(
            200, json={"choices": [{"message": message, "finish_reason": "stop"}]}
        )

    client = httpx.AsyncClient(transport=httpx.MockTransport(respond))
    async with OpenAICompatibleProvider(
        api_key=KEY, base_url="http://127.0.0.1:9/v1", client=client, recipe=FLASHCARDS
    ) as provider:
        analysis = await provider.analyze(DOC)
        content = {"cards": [{"question": 3, "answer": "x", "tags": []}]}
        with pytest.raises(InvalidOutput, match=r"cards\[0\]\.question is not a string"):
            await provider.analyze(DOC)
    body = json.loads(seen[0].content)
    assert body["response_format"]["json_schema"]["schema"] == FLASHCARDS.schema()
    assert body["messages"][0]["content"].startswith("You turn one document into flashcards")
    assert body["messages"][0]["content"].endswith(
        "Answer only with JSON matching the given schema."
    )
    (card,) = analysis.cards
    assert (card.title, card.body) == ("Who hunts at night?", "Owls.")


async def test_extractive_serves_the_builtins_and_names_what_it_cannot_fill() -> None:
    points = ExtractiveProvider(recipe=KEY_POINTS)
    assert points.warning is None
    cards = (await points.analyze(DOC)).cards
    assert [c.title for c in cards] == ["Owls", "Bats"]
    assert cards[0].fields == {
        "point": "Owls",
        "why": cards[0].body,
        "quote": "Owls hunt at night.",
    }
    flash = (await ExtractiveProvider(recipe=FLASHCARDS).analyze(DOC)).cards
    assert flash[0].fields is not None
    assert flash[0].fields["question"] == "Owls"
    with pytest.raises(InputError, match="cannot fill the required fields mood, intensity"):
        ExtractiveProvider(recipe=MOODS)
    optional = Recipe(
        "loose",
        "x",
        (Field("summary"), Field("mood", FieldType.ENUM, required=False, choices=("a",))),
    )
    loose = ExtractiveProvider(recipe=optional)
    assert loose.unfilled == ("mood",)
    assert loose.warning is not None
    assert "cannot fill mood of recipe 'loose'" in loose.warning
    (first, *_) = (await loose.analyze(DOC)).cards
    assert first.fields == {"summary": "Owls"}


async def test_simulated_api_answers_a_recipe_and_the_engine_stores_it() -> None:
    api = SimulatedAPI(latency=0.01, cards=3, recipe=MOODS)
    async with MemoryStorage() as storage:
        run = await storage.create_run([DOC, Document("b.txt", b"bats")], recipe=MOODS)
        summary = await Engine(storage, api).execute(run.id)
        assert summary.run.total_cards == 6
        await check_invariants(storage, run.id)
        for card in await storage.list_cards(run.id):
            assert card.fields is not None
            assert card.fields["intensity"] == 5


async def test_the_engine_refuses_a_provider_made_for_another_recipe() -> None:
    async with MemoryStorage() as storage:
        run = await storage.create_run([DOC], recipe=MOODS)
        with pytest.raises(
            InputError, match=r"made with recipe moods@.*provider was made for study-cards@"
        ):
            await Engine(storage, ExtractiveProvider()).execute(run.id)
        assert (await storage.get_run(run.id)).status.value == "pending"
        await trio.lowlevel.checkpoint()
