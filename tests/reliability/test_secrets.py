"""Secrets appear nowhere: the API key and the database password are in no database,
log, error, repr or CLI output."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import trio

from cardmill import Run, RunStatus
from cardmill.providers import redact_url
from cardmill.testing import FakeAnthropicServer

from .. import pg
from .conftest import cardmill, cardmill_command

KEY = "fake-key-for-tests-TOPSECRET-0123456789abcdefXYZ"
# Every character that breaks a naive reading of a URL's user info: @ : / % and spaces.
PASSWORD = "pw@TOPSECRET:with/slash %and spaces"
SECRETS = [PASSWORD, quote(PASSWORD, safe=""), "TOPSECRET", "%and spaces", KEY, KEY[12:30]]


def assert_no_key(*blobs: bytes) -> None:
    for blob in blobs:
        assert KEY.encode() not in blob
        assert KEY[12:30].encode() not in blob  # not even a fragment


def assert_no_secret(*blobs: bytes | str) -> None:
    """Neither the key nor the password, whole, percent-encoded or in part."""
    for blob in blobs:
        text = blob.decode(errors="replace") if isinstance(blob, bytes) else blob
        for secret in SECRETS:
            assert secret not in text, (secret, text[-2000:])


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


# -- the database password -------------------------------------------------------------


def dsn_with(password: str, *, user: str | None = None) -> str:
    """The test server's DSN as a URL, with this password (percent-encoded, as it must)."""
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(pg.DSN)
    netloc = f"{params.get('host', '127.0.0.1')}:{params.get('port', 5432)}"
    name = quote(user or str(params.get("user", "postgres")), safe="")
    return f"postgresql://{name}:{quote(password, safe='')}@{netloc}/{params.get('dbname', '')}"


@pytest.fixture
def schema() -> Iterator[str]:
    pg.require()
    name = pg.new_schema()
    yield name
    pg.drop_schema(name)


def schema_text(schema: str) -> str:
    """Every value stored in the schema, as text."""
    import psycopg

    with psycopg.connect(pg.DSN) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            (schema,),
        ).fetchall()
        rows = [
            conn.execute(f'SELECT * FROM "{schema}"."{table}"').fetchall() for (table,) in tables
        ]
    assert len(tables) >= 5
    return repr(rows)


async def test_the_database_password_never_shows(
    tmp_path: Path, env: dict[str, str], schema: str
) -> None:
    dsn = dsn_with(PASSWORD)  # trust authentication: any password gets in
    shown = dsn_with("***").replace(quote("***", safe=""), "***")
    doc = tmp_path / "doc.md"
    doc.write_text("# Doc\n\nSome text.\n")
    outputs: list[bytes] = []
    async with FakeAnthropicServer(api_key=KEY) as server:
        run_env = {
            **env,
            "ANTHROPIC_API_KEY": KEY,
            "ANTHROPIC_BASE_URL": server.url,
            "CARDMILL_PG_SCHEMA": schema,
        }
        done = await cardmill("analyze", str(doc), "--db", dsn, "-vv", env=run_env)
        assert done.returncode == 0, done.stderr.decode()
        assert b"DEBUG" in done.stderr  # debug logging really was on
        summary = done.stdout.decode()
        assert f"database   {shown}\n" in summary  # the summary row
        run_id = summary.split()[1]
        assert f"export: cardmill export {run_id} --format md --db '{shown}'" in summary
        assert f"into {shown}" in done.stderr.decode()  # the first line
        as_json = await cardmill("analyze", str(doc), "--db", dsn, "--json", env=run_env)
        assert json.loads(as_json.stdout)["database"] == shown
        shown_run = await cardmill("show", run_id, "--db", dsn, env=run_env)
        assert f"database   {shown}\n" in shown_run.stdout.decode()
        listed = await cardmill("runs", "--db", dsn, "--json", env=run_env)
        worker = await cardmill("worker", "--db", dsn, "-vv", env=run_env)
        assert worker.returncode == 0, worker.stderr.decode()
        assert f"on {shown}" in worker.stderr.decode()  # the banner
        outputs += [done.stdout, done.stderr, as_json.stdout, as_json.stderr]
        outputs += [shown_run.stdout, listed.stdout, worker.stdout, worker.stderr]
    assert_no_secret(*outputs, schema_text(schema))


