"""Every option that an environment variable can set says which, in `--help`."""

from __future__ import annotations

import pytest

from .test_cli import cardmill

DB_COMMANDS = ["analyze", "resume", "runs", "show", "export", "worker"]


@pytest.mark.parametrize("command", DB_COMMANDS)
async def test_db_help_names_its_environment_variables(command: str, env: dict[str, str]) -> None:
    done = await cardmill(command, "--help", env=env)
    assert done.returncode == 0
    text = " ".join(done.stdout.decode().split())
    assert "env var: CARDMILL_DB" in text
    assert "CARDMILL_PG_SCHEMA" in text  # where PostgreSQL is mentioned, its schema too


@pytest.mark.parametrize("command", ["analyze", "resume", "worker"])
async def test_model_help_names_its_environment_variable(command: str, env: dict[str, str]) -> None:
    done = await cardmill(command, "--help", env=env)
    assert "env var: CARDMILL_MODEL" in " ".join(done.stdout.decode().split())
