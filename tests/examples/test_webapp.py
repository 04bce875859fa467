"""examples/webapp: the Starlette app over `cardmill.aio`, in process and with workers.

The asyncio tests are plain functions that call `asyncio.run` (the suite runs trio); the
worker tests run under trio, as the CLI's do. Nothing waits on a clock for correctness:
each step polls the run's progress until it shows what it must (within a bound).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio

import cardmill
import cardmill.aio
from cardmill.storage import PostgresStorage, Storage
from cardmill.testing import FakeAnthropicServer, ScriptedProvider, Step, check_invariants

from .. import pg
from ..cli.conftest import cardmill_command

if TYPE_CHECKING:  # mypy finds the module from the checkout's root; pytest, by sys.path
    from examples.webapp import app as webapp
else:
    import app as webapp

Json = Any
KEY = "fake-key-webapp"
BOUND = 60.0  # seconds any wait may take before the test fails


def payload(count: int, *, prefix: str = "doc") -> dict[str, Json]:
    docs = [
        {
            "name": f"{prefix}-{i:02}.md",
            "data": base64.b64encode(
                f"# Doc {i}\n\nSentence {i}. Another one.\n".encode()
            ).decode(),
        }
        for i in range(count)
    ]
    return {"name": f"{count} documents", "documents": docs}


@asynccontextmanager
async def client_of(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``app`` over ASGI, inside the app's lifespan."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def post_run(client: httpx.AsyncClient, body: dict[str, Json]) -> str:
    response = await client.post("/runs", json=body)
    assert response.status_code == 201, response.text
    run_id: str = response.json()["run_id"]
    return run_id


async def wait_for(client: httpx.AsyncClient, run_id: str, done: Callable[[Json], bool]) -> Json:
    """The run's progress JSON, polled until ``done(it)``."""
    async with asyncio.timeout(BOUND):
        while True:
            now = (await client.get(f"/runs/{run_id}")).json()
            if done(now):
                return now
            await asyncio.sleep(0.02)


def events(stream: str) -> list[Json]:
    """The ``data:`` JSON of each server-sent event."""
    return [
        json.loads(line.removeprefix("data: "))
        for block in stream.split("\n\n")
        for line in block.splitlines()
        if line.startswith("data: ")
    ]


def counted(now: Json) -> tuple[int, int, int, int, int]:
    return now["total"], now["completed"], now["failed"], now["pending"], now["cards"]


def checked(db: str, run_id: str, schema: str | None = None) -> cardmill.Run:
    """The run, after `check_invariants`, read in a trio run of its own."""

    async def read() -> cardmill.Run:
        opened: AbstractAsyncContextManager[Storage] = (
            cardmill.SQLiteStorage.open(db)
            if schema is None
            else PostgresStorage.open(db, schema=schema)
        )
        async with opened as storage:
            await check_invariants(storage, run_id)
            return await storage.get_run(run_id)

    return trio.run(read)