async def test_the_resume_hint_after_ctrl_c_hides_the_password(
    tmp_path: Path, env: dict[str, str], schema: str
) -> None:
    dsn = dsn_with(PASSWORD)
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(8):
        (folder / f"doc{i}.md").write_text(f"# Doc {i}\n\nSentence {i} is here.\n")
    async with FakeAnthropicServer(latency=0.5, api_key=KEY) as server:
        run_env = {
            **env,
            "ANTHROPIC_API_KEY": KEY,
            "ANTHROPIC_BASE_URL": server.url,
            "CARDMILL_PG_SCHEMA": schema,
        }
        command = [*cardmill_command(), "analyze", str(folder), "--db", dsn, "-vv"]
        finished: list[Any] = []

        async def analyze(task_status: Any) -> None:
            finished.append(
                await trio.run_process(
                    command,
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                    env=run_env,
                    task_status=task_status,
                )
            )

        # Both requests in flight hang: the run cannot end before the Ctrl-C, however
        # slow the machine.
        server.inject("hang", "hang")
        async with trio.open_nursery() as nursery:
            process: Any = await nursery.start(analyze)
            with trio.fail_after(60):
                while len(server.requests) < 2:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            process.send_signal(signal.SIGINT)
    (done,) = finished
    assert done.returncode == 130
    stderr = done.stderr.decode()
    assert "Resume with: cardmill resume run-" in stderr
    assert "--db 'postgresql://" in stderr
    assert_no_secret(done.stdout, stderr, schema_text(schema))


def test_the_resume_hint_of_a_cancelled_run_hides_the_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from cardmill.cli._runner import report

    run = Run(id="run-1", name="run-1", status=RunStatus.CANCELLED, total_items=2)
    report(None, run, dsn_with(PASSWORD), as_json=False)
    out = capsys.readouterr().out
    assert "resume: cardmill resume run-1 --db 'postgresql://" in out
    assert_no_secret(out)


@pytest.mark.parametrize(
    ("dsn", "reason"),
    [
        (dsn_with(PASSWORD, user="nobody"), 'role "nobody" does not exist'),
        (dsn_with(PASSWORD).replace(":5432/", ":9/"), "Connection refused"),
        # Not percent-encoded: a bad escape, a raw @ and /, a space.
        ("postgresql://postgres:pw%zzTOPSECRET@127.0.0.1:5432/test", "does not parse"),
        (f"postgresql://postgres:{PASSWORD}@127.0.0.1:5432/test", "does not parse"),
        ("postgresql://postgres:pw@TOPSECRET@127.0.0.1:5432/test", "does not parse"),
        ("postgresql://postgres:pw/TOPSECRET@127.0.0.1:5432/test", "does not parse"),
    ],
    ids=["unknown-role", "unreachable", "bad-escape", "raw-everything", "raw-at", "raw-slash"],
)
async def test_connection_errors_hide_the_password(
    env: dict[str, str], dsn: str, reason: str
) -> None:
    if "Connection refused" not in reason:
        pg.require()
    done = await cardmill("resume", "run-1", "--db", dsn, "-vv", env=env)
    assert done.returncode == 2
    (line,) = done.stderr.decode().splitlines()
    assert line.startswith("cardmill: error: ")
    assert reason in line
    assert_no_secret(done.stdout, done.stderr)


KEY_VALUE = (
    "host=127.0.0.1 port=5432 dbname=test user=postgres "
    "password='pw@TOPSECRET:with/slash %and spaces'"
)


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        (dsn_with(PASSWORD), dsn_with("***").replace("%2A%2A%2A", "***")),
        (
            "postgres://u@db.example/cards?password=pw%40TOPSECRET&sslmode=require",
            "postgres://u@db.example/cards?password=***&sslmode=require",
        ),
        (KEY_VALUE, "user=postgres password=*** dbname=test host=127.0.0.1 port=5432"),
        ("postgresql://u:pw%zzTOPSECRET@h/db", "postgresql://***"),
        ("postgresql://u:pw@TOPSECRET@h/db", "postgresql://***"),
        ("postgresql://u:pw/TOPSECRET@h/db", "postgresql://***"),
        ("host=h password=pw@TOPSECRET w", "***"),
        ("cardmill.db", "cardmill.db"),
        (
            "postgresql://u@h/db?sslpassword=TOPSECRET&sslmode=require",
            "postgresql://u@h/db?sslpassword=***&sslmode=require",
        ),
        ("host=h sslpassword=TOPSECRET dbname=db", "dbname=db host=h sslpassword=***"),
        ("host=h password=TOPSECRET", "password=*** host=h"),
    ],
    ids=[
        "url",
        "query",
        "key-value",
        "bad-escape",
        "raw-at",
        "raw-slash",
        "unquoted",
        "path",
        "ssl-query",
        "ssl-key-value",
        "plain-key-value",
    ],
)
def test_redact_dsn_shows_everything_but_the_password(dsn: str, shown: str) -> None:
    from cardmill.storage import redact_dsn

    assert redact_dsn(dsn) == shown
    assert_no_secret(redact_dsn(dsn))


