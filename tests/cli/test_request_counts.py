"""The requests and 429s a run stored are those the server received and answered."""

from __future__ import annotations

import json
from pathlib import Path

from cardmill import CardDraft, Document, SQLiteStorage, Usage
from cardmill.testing import FakeAnthropicServer, check_invariants

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


async def test_a_summary_tells_this_commands_requests_from_the_runs(
    env: dict[str, str], tmp_path: Path
) -> None:
    # Another worker did half of the run (five requests, two of them answered 429):
    # `resume` sends two requests, and its summary says both numbers, and whose.
    db = env["CARDMILL_DB"]
    async with SQLiteStorage.open(db) as storage:
        run = await storage.create_run(
            Document(f"doc-{i}.md", f"# Doc {i}\n\nSomething worth a card.\n".encode())
            for i in range(4)
        )
        for requests, rate_limited in ((3, 2), (2, 0)):
            upload = await storage.claim_upload(run.id, worker="other", lease_seconds=60)
            assert upload is not None
            drafts = [CardDraft(title="done elsewhere", body="by another worker")]
            usage = Usage(input_tokens=100, output_tokens=10)
            assert await storage.complete_upload(
                upload.id,
                drafts,
                worker="other",
                usage=usage,
                requests=requests,
                rate_limited=rate_limited,
            )
    async with FakeAnthropicServer(api_key=KEY) as server:
        run_env = {**env, "ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": server.url}
        done = await cardmill("resume", run.id, "-q", env=run_env)
        sent = len(server.requests)
    assert done.returncode == 0, done.stderr.decode()
    assert sent == 2
    line = next(x for x in done.stdout.decode().splitlines() if x.startswith("requests"))
    assert line == (
        "requests   2 by this command (0 × 429, 0 × 529, 0 retries), 7 for the run (2 × 429)"
    )
    async with SQLiteStorage.open(db) as storage:
        await check_invariants(storage, run.id)
        stored = await storage.get_run(run.id)
    assert (stored.requests, stored.rate_limited, stored.completed_items) == (7, 2, 4)
    shown = (await cardmill("show", run.id, env=env)).stdout.decode()
    assert "requests   7 (2 × 429)\n" in shown
