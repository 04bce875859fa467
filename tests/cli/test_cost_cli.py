"""The command line's cost: --dry-run, --prices, --max-cost, and the cost it shows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from cardmill import Document, MemoryStorage, RunStatus
from cardmill._cost import DEFAULT_PRICES, Price, PriceTable
from cardmill.cli._runner import EXIT_CAPPED, Spend, _execute_run, _reported
from cardmill.engine import estimate_cost
from cardmill.providers import (
    DEFAULT_ANTHROPIC_MODEL,
    Analysis,
    AnthropicProvider,
    estimate_input_tokens,
    request_overhead_tokens,
)
from cardmill.testing import FakeAnthropicServer, ScriptedProvider, Step

from ..big_recipe import write_big_recipe
from .test_cli import cardmill, one_line_error


def overhead(model: str = DEFAULT_ANTHROPIC_MODEL) -> int:
    """What each request of the default recipe carries besides its document."""
    return request_overhead_tokens(AnthropicProvider(api_key="k", model=model))


async def test_dry_run_sends_nothing_and_makes_no_run(env: dict[str, str], tmp_path: Path) -> None:
    small, big = tmp_path / "a.md", tmp_path / "b.md"
    small.write_text("# A\n\nshort.\n")
    big.write_text("# B\n\n" + "words " * 4000)
    key = "fake-key-dry"
    async with FakeAnthropicServer(api_key=key) as server:
        run_env = {**env, "ANTHROPIC_API_KEY": key, "ANTHROPIC_BASE_URL": server.url}
        done = await cardmill("analyze", str(tmp_path), "--dry-run", "--json", env=run_env)
        text = await cardmill("analyze", str(tmp_path), "--dry-run", env=run_env)
        assert server.requests == []
    assert done.returncode == 0, done.stderr
    assert not await trio.Path(env["CARDMILL_DB"]).exists()
    data = json.loads(done.stdout)
    assert data["model"] == DEFAULT_ANTHROPIC_MODEL
    price = DEFAULT_PRICES.price_for(DEFAULT_ANTHROPIC_MODEL)
    assert price is not None
    rows = {Path(r["document"]).name: r for r in data["documents"]}
    document = Document.from_path(big)
    assert rows["b.md"]["input_tokens"] == estimate_input_tokens(document, overhead=overhead())
    expected = estimate_cost(
        document, price, max_tokens=data["max_output_tokens"], overhead_tokens=overhead()
    )
    assert rows["b.md"]["cost_usd"] == pytest.approx(expected)
    assert rows["b.md"]["batch_cost_usd"] == pytest.approx(expected / 2)
    assert data["total"]["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in rows.values()))
    out = text.stdout.decode()
    assert "total of 2 documents" in out
    assert "nothing sent" in text.stderr.decode()


async def test_dry_run_offline_costs_nothing_and_unpriced_is_unknown(
    env: dict[str, str], tmp_path: Path
) -> None:
    doc = tmp_path / "a.md"
    doc.write_text("# A\n\nshort.\n")
    offline = json.loads(
        (await cardmill("analyze", str(doc), "--dry-run", "--json", env=env)).stdout
    )
    assert offline["total"]["cost_usd"] == 0.0
    run_env = {**env, "ANTHROPIC_API_KEY": "k", "ANTHROPIC_BASE_URL": "http://127.0.0.1:9"}
    unknown = await cardmill(
        "analyze", str(doc), "--dry-run", "--model", "claude-mythos-preview", env=run_env
    )
    assert unknown.returncode == 0
    assert "unknown" in unknown.stdout.decode()


async def test_prices_file_overrides_the_table(env: dict[str, str], tmp_path: Path) -> None:
    doc = tmp_path / "a.md"
    doc.write_text("x" * 4000)
    prices = tmp_path / "prices.toml"
    prices.write_text('[models."my-model"]\ninput = 1000.0\noutput = 0.0\n')
    run_env = {
        **env,
        "ANTHROPIC_API_KEY": "k",
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:9",
        "CARDMILL_PRICES": str(prices),
    }
    done = await cardmill(
        "analyze", str(doc), "--dry-run", "--json", "--model", "my-model", env=run_env
    )
    data = json.loads(done.stdout)
    assert data["total"]["cost_usd"] == pytest.approx((overhead("my-model") + 1000) * 1000 / 1e6)


async def test_dry_run_counts_the_recipes_prompt_and_schema(
    env: dict[str, str], tmp_path: Path
) -> None:
    doc = tmp_path / "a.md"
    doc.write_text("# A\n\n" + "words " * 400)
    recipe = write_big_recipe(tmp_path / "big.toml")
    assert recipe.stat().st_size > 45_000
    run_env = {**env, "ANTHROPIC_API_KEY": "k", "ANTHROPIC_BASE_URL": "http://127.0.0.1:9"}

    async def tokens(*options: str) -> int:
        done = await cardmill("analyze", str(doc), "--dry-run", "--json", *options, env=run_env)
        assert done.returncode == 0, done.stderr
        total: int = json.loads(done.stdout)["total"]["input_tokens"]
        return total

    study, big = await tokens(), await tokens("--recipe", str(recipe))
    # 48 KB of instructions and schema are some 12,000 tokens or more, on every request
    assert big - study > 11_000
    # the default recipe's own prompt is counted too
    assert study == estimate_input_tokens(Document.from_path(doc), overhead=overhead())


@pytest.mark.parametrize(
    ("content", "names"),
    [
        ('[models."m"\ninput = 1', "not valid TOML"),
        ('[models."m"]\ninput = 1\noutput = 2\ncolour = 3\n', 'models."m".colour'),
        ('[models."m"]\ninput = -1\noutput = 2\n', 'models."m".input'),
        ('[models."m"]\ninput = 1\n', 'models."m".output'),
        ('[models."m"]\ninput = 1\noutput = "2"\n', 'models."m".output'),
        ('[models."m"]\ninput = 1\noutput = 2\nbatch_share = 2\n', 'models."m".batch_share'),
        ('[models."m"]\ninput = 1\noutput = 2\nlong_prompt_above = 10\n', "go together"),
        ("nothing = 1\n", "'nothing'"),
        ("", "no [models"),
    ],
)
async def test_prices_file_errors_name_the_file_and_key(
    env: dict[str, str], tmp_path: Path, content: str, names: str
) -> None:
    doc = tmp_path / "a.md"
    doc.write_text("# A\n\nshort.\n")
    prices = tmp_path / "prices.toml"
    prices.write_text(content)
    done = await cardmill("analyze", str(doc), "--dry-run", "--prices", str(prices), env=env)
    assert done.returncode == 2
    line = one_line_error(done.stderr)
    assert str(prices) in line
    assert names in line


@pytest.mark.parametrize("bad", ["nan", "inf", "-1", "lots"])
async def test_max_cost_must_be_a_finite_amount(
    env: dict[str, str], tmp_path: Path, bad: str
) -> None:
    doc = tmp_path / "a.md"
    doc.write_text("# A\n\nshort.\n")
    done = await cardmill("analyze", str(doc), "--max-cost", bad, env=env)
    assert done.returncode == 2
    assert "--max-cost" in one_line_error(done.stderr)
    assert not await trio.Path(env["CARDMILL_DB"]).exists()


async def test_max_cost_with_an_unpriced_model_is_refused_before_a_run(
    env: dict[str, str], tmp_path: Path
) -> None:
    doc = tmp_path / "a.md"
    doc.write_text("# A\n\nshort.\n")
    run_env = {**env, "ANTHROPIC_API_KEY": "k", "ANTHROPIC_BASE_URL": "http://127.0.0.1:9"}
    done = await cardmill(
        "analyze", str(doc), "--max-cost", "1", "--model", "claude-mythos-preview", env=run_env
    )
    assert done.returncode == 2
    assert "claude-mythos-preview" in one_line_error(done.stderr)
    assert not await trio.Path(env["CARDMILL_DB"]).exists()


class _Priced:
    name = "priced"
    model = "m"
    max_tokens = 100

    def __init__(self) -> None:
        self.inner = ScriptedProvider(default=Step(1.0))

    async def analyze(self, document: Document) -> Analysis:
        return await self.inner.analyze(document)


async def test_reaching_the_cap_says_so_and_how_to_go_on(
    autojump_clock: trio.testing.MockClock, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = MemoryStorage()
    run = await storage.create_run([Document(f"d{i}.md", b"x" * 4000) for i in range(5)])
    prices = PriceTable({"m": Price(1.0, 2.0, 1.25, 0.1)})
    provider = _Priced()
    summary = await _execute_run(
        storage,
        run,
        provider,
        db="cardmill.db",
        concurrency=1,
        limits=None,
        quiet=True,
        lease=60,
        prices=prices,
        max_cost=0.0019,
    )
    assert summary.run.status == RunStatus.CANCELLED
    assert _reported(summary, "cardmill.db", False, provider) == EXIT_CAPPED
    out, err = capsys.readouterr()
    assert f"cardmill resume {run.id} --max-cost HIGHER" in err
    assert "spending cap of $0.0019" in err
    assert f"\ncost       ${summary.run.cost_usd:.4f}\n" in out
    assert summary.run.cost_usd > 0


def test_spend_reads_the_prices_file(tmp_path: Path) -> None:
    prices = tmp_path / "p.toml"
    prices.write_text('as_of = "2030-01-01"\n[models."x"]\ninput = 1\noutput = 2\n')
    table = trio.run(Spend(str(prices)).table)
    assert table.as_of == "2030-01-01"
    assert table.price_for("x") == Price(1, 2, 1.25, 0.1)
    assert table.price_for(DEFAULT_ANTHROPIC_MODEL) is not None