async def test_a_key_value_dsn_never_shows_its_password(schema: str) -> None:
    from cardmill import DatabaseError
    from cardmill.storage import PostgresStorage

    async with PostgresStorage.open(KEY_VALUE, schema=schema) as storage:
        assert "password=***" in repr(storage)
        assert_no_secret(repr(storage))
    with pytest.raises(DatabaseError) as caught:
        async with PostgresStorage.open(KEY_VALUE.replace("user=postgres", "user=nobody")):
            pass
    assert 'role "nobody" does not exist' in str(caught.value)
    assert_no_secret(str(caught.value))
    assert caught.value.__cause__ is None


async def test_a_key_value_dsn_on_the_command_line_is_postgres_and_hidden(
    tmp_path: Path, env: dict[str, str], schema: str
) -> None:
    dsn = KEY_VALUE + " sslpassword=ssl-TOPSECRET"
    doc = tmp_path / "doc.md"
    doc.write_text("# Doc\n\nSome text.\n")
    run_env = {**env, "CARDMILL_PG_SCHEMA": schema}
    run_env.pop("ANTHROPIC_API_KEY", None)
    done = await cardmill("analyze", str(doc), "--db", dsn, "-vv", env=run_env)
    assert done.returncode == 0, done.stderr.decode()
    summary = done.stdout.decode()
    assert " password=*** " in summary
    assert " sslpassword=***" in summary
    run_id = summary.split()[1]
    assert run_id in schema_text(schema)  # stored in PostgreSQL, not a SQLite file
    shown = await cardmill("show", run_id, "--db", dsn, env=run_env)
    assert shown.returncode == 0, shown.stderr.decode()
    assert_no_secret(done.stdout, done.stderr, shown.stdout, shown.stderr, schema_text(schema))


# -- credentials in a provider's base URL ----------------------------------------------

URL_USER, URL_PASSWORD, URL_KEY = "gateuser", "URLPASSWORD-TOPSECRET", "QUERYKEY-TOPSECRET"


async def _quoting_server(task_status: Any) -> None:
    """An OpenAI-compatible server that refuses every request, quoting what it got:
    the request line and every header, credentials included."""

    async def handle(stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some()
            if not chunk:
                return
            data += chunk
        quoted = data.split(b"\r\n\r\n")[0].decode("latin-1")
        body = json.dumps({"error": {"message": f"refused: {quoted}", "code": "bad_auth"}})
        await stream.send_all(
            b"HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
            + body.encode()
        )
        await stream.aclose()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


async def test_credentials_in_the_base_url_never_show(
    tmp_path: Path, env: dict[str, str], schema: str
) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("# Doc\n\nSome text.\n")
    async with trio.open_nursery() as nursery:
        port = await nursery.start(_quoting_server)
        url = f"http://{URL_USER}:{URL_PASSWORD}@127.0.0.1:{port}/v1?api_key={URL_KEY}"
        run_env = {
            **env,
            "OPENAI_API_KEY": KEY,
            "OPENAI_BASE_URL": url,
            "CARDMILL_PG_SCHEMA": schema,
        }
        done = await cardmill(
            "analyze", str(doc), "--provider", "openai", "--db", pg.DSN, "-vv", env=run_env
        )
        assert done.returncode == 1, done.stderr.decode()  # the 401 failed the upload
        shown = f"http://***@127.0.0.1:{port}/v1?api_key=***"
        assert f"OpenAI-compatible {shown}" in done.stderr.decode()
        run_id = done.stdout.decode().split()[1]
        show = await cardmill("show", run_id, "--db", pg.DSN, env=run_env)
        assert "refused: POST" in show.stdout.decode()  # the server's message was kept
        nursery.cancel_scope.cancel()
    stored = schema_text(schema)
    assert f"openai:{shown}:" in stored  # the shared rate limit's name
    for blob in (done.stdout, done.stderr, show.stdout, stored):
        text = blob.decode() if isinstance(blob, bytes) else blob
        for secret in (URL_USER, URL_PASSWORD, URL_KEY, KEY):
            assert secret not in text, (secret, text[-2000:])


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://u:p@h.example/v1", "https://***@h.example/v1"),
        ("https://token@h.example:8443/v1", "https://***@h.example:8443/v1"),
        (
            "https://h.example/v1?key=s&api_key=t&API-KEY=u&x=1",
            "https://h.example/v1?key=***&api_key=***&API-KEY=***&x=1",
        ),
        ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),
        ("http://[::1", "***"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
