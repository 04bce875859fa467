"""docs/recipes.md's examples, run as printed there."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

from cardmill import Document, InputError, Recipe, SQLiteStorage
from cardmill.testing import FakeAnthropicServer, check_invariants

ROOT = Path(__file__).resolve().parents[1]
PAGE = (ROOT / "docs" / "recipes.md").read_text()
INSIGHTS = ROOT / "examples" / "recipes" / "insights.toml"
KEY = "fake-key-recipes-doc"


def prose() -> str:
    """The page with its line breaks folded, as a reader reads it."""
    return " ".join(PAGE.split())


def test_the_language_example_makes_the_prompt_the_page_quotes() -> None:
    found = re.search(r'`language = "([^"]+)"`, which adds "([^"]+)" to the prompt', prose())
    assert found is not None, "the language example has moved"
    language, sentence = found.groups()
    text = INSIGHTS.read_text().replace("\n[[fields]]", f'\nlanguage = "{language}"\n[[fields]]', 1)
    recipe = Recipe.from_toml(text, source="insights.toml")
    assert recipe.language == language
    paragraphs = recipe.system_prompt().split("\n\n")
    assert sentence in paragraphs
    assert paragraphs.index(sentence) == len(recipe.instructions.split("\n\n"))


def test_the_refusal_the_page_shows_is_the_one_given() -> None:
    found = re.search(r"naming the file, the recipe and the field: `([^`]+)`", prose())
    assert found is not None, "the refusal example has moved"
    text = re.sub(r"choices = \[.*\]\n", "", INSIGHTS.read_text(), count=1)
    with pytest.raises(InputError) as info:
        Recipe.from_toml(text, source="insights.toml")
    assert str(info.value) == found.group(1)


async def test_the_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (code,) = re.findall(r"## From Python\n\n```python\n(.*?)```", PAGE, re.S)
    # A module of its own, as a script would be: attrs resolves the class's hints there.
    module = types.ModuleType("recipes_example")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    module.documents = [Document("notes.md", b"# Notes\n\nBees make honey. They dance.\n")]  # type: ignore[attr-defined]
    exec(compile(code, "docs/recipes.md", "exec"), module.__dict__)
    namespace = module.__dict__
    assert isinstance(namespace["flash"], Recipe)
    insights = namespace["insights"]
    assert isinstance(insights, Recipe)
    assert [f.name for f in insights.fields] == ["insight", "category", "confidence", "people"]
    monkeypatch.chdir(tmp_path)
    async with FakeAnthropicServer(api_key=KEY) as server:
        monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        await namespace["main"]()
    async with SQLiteStorage.open(tmp_path / "cards.db") as storage:
        (run,) = await storage.list_runs()
        assert run.completed_items == 1
        assert run.recipe_name == "insights"
        cards = await storage.list_cards(run.id)
        assert cards
        assert all(c.fields and c.fields["category"] in ("finding", "risk", "idea") for c in cards)
        await check_invariants(storage, run.id)
