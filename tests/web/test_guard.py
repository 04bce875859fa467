"""Headers on every answer, GET and HEAD only, and loopback host names only."""

from __future__ import annotations

import httpx
import pytest

from cardmill import MemoryStorage
from cardmill.web._guard import host_of, is_loopback

from .conftest import client_of, hostile_run

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


def assert_guarded(answer: httpx.Response) -> None:
    assert answer.headers["content-security-policy"] == CSP
    assert "unsafe-inline" not in answer.headers["content-security-policy"]
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] == "no-referrer"
    assert answer.headers["x-frame-options"] == "DENY"


async def test_every_answer_carries_the_security_headers(
    storage: MemoryStorage, client: httpx.AsyncClient
) -> None:
    run = await hostile_run(storage)
    for path in (
        "/",
        f"/runs/{run.id}",
        f"/runs/{run.id}/cards",
        f"/runs/{run.id}/progress.json",
        f"/runs/{run.id}/export.md",
        "/static/viewer.js",
        "/static/viewer.css",
        "/runs/nope",
        "/nowhere",
        f"/runs/{run.id}?page=0",
    ):
        assert_guarded(await client.get(path))
    assert_guarded(await client.post("/"))
    assert_guarded(await client.get("/", headers={"host": "evil.example"}))


async def test_static_files_are_served_with_their_types(client: httpx.AsyncClient) -> None:
    js = await client.get("/static/viewer.js")
    assert js.headers["content-type"] == "text/javascript; charset=utf-8"
    assert "fetch(" in js.text
    css = await client.get("/static/viewer.css")
    assert css.headers["content-type"] == "text/css; charset=utf-8"


async def test_pages_hold_no_inline_script_or_style(
    storage: MemoryStorage, client: httpx.AsyncClient
) -> None:
    run = await hostile_run(storage)
    for path in ("/", f"/runs/{run.id}", f"/runs/{run.id}/cards", "/runs/nope"):
        page = (await client.get(path)).text
        assert page.count("<script") == 1
        assert '<script src="/static/viewer.js" defer></script>' in page
        assert "<style" not in page
        assert " style=" not in page
        assert " on" + "click=" not in page


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"])
async def test_only_get_and_head_are_answered(
    storage: MemoryStorage, client: httpx.AsyncClient, method: str
) -> None:
    run = await hostile_run(storage)
    for path in ("/", f"/runs/{run.id}", f"/runs/{run.id}/export.csv", "/nowhere"):
        answer = await client.request(method, path)
        assert answer.status_code == 405, (method, path)
        assert answer.headers["allow"] == "GET, HEAD"
    assert (await storage.get_run(run.id)) == run
    head = await client.head(f"/runs/{run.id}")
    assert head.status_code == 200
    assert head.content == b""


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:8765",
        "127.0.0.1.evil.example",
        "localhost.evil.example",
        "10.0.0.1:8765",
        "[::2]:8765",
        "",
    ],
)
async def test_a_host_name_other_than_loopback_is_refused(
    client: httpx.AsyncClient, host: str
) -> None:
    answer = await client.get("/", headers={"host": host})
    assert answer.status_code == 400
    assert answer.text == "this viewer answers only to localhost\n"


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "localhost:8765",
        "localhost.:8765",
        "app.localhost:8765",
        "127.0.0.1:1",
        "127.0.0.1:65535",
        "127.1.2.3",
        "[::1]",
        "[::1]:8765",
        "LOCALHOST",
    ],
)
async def test_loopback_host_names_are_answered(client: httpx.AsyncClient, host: str) -> None:
    answer = await client.get("/", headers={"host": host})
    assert answer.status_code == 200


async def test_with_remote_access_any_host_name_is_answered(storage: MemoryStorage) -> None:
    async with client_of(storage, allow_remote=True) as client:
        answer = await client.get("/", headers={"host": "cards.internal:8765"})
    assert answer.status_code == 200
    assert_guarded(answer)


HOSTILE_HOSTS = [
    "localhost:80@evil.example",
    "localhost@evil.example",
    "user@localhost",
    "[::1]evil.example",
    "[::1]:8765evil",
    "[::1]:",
    "[::1",
    "::1",
    "[::1]]",
    "[localhost]",
    "[127.0.0.1]",
    "[::1%25lo]:8765",
    "localhost:abc",
    "localhost:",
    "localhost:0",
    "localhost:65536",
    "localhost:99999999",
    "localhost:-1",
    "localhost:+80",
    "localhost: 80",
    "localhost:80:80",
    "localhost:٨٠",
    "127.0.0.1:8765/",
    "127.0.0.1/evil.example",
    "127.0.0.1#evil.example",
    "127.0.0.1?x",
    "localhost\\evil.example",
    " localhost",
    "localhost ",
    "local host",
    "localhost..",
    ".localhost",
    "-localhost",
    "localhost-",
    "x" * 64 + ".localhost",
    "ｌocalhost",
    "localhost\x00",
    "localhost\t",
    "evil.example,localhost",
]


@pytest.mark.parametrize("host", HOSTILE_HOSTS)
async def test_a_host_header_that_is_not_strictly_host_and_port_is_refused(
    client: httpx.AsyncClient, host: str
) -> None:
    assert host_of(host) is None, host
    answer = await client.get("/", headers={b"host": host.encode("utf-8")})
    assert answer.status_code == 400
    assert answer.text == "this viewer answers only to localhost\n"
    assert_guarded(answer)


def test_host_of_takes_host_and_port_apart() -> None:
    assert host_of("localhost") == "localhost"
    assert host_of("localhost.") == "localhost."
    assert host_of("LocalHost:8765") == "LocalHost"
    assert host_of("127.0.0.1:1") == "127.0.0.1"
    assert host_of("127.0.0.1:65535") == "127.0.0.1"
    assert host_of("[::1]") == "[::1]"
    assert host_of("[::1]:8765") == "[::1]"
    assert host_of("[0:0:0:0:0:0:0:1]:80") == "[0:0:0:0:0:0:0:1]"
    assert host_of("cards.internal:8765") == "cards.internal"
    assert host_of("a-b.c") == "a-b.c"


def test_loopback_addresses() -> None:
    for host in ("localhost", "127.0.0.1", "127.255.0.9", "::1", "[::1]", "app.localhost"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "192.168.1.4", "example.com", "", "[::2]", "127.0.0.1.nip.io"):
        assert not is_loopback(host), host
