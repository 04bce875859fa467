"""The requests and 429s a run stored are those the server received and answered."""

from __future__ import annotations

import json
from pathlib import Path

from cardmill.testing import FakeAnthropicServer

from .test_cli import cardmill

KEY = "fake-key-request-counts"


async def test_stored_requests_and_429s_are_the_servers(
    env: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(3):
        (folder / f"doc-{i}.md").write_text(f"# Doc {i}\n\nSomething worth a card.\n")
    async with FakeAnthropicServer(api_key=KEY) as server:
        server.inject("429", "429", "529")
        run_env = {**env, "ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": server.url}
        done = await cardmill("analyze", str(folder), "--json", "-q", env=run_env)
        statuses = server.statuses()
    assert done.returncode == 0, done.stderr.decode()
    assert statuses.count(429) == 2
    assert len(statuses) == 6  # three documents, two 429s and one 529 retried
    run_id = json.loads(done.stdout)["run"]["id"]

    shown = json.loads((await cardmill("show", run_id, "--json", env=env)).stdout)
    assert (shown["run"]["requests"], shown["run"]["rate_limited"]) == (6, 2)
    uploads = shown["uploads"]
    assert sum(u["requests"] for u in uploads) == 6
    assert sum(u["rate_limited"] for u in uploads) == 2
    assert all(u["requests"] >= 1 for u in uploads)

    (listed,) = json.loads((await cardmill("runs", "--json", env=env)).stdout)
    assert (listed["requests"], listed["rate_limited"]) == (6, 2)

    text = (await cardmill("show", run_id, env=env)).stdout.decode()
    assert "requests   6 (2 × 429)\n" in text
    assert "STATUS     TRIES CARDS  REQS  429S  DOCUMENT\n" in text
    rows = [line.split() for line in text.splitlines() if line.startswith("COMPLETED")]
    assert sorted((int(r[3]), int(r[4])) for r in rows) == sorted(
        (u["requests"], u["rate_limited"]) for u in uploads
    )
