"""`cardmill serve`: loopback by default, a warning beyond it, no password on any page."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio

from .. import pg
from .conftest import EXAMPLES, cardmill_command
from .test_cli import cardmill, one_line_error


@asynccontextmanager
async def serving(
    *args: str, env: dict[str, str], stop: signal.Signals = signal.SIGINT
) -> AsyncIterator[tuple[str, list[str]]]:
    """``cardmill serve ARGS`` until the block ends with Ctrl-C (or ``stop``); its URL and
    what it printed on standard error, line by line."""
    process = await trio.lowlevel.open_process(
        [*cardmill_command(), "serve", "--port", "0", *args],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        env=env,
    )
    assert process.stderr is not None
    lines: list[str] = []
    buffer = b""
    try:
        with trio.fail_after(30):
            while not any(" on http://" in line for line in lines):
                chunk = await process.stderr.receive_some()
                assert chunk, b"".join([buffer, *(x.encode() for x in lines)]).decode()
                buffer += chunk
                *done, buffer = buffer.split(b"\n")
                lines.extend(line.decode() for line in done)
        url = next(line for line in lines if " on http://" in line).split(" on ")[1].split()[0]
        yield url, lines
    finally:
        process.send_signal(stop)
        with trio.fail_after(30):
            await process.wait()
    assert process.returncode == 128 + stop


async def test_serve_stops_on_sigterm_as_on_ctrl_c(env: dict[str, str]) -> None:
    analysed = await cardmill("analyze", str(EXAMPLES), "--json", env=env)
    assert analysed.returncode == 0, analysed.stderr.decode()
    async with serving(env=env, stop=signal.SIGTERM) as (url, _):
        async with httpx.AsyncClient() as client:
            assert (await client.get(url)).status_code == 200
    # The exit status (143) is checked as the block ends.


async def test_a_remote_host_needs_allow_remote(env: dict[str, str]) -> None:
    done = await cardmill("serve", "--host", "0.0.0.0", env=env)
    assert done.returncode == 2
    assert one_line_error(done.stderr) == (
        "cardmill: error: --host 0.0.0.0: other machines could read every card; "
        "pass --allow-remote to serve beyond this machine"
    )


async def test_a_missing_database_is_named(env: dict[str, str], tmp_path: Path) -> None:
    done = await cardmill("serve", "--db", str(tmp_path / "none.db"), env=env)
    assert done.returncode == 2
    assert one_line_error(done.stderr).endswith(
        "none.db: no such database (run `cardmill analyze` first)"
    )


async def test_serve_shows_the_examples_run_until_ctrl_c(env: dict[str, str]) -> None:
    analysed = await cardmill("analyze", str(EXAMPLES), "--json", env=env)
    assert analysed.returncode == 0, analysed.stderr.decode()
    async with serving(env=env) as (url, lines):
        assert url.startswith("http://127.0.0.1:")
        async with httpx.AsyncClient() as client:
            page = await client.get(url)
            refused = await client.get(url, headers={"host": "evil.example"})
            metrics = await client.get(url + "metrics")
    assert page.status_code == 200
    assert metrics.status_code == 404
    assert "SUCCEEDED" in page.text
    assert env["CARDMILL_DB"] in page.text
    assert refused.status_code == 400
    assert not [line for line in lines if "warning" in line]


async def test_serve_metrics_answers_prometheus_text_of_the_database(
    env: dict[str, str],
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    analysed = await cardmill("analyze", str(EXAMPLES), "--json", env=env)
    assert analysed.returncode == 0, analysed.stderr.decode()
    run_id = json.loads(analysed.stdout)["run"]["id"]
    async with serving("--metrics", env=env) as (url, lines):
        async with httpx.AsyncClient() as client:
            answer = await client.get(url + "metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    cards = {
        s.labels["cardmill_run_id"]: s.value
        for f in text_string_to_metric_families(answer.text)
        for s in f.samples
        if s.name == "cardmill_run_cards"
    }
    assert cards == {run_id: json.loads(analysed.stdout)["run"]["total_cards"]}
    assert f"cardmill: Prometheus metrics at {url}metrics" in lines


async def test_allow_remote_warns_and_answers_any_host(env: dict[str, str]) -> None:
    await cardmill("analyze", str(EXAMPLES), env=env)
    async with serving("--host", "0.0.0.0", "--allow-remote", env=env) as (url, lines):
        port = url.rstrip("/").rsplit(":", 1)[1]
        async with httpx.AsyncClient() as client:
            page = await client.get(f"http://127.0.0.1:{port}/", headers={"host": "cards.lan"})
    assert page.status_code == 200
    assert (
        "cardmill: warning: serving on 0.0.0.0 to other machines, without a login: whoever "
        "reaches it reads every run and card"
    ) in lines


async def test_a_postgres_password_reaches_no_page_and_no_output(env: dict[str, str]) -> None:
    pg.require()
    schema = pg.new_schema()
    user_host = pg.DSN.split("://", 1)[1].split("@", 1)
    if len(user_host) != 2 or ":" in user_host[0]:
        pytest.skip("the test DSN has a password of its own")
    secret = "s3cret-viewer-pw"
    dsn = f"postgresql://{user_host[0]}:{secret}@{user_host[1]}"
    env = {**env, "CARDMILL_DB": dsn, "CARDMILL_PG_SCHEMA": schema}
    try:
        made = await cardmill("analyze", str(EXAMPLES), env=env)
        assert made.returncode == 0, made.stderr.decode()
        async with serving("--metrics", env=env) as (url, lines):
            async with httpx.AsyncClient() as client:
                paths = ("", "runs/nope", "x", "metrics")
                pages = [(await client.get(url + path)).text for path in paths]
        assert "cardmill_run_cards{" in pages[3]
        assert all(secret not in page for page in pages)
        assert f"postgresql://{user_host[0]}:***@" in pages[0]
        assert all(secret not in line for line in lines)
    finally:
        pg.drop_schema(schema)


async def test_a_busy_port_is_one_line_and_exit_2(env: dict[str, str]) -> None:
    await cardmill("analyze", str(EXAMPLES), env=env)
    with trio.socket.socket() as taken:
        await taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = await cardmill("serve", "--port", str(port), env=env)
    assert done.returncode == 2
    assert one_line_error(done.stderr) == (
        f"cardmill: error: cannot listen on 127.0.0.1:{port} (Address already in use)"
    )


async def test_an_unresolvable_host_is_one_line_and_exit_2(env: dict[str, str]) -> None:
    await cardmill("analyze", str(EXAMPLES), env=env)
    done = await cardmill(
        "serve", "--host", "cards.invalid", "--allow-remote", "--port", "8765", env=env
    )
    assert done.returncode == 2
    line = one_line_error(done.stderr)
    assert line.startswith("cardmill: error: cannot listen on cards.invalid:8765 ("), line
    assert "warning" not in done.stderr.decode()
