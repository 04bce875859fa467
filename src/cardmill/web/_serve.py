"""Serving the viewer with hypercorn's trio worker."""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable
from functools import partial

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve

from ..errors import InputError
from ..storage import Storage
from ._app import create_app
from ._guard import is_loopback

__all__ = ["check_address", "serve"]

DEFAULT_PORT = 8765


async def serve(
    storage: Storage,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    database: str = "",
    allow_remote: bool = False,
    poll_seconds: float = 1.0,
    metrics: bool = False,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the viewer of ``storage`` on ``host``:``port`` until cancelled.

    Start it in a nursery to learn its address: ``url = await nursery.start(serve,
    storage)`` gives ``http://127.0.0.1:8765/`` (with ``port=0``, the port the system
    chose).

    Args:
        storage: an open storage, read and never written; the caller closes it.
        host: the address to listen on; a loopback address unless ``allow_remote``.
        port: the TCP port, 0 for any free one.
        database: how the pages name the database (never with a password).
        allow_remote: listen on any address and answer any host name. The viewer has
            no login: whoever reaches it reads every run and card.
        poll_seconds: how often a run's page asks for fresh progress.
        metrics: also answer ``/metrics`` in Prometheus's text format (see
            [`create_app`][cardmill.web.create_app]).
        shutdown_trigger: when it returns, the server stops gracefully (answers in
            progress get a second) and `serve` returns; without it, cancel the caller.

    Raises:
        InputError: ``host`` is not a loopback address and ``allow_remote`` is false,
            ``port`` is out of range, or the address cannot be listened on (the port is
            taken, the name does not resolve), before anything is served.
    """
    check_address(host, port, allow_remote=allow_remote)
    app = create_app(
        storage,
        database=database,
        allow_remote=allow_remote,
        poll_seconds=poll_seconds,
        metrics=metrics,
    )
    config = Config()
    config.accesslog = None
    config.loglevel = "WARNING"
    config.graceful_timeout = 1.0
    logging.getLogger("hypercorn.error").setLevel(logging.WARNING)
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    # Resolving a name and binding block: a thread does them, and a refusal is one
    # InputError here rather than an error deep inside the server's nurseries.
    try:
        listening = await trio.to_thread.run_sync(_bound_socket, host, port)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise InputError(f"cannot listen on {shown}:{port} ({reason})") from None
    except UnicodeError:  # the resolver's IDNA encoding: an empty or overlong label
        raise InputError(f"cannot listen on {shown}:{port} (not a valid host name)") from None
    # The server takes the bound socket over by its descriptor.
    config.bind = [f"fd://{listening.detach()}"]
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(
            partial(
                hypercorn_serve,
                app,  # type: ignore[arg-type]  # Starlette's ASGI types are looser
                config,
                shutdown_trigger=shutdown_trigger,
            )
        )
        task_status.started(binds[0] + "/")


def _bound_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` (a name resolves to its first address of
    the family the host's form says: IPv6 when it holds ``:``, else IPv4); blocking."""
    address = host.removeprefix("[").removesuffix("]")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    found = socket.getaddrinfo(address, port, family, socket.SOCK_STREAM)
    family, kind, proto, _, sockaddr = found[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


def check_address(host: str, port: int, *, allow_remote: bool = False) -> None:
    """Refuse an address [`serve`][cardmill.web.serve] would refuse, before anything
    is opened.

    Raises:
        InputError: ``host`` is not a loopback address (``localhost``, ``127.0.0.0/8``,
            ``::1``) and ``allow_remote`` is false, or ``port`` is not from 0 to 65535.
    """
    if not (allow_remote or is_loopback(host)):
        raise InputError(
            f"--host {host}: other machines could read every card; "
            "pass --allow-remote to serve beyond this machine"
        )
    if not 0 <= port <= 65535:
        raise InputError(f"--port {port}: not a TCP port (0 to 65535)")
