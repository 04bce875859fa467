"""Numeric options refuse what is not a finite, positive number, in one line naming them."""

from __future__ import annotations

import pytest

from .conftest import EXAMPLES
from .test_cli import cardmill, one_line_error

CASES = [
    (option, value)
    for option in ("--rpm", "--itpm", "--lease")
    for value in ("nan", "inf", "-inf", "1e999", "-1", "0")
] + [("--concurrency", "0"), ("--concurrency", "-3"), ("--concurrency", "nan")]


@pytest.mark.parametrize(("option", "value"), CASES)
async def test_bad_numbers_are_refused_naming_the_option(
    env: dict[str, str], option: str, value: str
) -> None:
    done = await cardmill("analyze", str(EXAMPLES), f"{option}={value}", env=env)
    assert done.returncode == 2
    line = one_line_error(done.stderr)
    assert line.startswith(f"cardmill: error: Invalid value for '{option}': "), line
    assert done.stdout == b""


@pytest.mark.parametrize("value", ["nan", "inf", "0"])
async def test_the_worker_poll_interval_too(env: dict[str, str], value: str) -> None:
    done = await cardmill("worker", "--poll", value, env=env)
    assert done.returncode == 2
    assert one_line_error(done.stderr).startswith("cardmill: error: Invalid value for '--poll'")
