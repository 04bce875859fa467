"""``python -m cardmill.testing.serve``: the loopback Anthropic server for trying the
command line, as the README and docs/providers.md show it."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from cardmill.providers import DEFAULT_ANTHROPIC_MODEL
from cardmill.testing import FakeAnthropicServer, serve

from .conftest import EXAMPLES
from .test_cli import cardmill

ROOT = Path(__file__).resolve().parents[2]


async def _lines(stream: trio.abc.ReceiveStream, count: int) -> list[str]:
    """The first ``count`` lines a process writes."""
    buffer = b""
    with trio.fail_after(30):
        while buffer.count(b"\n") < count:
            chunk = await stream.receive_some()
            assert chunk, buffer.decode()
            buffer += chunk
    return buffer.decode().splitlines()[:count]


async def test_serve_prints_its_url_then_cardmill_runs_against_it_until_sigterm(
    env: dict[str, str],
) -> None:
    server = await trio.lowlevel.open_process(
        [sys.executable, "-m", "cardmill.testing.serve", "--port", "0", "--latency", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert server.stdout is not None
        url, _, exported, command, _ = await _lines(server.stdout, 5)
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url), url
        assert exported == f"  export ANTHROPIC_BASE_URL={url} ANTHROPIC_API_KEY=fake-key"
        assert command == "  cardmill analyze examples/ --provider anthropic"

        run_env = {**env, "ANTHROPIC_BASE_URL": url, "ANTHROPIC_API_KEY": "fake-key"}
        done = await cardmill(
            "analyze", str(EXAMPLES), "--provider", "anthropic", "--json", env=run_env
        )
        assert done.returncode == 0, done.stderr.decode()
        data = json.loads(done.stdout)
        assert data["model"] == DEFAULT_ANTHROPIC_MODEL
        assert data["run"]["status"] == "succeeded"
        assert data["run"]["requests"] == data["run"]["completed_items"] == 4
        assert data["run"]["total_cards"] > 0
    finally:
        server.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            await server.wait()
    assert server.returncode == 0
    assert server.stderr is not None
    assert await server.stderr.receive_some() == b""


async def test_the_docs_show_the_command_the_test_runs() -> None:
    readme = await trio.Path(ROOT / "README.md").read_text()
    providers = await trio.Path(ROOT / "docs" / "providers.md").read_text()
    for text in (readme, providers):
        assert "python -m cardmill.testing.serve --port 8766" in text
        assert "export ANTHROPIC_BASE_URL=http://127.0.0.1:8766 ANTHROPIC_API_KEY=fake-key" in text
        assert "cardmill analyze examples/ --provider anthropic" in text


def test_a_busy_port_or_a_bad_one_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert serve.main(["--port", str(port)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    (line,) = err.splitlines()
    assert line.startswith(f"cardmill.testing.serve: --port {port}: ")
    with pytest.raises(SystemExit) as refused:
        serve.main(["--port", "70000"])
    assert refused.value.code == 2
    assert "argument --port: must be 0 to 65535, not 70000" in capsys.readouterr().err


async def test_fake_server_listens_on_the_port_given() -> None:
    async with FakeAnthropicServer() as first:
        port = int(first.url.rsplit(":", 1)[1])
        with pytest.raises(OSError):  # noqa: PT011 - the OS words it
            async with FakeAnthropicServer(port=port):
                pass
    async with FakeAnthropicServer(port=port) as again:
        assert again.url == f"http://127.0.0.1:{port}"
    with pytest.raises(ValueError, match="port must be 0 to 65535, not 70000"):
        FakeAnthropicServer(port=70000)
