"""A dry run sends nothing, so it needs no API key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cardmill._cost import DEFAULT_PRICES
from cardmill.providers import DEFAULT_ANTHROPIC_MODEL

from .test_cli import cardmill


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_a_dry_run_needs_no_api_key(
    env: dict[str, str], tmp_path: Path, provider: str
) -> None:
    doc = tmp_path / "a.md"
    doc.write_text("# A\n\n" + "words " * 400)
    assert not any(k.startswith(("ANTHROPIC_", "OPENAI_")) for k in env)
    args = ["analyze", str(doc), "--dry-run", "--provider", provider]
    text = await cardmill(*args, env=env)
    assert text.returncode == 0, text.stderr.decode()
    assert "nothing sent" in text.stderr.decode()
    assert "total of 1 document" in text.stdout.decode()
    done = await cardmill(*args, "--json", env=env)
    assert done.returncode == 0, done.stderr.decode()
    data = json.loads(done.stdout)
    assert data["provider"] == provider
    assert data["total"]["input_tokens"] > 0
    if provider == "anthropic":
        assert data["model"] == DEFAULT_ANTHROPIC_MODEL
        assert DEFAULT_PRICES.price_for(DEFAULT_ANTHROPIC_MODEL) is not None
        assert data["total"]["cost_usd"] > 0
    assert not (tmp_path / "cli.db").exists()
