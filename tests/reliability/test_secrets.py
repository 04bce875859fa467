"""The API key appears nowhere: database, logs, errors, reprs, CLI output."""

from __future__ import annotations

import json
from pathlib import Path

from cardmill.testing import FakeAnthropicServer

from .conftest import cardmill

KEY = "fake-key-for-tests-TOPSECRET-0123456789abcdefXYZ"


def assert_no_key(*blobs: bytes) -> None:
    for blob in blobs:
        assert KEY.encode() not in blob
        assert KEY[12:30].encode() not in blob  # not even a fragment


def database_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))


async def test_key_never_leaks(tmp_path: Path, env: dict[str, str]) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("# Doc\n\nSome text.\n")
    db = Path(env["CARDMILL_DB"])
    async with FakeAnthropicServer(api_key="a-different-key") as wrong:
        run_env = {**env, "ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": wrong.url}
        refused = await cardmill("analyze", str(doc), "-vv", "--json", env=run_env)
    assert refused.returncode == 1  # FAILED: the only upload got a 401
    assert "401 authentication_error" in refused.stderr.decode()
    assert b"DEBUG" in refused.stderr  # debug logging really was on
    run_id = json.loads(refused.stdout)["run"]["id"]
    shown = await cardmill("show", run_id, "--json", env=run_env)
    assert "401 authentication_error: invalid x-api-key" in shown.stdout.decode()
    async with FakeAnthropicServer(api_key=KEY) as right:
        run_env["ANTHROPIC_BASE_URL"] = right.url
        ok = await cardmill("analyze", str(doc), "-vv", env=run_env)
        assert ok.returncode == 0, ok.stderr.decode()
    exported = await cardmill("export", run_id, "--format", "jsonl", env=run_env)
    runs = await cardmill("runs", "--json", env=run_env)
    assert_no_key(
        refused.stdout,
        refused.stderr,
        shown.stdout,
        ok.stdout,
        ok.stderr,
        exported.stdout,
        runs.stdout,
        database_bytes(db),
    )


async def test_a_key_with_a_stray_carriage_return_is_refused_and_never_stored(
    tmp_path: Path, env: dict[str, str]
) -> None:
    # A .env file with Windows line ends: the key ends in "\r", which no header may hold.
    doc = tmp_path / "doc.md"
    doc.write_text("# Doc\n\nSome text.\n")
    db = Path(env["CARDMILL_DB"])
    async with FakeAnthropicServer(api_key=KEY) as server:
        run_env = {**env, "ANTHROPIC_API_KEY": KEY + "\r", "ANTHROPIC_BASE_URL": server.url}
        done = await cardmill("analyze", str(doc), "-vv", env=run_env)
        assert server.requests == []
    assert_no_key(done.stdout, done.stderr, database_bytes(db))
    assert done.returncode == 2, done.stderr.decode()
    assert done.stderr.decode().splitlines() == [
        "cardmill: error: ANTHROPIC_API_KEY has a carriage return (U+000D) at its end: "
        "an API key is printable ASCII with no spaces"
    ]
