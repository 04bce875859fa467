"""A small trio HTTP server answering ``GET /metrics`` on loopback."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Final, NoReturn

import trio

from ._prometheus import PROMETHEUS_CONTENT_TYPE

__all__ = ["serve_metrics"]

log = logging.getLogger("cardmill.metrics")

_MAX_HEAD: Final = 8 * 1024
_READ_TIMEOUT: Final = 10.0


async def serve_metrics(
    render: Callable[[], str],
    *,
    port: int,
    host: str = "127.0.0.1",
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve ``render()`` at ``/metrics`` over HTTP until cancelled.

    Each request gets a fresh rendering and the connection is closed after the answer.
    Anything but ``GET``/``HEAD /metrics`` is answered 404 or 405; a request head over
    8 KiB, or not sent within 10 seconds, is dropped. Start it with ``nursery.start``: it
    reports the port it listens on (useful with ``port=0``).

    Args:
        render: the page, e.g. ``partial(prometheus_text, reader)``.
        port: the TCP port, 0 for any free one.
        host: the address to listen on; loopback by default, so only this machine
            can scrape it.

    Raises:
        OSError: the port cannot be listened on (in use, not allowed).
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(partial(_answer, render), listeners)
    raise AssertionError("serve_listeners returned")  # pragma: no cover


async def _answer(render: Callable[[], str], stream: trio.SocketStream) -> None:
    try:
        async with stream:
            head = await _read_head(stream)
            if head is None:
                return
            status, body, kind = _respond(head, render)
            method = head.split(b" ", 1)[0]
            await stream.send_all(_response(status, body, kind, head_only=method == b"HEAD"))
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass  # the client went away


async def _read_head(stream: trio.SocketStream) -> bytes | None:
    data = b""
    with trio.move_on_after(_READ_TIMEOUT):
        while b"\r\n\r\n" not in data and b"\n\n" not in data:
            chunk = await stream.receive_some(_MAX_HEAD)
            if not chunk:
                return None
            data += chunk
            if len(data) > _MAX_HEAD:
                return None
        return data
    return None


def _respond(head: bytes, render: Callable[[], str]) -> tuple[str, bytes, str]:
    line = head.split(b"\n", 1)[0].strip()
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        return "400 Bad Request", b"bad request\n", "text/plain; charset=utf-8"
    method, target = parts[0], parts[1].split(b"?", 1)[0]
    if target != b"/metrics":
        return "404 Not Found", b"not found: try /metrics\n", "text/plain; charset=utf-8"
    if method not in (b"GET", b"HEAD"):
        return "405 Method Not Allowed", b"GET /metrics\n", "text/plain; charset=utf-8"
    try:
        body = render().encode()
    except Exception:
        log.exception("could not render the metrics")
        return "500 Internal Server Error", b"could not render the metrics\n", "text/plain"
    return "200 OK", body, PROMETHEUS_CONTENT_TYPE


def _response(status: str, body: bytes, kind: str, *, head_only: bool) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    return head if head_only else head + body