def clean_env() -> dict[str, str]:
    """The environment less any provider key or cardmill setting: nothing reaches an API."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ANTHROPIC_", "OPENAI_", "CARDMILL_"))
    }


@pytest.fixture
def no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("ANTHROPIC_", "OPENAI_", "CARDMILL_")):
            monkeypatch.delenv(name)


# -- in process ---------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def database(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, str | None]]:
    """A database URL or path, and its PostgreSQL schema (None for SQLite)."""
    if request.param == "sqlite":
        yield str(tmp_path / "cards.db"), None
        return
    pg.require()
    schema = pg.new_schema()
    monkeypatch.setenv("CARDMILL_PG_SCHEMA", schema)  # as `--db postgresql://...` reads it
    try:
        yield pg.DSN, schema
    finally:
        pg.drop_schema(schema)


def test_a_run_streams_pending_loading_completed_and_ends_exact(
    database: tuple[str, str | None],
) -> None:
    db, schema = database
    provider = ScriptedProvider(default=Step(latency=0.05, cards=2))
    app = webapp.create_app(db, provider=provider, concurrency=2, poll=0.01)

    async def scenario() -> tuple[str, list[Json], Json, list[Json], list[Json]]:
        async with client_of(app) as client:
            run_id = await post_run(client, payload(5))
            stream = (await client.get(f"/runs/{run_id}/events")).text
            final = (await client.get(f"/runs/{run_id}")).json()
            cards = (await client.get(f"/runs/{run_id}/cards")).json()
            runs = (await client.get("/runs")).json()
        return run_id, events(stream), final, cards, runs

    run_id, seen, final, cards, runs = asyncio.run(scenario())
    statuses = {upload["status"] for event in seen for upload in event["uploads"]}
    assert {"PENDING", "LOADING", "COMPLETED"} <= statuses, statuses
    assert seen[-1]["finished"]
    assert seen[-1]["status"] == "SUCCEEDED"
    assert seen[-1] == final
    assert counted(final) == (5, 5, 0, 0, 10)
    assert len(cards) == 10 == final["cards"]
    assert Counter(card["upload"] for card in cards) == {f"doc-{i:02}.md": 2 for i in range(5)}
    assert [run["id"] for run in runs] == [run_id]
    assert provider.peak_in_flight <= 2
    assert sorted(name for name, _ in provider.calls) == [f"doc-{i:02}.md" for i in range(5)]
    run = checked(db, run_id, schema)
    assert (run.status, run.total_cards) == (cardmill.RunStatus.SUCCEEDED, 10)


def test_a_client_leaving_the_event_stream_stops_it_and_the_run_goes_on(tmp_path: Path) -> None:
    db = str(tmp_path / "cards.db")
    app = webapp.create_app(db, provider=ScriptedProvider(default=Step(latency=0.1)), poll=0.01)

    async def scenario() -> Json:
        async with client_of(app) as client:
            run_id = await post_run(client, payload(4))
            first = asyncio.Event()
            sent: list[bytes] = []

            async def receive() -> dict[str, Any]:
                await first.wait()
                return {"type": "http.disconnect"}

            async def send(message: MutableMapping[str, Any]) -> None:
                if message["type"] == "http.response.body" and message.get("body"):
                    sent.append(message["body"])
                    first.set()

            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "GET",
                "scheme": "http",
                "path": f"/runs/{run_id}/events",
                "raw_path": f"/runs/{run_id}/events".encode(),
                "query_string": b"",
                "headers": [(b"host", b"test")],
                "server": ("test", 80),
                "client": ("127.0.0.1", 1234),
                "root_path": "",
            }
            async with asyncio.timeout(BOUND):
                await app(scope, receive, send)  # returns once the client has left
            assert len(events(b"".join(sent).decode())) >= 1
            return await wait_for(client, run_id, lambda now: now["finished"])

    final = asyncio.run(scenario())
    assert counted(final) == (4, 4, 0, 0, 4)


# -- refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "said"),
    [
        (b"{not json", 400, "body: not JSON"),
        (b"[1, 2]", 400, "body: not a JSON object"),
        (b'{"documents": []}', 400, "documents: give a list of at least one document"),
        (b'{"name": "x"}', 400, "documents: give a list of at least one document"),
        (b'{"documents": [{"name": "a.md", "data": "@@@"}]}', 400, "(a.md).data: not valid"),
        (b'{"documents": [{"name": "", "data": ""}]}', 400, "documents[0].name: not a non-empty"),
        (b'{"documents": [{"name": "a.md"}]}', 400, "documents[0] (a.md).data: not a base64"),
        (b'{"name": 3, "documents": [{"name": "a.md", "data": ""}]}', 400, "name: not a string"),
        (b'{"documents": ["' + b"A" * 2000 + b'"]}', 413, "body: larger than the 1,000 bytes"),
    ],
)
def test_bad_uploads_are_refused_in_one_line(
    tmp_path: Path, body: bytes, status: int, said: str
) -> None:
    db = tmp_path / "cards.db"
    app = webapp.create_app(str(db), provider=ScriptedProvider(), max_body=1000)

    async def scenario() -> tuple[httpx.Response, Json]:
        async with client_of(app) as client:
            headers = {"content-type": "application/json"}
            refused = await client.post("/runs", content=body, headers=headers)
            return refused, (await client.get("/runs")).json()

    refused, runs = asyncio.run(scenario())
    assert refused.status_code == status, refused.text
    error = refused.json()["error"]
    assert said in error, error
    assert "\n" not in error
    assert runs == []


def test_an_oversized_body_is_refused_as_it_streams(tmp_path: Path) -> None:
    app = webapp.create_app(str(tmp_path / "cards.db"), max_body=1000)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: read as it comes
        for _ in range(100):
            yield b"x" * 100

    async def scenario() -> httpx.Response:
        async with client_of(app) as client:
            return await client.post("/runs", content=chunks())

    refused = asyncio.run(scenario())
    assert refused.status_code == 413
    assert refused.json() == {"error": "body: larger than the 1,000 bytes an upload may be"}


def test_unknown_runs_are_404_and_pages_are_served_inert(tmp_path: Path) -> None:
    app = webapp.create_app(str(tmp_path / "cards.db"), provider=ScriptedProvider())
    hostile = "<img src=x onerror=alert(1)>.md"

    async def scenario() -> dict[str, httpx.Response]:
        async with client_of(app) as client:
            got = {p: await client.get(p) for p in ("/", "/webapp.js", "/webapp.css")}
            for tail in ("", "/events", "/cards", "/view"):
                got[f"unknown{tail}"] = await client.get(f"/runs/run-nope{tail}")
            body = {"documents": [{"name": hostile, "data": base64.b64encode(b"hi").decode()}]}
            run_id = await post_run(client, body)
            await wait_for(client, run_id, lambda now: now["finished"])
            got["view"] = await client.get(f"/runs/{run_id}/view")
            got["run"] = await client.get(f"/runs/{run_id}")
        return got

    got = asyncio.run(scenario())
    for tail in ("", "/events", "/cards", "/view"):
        assert got[f"unknown{tail}"].status_code == 404
        assert "run-nope" in got[f"unknown{tail}"].json()["error"]
    assert got["/"].status_code == got["view"].status_code == 200
    assert "script-src 'self'" in got["view"].headers["content-security-policy"]
    assert got["/webapp.js"].headers["content-type"].startswith("text/javascript")
    assert "innerHTML" not in got["/webapp.js"].text
    assert hostile not in got["view"].text  # pages hold no data: their script adds it
    assert got["run"].json()["uploads"][0]["name"] == hostile


# -- a restart mid-run ---------------------------------------------------------------------


def test_a_server_restarted_mid_run_resumes_it_and_sends_nothing_twice(tmp_path: Path) -> None:
    db = str(tmp_path / "cards.db")
    slow = ScriptedProvider(default=Step(latency=0.3, cards=2))
    first = webapp.create_app(db, provider=slow, concurrency=2)

    async def until_one_completed() -> str:
        async with client_of(first) as client:
            run_id = await post_run(client, payload(6))
            await wait_for(client, run_id, lambda now: now["completed"] >= 1)
        return run_id  # the lifespan is over: the run's task was cancelled

    run_id = asyncio.run(until_one_completed())
    stopped = asyncio.run(cardmill.aio.progress(run_id, db=db))
    assert stopped.run.status is cardmill.RunStatus.CANCELLED
    statuses = Counter(u.status for u in stopped.uploads)
    assert statuses[cardmill.UploadStatus.LOADING] == 0
    done_before = {u.name for u in stopped.uploads if u.status is cardmill.UploadStatus.COMPLETED}
    assert done_before
    assert len(done_before) < 6

    fresh = ScriptedProvider(default=Step(latency=0.02, cards=2))
    second = webapp.create_app(db, provider=fresh, concurrency=2)

    async def resumed() -> Json:
        async with client_of(second) as client:  # its startup resumes the run
            return await wait_for(client, run_id, lambda now: now["finished"])

    final = asyncio.run(resumed())
    asked_again = {name for name, _ in fresh.calls}
    assert not asked_again & done_before, asked_again & done_before
    assert asked_again | done_before == {f"doc-{i:02}.md" for i in range(6)}
    assert final["status"] == "SUCCEEDED"
    assert counted(final) == (6, 6, 0, 0, 12)
    assert checked(db, run_id).total_cards == 12


# -- enqueue mode and `cardmill worker` ----------------------------------------------------


async def enqueue(
    db: str, body: dict[str, Json], provider: str | None = None
) -> tuple[str, cardmill.aio.RunProgress]:
    """A run made through the app in enqueue mode, and its progress once the app stopped."""
    app = webapp.create_app(db, mode="enqueue", provider=provider)
    async with client_of(app) as client:
        run_id = await post_run(client, body)
    return run_id, await cardmill.aio.progress(run_id, db=db)


def test_enqueue_mode_stores_runs_and_a_worker_analyses_them(tmp_path: Path, no_keys: None) -> None:
    db = str(tmp_path / "cards.db")
    run_id, stored = asyncio.run(enqueue(db, payload(6)))
    assert (stored.run.status, stored.run.provider) == (cardmill.RunStatus.PENDING, "extractive")
    assert {u.status for u in stored.uploads} == {cardmill.UploadStatus.PENDING}  # none ran here
    done = subprocess.run(
        [*cardmill_command(), "worker", "--run", run_id, "--db", db, "--quiet"],
        env=clean_env(),
        capture_output=True,
        timeout=BOUND,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    run = checked(db, run_id)
    assert run.status is cardmill.RunStatus.SUCCEEDED
    assert (run.total_items, run.completed_items, run.failed_items) == (6, 6, 0)
    assert run.total_cards > 0


async def test_a_worker_killed_mid_run_leaves_its_uploads_to_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = str(tmp_path / "cards.db")
    docs = 6
    async with FakeAnthropicServer(latency=0.5, api_key=KEY, cards=3) as server:
        # The app makes an Anthropic provider only to name it in the run; it sends nothing.
        monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        run_id, _ = await trio.to_thread.run_sync(
            lambda: asyncio.run(enqueue(db, payload(docs), provider="anthropic"))
        )
        env = {**clean_env(), "ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": server.url}
        worker = [*cardmill_command(), "worker", "--db", db, "--lease", "2", "--quiet"]
        start = partial(trio.run_process, env=env, check=False, stdout=subprocess.DEVNULL)
        async with cardmill.SQLiteStorage.open(db) as storage:
            async with trio.open_nursery() as nursery:
                victim = await nursery.start(start, [*worker, "--follow", "--poll", "0.2"])
                with trio.fail_after(BOUND):
                    completed = partial(
                        storage.list_uploads, run_id, cardmill.UploadStatus.COMPLETED
                    )
                    while not await completed():  # noqa: ASYNC110 (another process writes)
                        await trio.sleep(0.05)
                victim.send_signal(signal.SIGKILL)
            assert victim.returncode == -signal.SIGKILL
            with trio.fail_after(BOUND):
                survivor = await trio.run_process(
                    [*worker, "--run", run_id], env=env, check=False, capture_stderr=True
                )
            assert survivor.returncode == 0, survivor.stderr.decode()
            await check_invariants(storage, run_id)
            run = await storage.get_run(run_id)
            uploads = await storage.list_uploads(run_id)
            cards = await storage.list_cards(run_id)
    assert run.status is cardmill.RunStatus.SUCCEEDED
    assert (run.total_items, run.completed_items, run.failed_items) == (docs, docs, 0)
    assert run.total_cards == len(cards) == 3 * docs
    # Each document's cards are one answer's: three, ordinals 0-2, none kept twice.
    per_upload = {u.id: sorted(c.ordinal for c in cards if c.upload_id == u.id) for u in uploads}
    assert all(len(ordinals) == 3 == len(set(ordinals)) for ordinals in per_upload.values())
    assert all(u.card_count == 3 for u in uploads)


# -- the command ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def serving(server: subprocess.Popen[bytes], port: int) -> str:
    """The URL of the app ``server`` runs on ``port``, once it answers."""
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + BOUND
    while True:
        try:
            httpx.get(url + "/runs", timeout=5).raise_for_status()
            return url
        except httpx.TransportError:
            assert time.monotonic() < deadline
            assert server.poll() is None
            time.sleep(0.05)


def test_the_command_serves_and_sigterm_stops_it(tmp_path: Path) -> None:
    db, port = str(tmp_path / "cards.db"), free_port()
    command = [sys.executable, str(webapp.HERE / "app.py"), "--db", db, "--port", str(port)]
    server = subprocess.Popen(command, env=clean_env(), stderr=subprocess.PIPE)
    try:
        url = serving(server, port)
        made = httpx.post(url + "/runs", json=payload(2), timeout=BOUND)
        assert made.status_code == 201, made.text
        run_id = made.json()["run_id"]
        with httpx.stream("GET", f"{url}/runs/{run_id}/events", timeout=BOUND) as stream:
            last = [json.loads(x[6:]) for x in stream.iter_lines() if x.startswith("data: ")][-1]
        assert last["status"] == "SUCCEEDED"
        assert last["provider"] == "extractive"
    finally:
        server.send_signal(signal.SIGTERM)
        _, said = server.communicate(timeout=BOUND)
    assert server.returncode == 0, said.decode()
    assert b"Traceback" not in said


def test_sigterm_ends_an_open_event_stream_cleanly(tmp_path: Path) -> None:
    """A client follows a run nobody analyses (enqueue-only, no worker) when the server is
    told to stop: its stream ends as a stream ends, and the server stops without a word
    of error."""
    db, port = str(tmp_path / "cards.db"), free_port()
    command = [sys.executable, str(webapp.HERE / "app.py"), "--db", db, "--port", str(port)]
    env = {**clean_env(), "CARDMILL_WEBAPP_MODE": "enqueue"}
    server = subprocess.Popen(command, env=env, stderr=subprocess.PIPE)
    seen: list[dict[str, Any]] = []
    try:
        url = serving(server, port)
        run_id = httpx.post(url + "/runs", json=payload(1), timeout=BOUND).json()["run_id"]
        with httpx.stream("GET", f"{url}/runs/{run_id}/events", timeout=BOUND) as stream:
            for line in stream.iter_lines():  # ends without an error: the stream was closed
                if line.startswith("data: "):
                    seen.append(json.loads(line[6:]))
                    server.send_signal(signal.SIGTERM)
        assert [s["status"] for s in seen] == ["PENDING"]
    finally:
        if not seen:  # stopped once: a second SIGTERM while it stops would kill it
            server.send_signal(signal.SIGTERM)
        _, said = server.communicate(timeout=BOUND)
    assert server.returncode == 0, said.decode()
    assert b"Traceback" not in said
    assert b"Exception in callback" not in said
    assert said.count(b"Running on") == 1, said.decode()


# -- the page in a browser -------------------------------------------------------------------


class Served:
    """``app`` served by hypercorn on a free loopback port, in a thread of its own."""

    def __init__(self, app: Any) -> None:
        self.app = app
        listening = socket.socket()
        listening.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{listening.getsockname()[1]}/"
        self._fd = listening.detach()  # hypercorn's from here on: it closes it
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._serve(),))

    async def _serve(self) -> None:
        from hypercorn.asyncio import serve
        from hypercorn.config import Config

        config = Config()
        config.bind = [f"fd://{self._fd}"]
        config.accesslog = None
        config.graceful_timeout = 1.0
        await serve(self.app, config, shutdown_trigger=self._stop.wait)

    def __enter__(self) -> str:
        self._thread.start()
        deadline = time.monotonic() + BOUND
        while True:
            try:
                httpx.get(self.url + "runs", timeout=5).raise_for_status()
                return self.url
            except httpx.TransportError:
                assert time.monotonic() < deadline
                assert self._thread.is_alive()
                time.sleep(0.05)

    def __exit__(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(BOUND)
        self._loop.close()


@pytest.mark.browser
def test_a_file_picked_on_the_page_becomes_cards_on_the_run_page(tmp_path: Path) -> None:
    from ..web.test_browser import CHROMIUM, in_browser

    if not Path(CHROMIUM).exists():
        pytest.skip(f"no {CHROMIUM} (apt-get install chromium)")
    hostile = "<img src=x onerror=window.__pwned=1>.md"
    provider = ScriptedProvider(default=Step(latency=0.2, cards=2))
    app = webapp.create_app(str(tmp_path / "cards.db"), provider=provider, poll=0.05)

    def script(page: Any) -> dict[str, Any]:
        from playwright.sync_api import expect

        page.goto(url)
        files = [
            {"name": name, "mimeType": "text/markdown", "buffer": f"# {i}\n\nText {i}.".encode()}
            for i, name in enumerate(["notes.md", hostile])
        ]
        page.set_input_files("#files", files)
        page.click("#upload")
        page.wait_for_url("**/view")
        expect(page.locator("#status")).to_have_text("SUCCEEDED")
        expect(page.locator("tr[data-status=COMPLETED]")).to_have_count(2)
        expect(page.locator(".card-title")).to_have_count(4)
        page.goto(url)
        expect(page.locator("#runs tr")).to_have_count(1)
        return {
            "uploads": page.locator("#runs td").first.text_content(),
            "pwned": page.evaluate("window.__pwned !== undefined"),
        }

    with Served(app) as url:
        seen = in_browser(script)
    assert seen["uploads"] == f"notes.md {hostile}"
    assert not seen["pwned"]
