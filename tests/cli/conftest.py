from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def cardmill_command() -> list[str]:
    """The installed console script, as a user would run it."""
    script = Path(sys.executable).with_name("cardmill")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "cardmill"]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ANTHROPIC_", "OPENAI_", "CARDMILL_"))
    }
    clean["CARDMILL_DB"] = str(tmp_path / "cli.db")
    return clean
