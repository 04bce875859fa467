"""`serve`: an address it cannot listen on is one InputError, before anything is served."""

from __future__ import annotations

import httpx
import pytest
import trio

from cardmill import InputError, MemoryStorage
from cardmill.web import serve


async def test_a_busy_port_is_an_input_error_naming_the_address(storage: MemoryStorage) -> None:
    with trio.socket.socket() as taken:
        await taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(InputError) as raised:
            await serve(storage, port=port)
    assert str(raised.value) == f"cannot listen on 127.0.0.1:{port} (Address already in use)"


async def test_an_unresolvable_host_is_an_input_error_naming_it(storage: MemoryStorage) -> None:
    with pytest.raises(InputError, match=r"^cannot listen on cards\.invalid:8765 \("):
        await serve(storage, host="cards.invalid", port=8765, allow_remote=True)


@pytest.mark.parametrize("host", ["..localhost", "a..localhost", "a" * 64 + ".localhost"])
async def test_a_host_name_the_resolver_cannot_encode_is_an_input_error(
    storage: MemoryStorage, host: str
) -> None:
    # An empty or overlong label fails IDNA encoding (UnicodeError), not the lookup.
    message = f"cannot listen on {host}:8765 (not a valid host name)"
    with pytest.raises(InputError) as raised:
        await serve(storage, host=host, port=8765)
    assert str(raised.value) == message
    with pytest.raises(InputError) as raised:
        await serve(storage, host="x" * 70, port=8765, allow_remote=True)
    assert "not a valid host name" in str(raised.value)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "[::1]"])
async def test_serve_listens_on_the_address_given(storage: MemoryStorage, host: str) -> None:
    try:
        with trio.socket.socket(trio.socket.AF_INET6) as probe:
            await probe.bind(("::1", 0))
    except OSError:
        if ":" in host:
            pytest.skip("no IPv6 loopback here")
    async with trio.open_nursery() as nursery:
        url: str = await nursery.start(
            lambda task_status: serve(storage, host=host, port=0, task_status=task_status)
        )
        async with httpx.AsyncClient() as client:
            answer = await client.get(url)
        nursery.cancel_scope.cancel()
    assert answer.status_code == 200
    assert "No runs yet" in answer.text
    expected = "http://[::1]:" if ":" in host else "http://127.0.0.1:"
    assert url.startswith(expected), url
