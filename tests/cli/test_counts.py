"""What the summary counts is what happened: requests the server received, and words
that agree with their numbers."""

from __future__ import annotations

import json
from pathlib import Path

from cardmill.testing import FakeAnthropicServer

from .test_cli import cardmill

KEY = "fake-key-counts"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"

# Each of these fails before a request could be made.
BAD = {
    "empty.md": (b"", "empty document"),
    "blank.html": (b"<html><body><script>1</script></body></html>", "no text"),
    "deep.html": (b"<div>" * 300 + b"<p>Too deep to read.</p>", "nested more than 256"),
    "junk.txt": (bytes(range(256)) * 16, "binary content, not text"),
    "fake.pdf": (b"not a pdf at all", "not a PDF"),
    "huge.txt": (b"word " * 130_000, "fit in one request"),
}


async def test_requests_are_those_the_server_received(env: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(3):
        (folder / f"good-{i}.md").write_text(f"# Good {i}\n\nThis one is fine. It makes cards.\n")
    for name, (data, _) in BAD.items():
        (folder / name).write_bytes(data)
    picture = tmp_path / "pic.png"  # named on the command line, so taken whatever its type
    picture.write_bytes(PNG)
    async with FakeAnthropicServer(api_key=KEY) as server:
        run_env = {**env, "ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": server.url}
        done = await cardmill("analyze", str(folder), str(picture), "--json", "-q", env=run_env)
        received = len(server.requests)
    assert done.returncode == 1, done.stderr.decode()  # PARTIAL
    summary = json.loads(done.stdout)
    assert received == 3
    assert summary["summary"]["requests"] == received
    assert summary["run"]["completed_items"] == 3
    assert summary["run"]["failed_items"] == len(BAD) + 1
    shown = await cardmill("show", summary["run"]["id"], "--json", env=env)
    errors = {Path(u["name"]).name: u["error"] for u in json.loads(shown.stdout)["uploads"]}
    for name, (_, reason) in BAD.items():
        assert reason in errors[name], (name, errors[name])
    assert "unsupported media type" in errors["pic.png"]
