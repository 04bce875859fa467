"""What every answer of the viewer carries, and what it refuses before any route runs.

The viewer shows text from documents and models (untrusted) to a browser on the same
machine as the data. Three rules, for every path, static files and errors included:

* Only GET and HEAD: the viewer changes nothing, so nothing else is accepted (405).
* Unless remote access was asked for, only requests that name a loopback host
  (``localhost``, ``127.0.0.1``, ``[::1]``) are answered (400): a page of another site
  whose name an attacker re-points at 127.0.0.1 (DNS rebinding) reads nothing.
* Headers that keep a page inert: a Content-Security-Policy without inline script or
  style, that no other site may frame; no MIME sniffing; no referrer sent elsewhere.
"""

from __future__ import annotations

import ipaddress
from typing import Final, final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["SECURITY_HEADERS", "Guard", "is_loopback"]

CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS: Final[tuple[tuple[bytes, bytes], ...]] = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
)
_METHODS: Final = frozenset({"GET", "HEAD"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 with or without brackets) is this
    machine's loopback: ``localhost``, ``127.0.0.0/8`` or ``::1``."""
    name = host.strip().lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name.removeprefix("[").removesuffix("]")).is_loopback
    except ValueError:
        return False


def _host_name(header: str) -> str:
    """The host of a Host header, without its port."""
    if header.startswith("["):
        return header.partition("]")[0] + "]"
    return header.rpartition(":")[0] if header.count(":") == 1 else header


@final
class Guard:
    """ASGI middleware applying the rules above around ``app``."""

    def __init__(self, app: ASGIApp, *, allow_remote: bool) -> None:
        self._app = app
        self._allow_remote = allow_remote

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        if scope["method"] not in _METHODS:
            await _refuse(send, 405, "only GET and HEAD: the viewer is read-only", allow=True)
            return
        if not self._allow_remote:
            host = dict(scope.get("headers", ())).get(b"host", b"").decode("latin-1")
            if not is_loopback(_host_name(host)):
                await _refuse(send, 400, "this viewer answers only to localhost")
                return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", ())}
                extra = [h for h in SECURITY_HEADERS if h[0] not in names]
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self._app(scope, receive, send_with_headers)


async def _refuse(send: Send, status: int, text: str, *, allow: bool = False) -> None:
    body = (text + "\n").encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        *SECURITY_HEADERS,
    ]
    if allow:
        headers.append((b"allow", b"GET, HEAD"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
