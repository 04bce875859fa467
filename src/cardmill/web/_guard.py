"""What every answer of the viewer carries, and what it refuses before any route runs.

The viewer shows text from documents and models (untrusted) to a browser on the same
machine as the data. Three rules, for every path, static files and errors included:

* Only GET and HEAD: the viewer changes nothing, so nothing else is accepted (405).
* Unless remote access was asked for, only requests whose Host header is a loopback
  host (``localhost``, ``127.0.0.1``, ``[::1]``) with an optional port are answered
  (400): a page of another site whose name an attacker re-points at 127.0.0.1 (DNS
  rebinding) reads nothing. The header is parsed strictly: a bracketed IPv6 address or
  a host name (IPv4 address) then, optionally, ``:`` and a port from 1 to 65535;
  anything else (``localhost:80@evil.example``, ``[::1]evil.example``,
  ``localhost:abc``) is refused.
* Headers that keep a page inert: a Content-Security-Policy without inline script or
  style, that no other site may frame; no MIME sniffing; no referrer sent elsewhere.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final, final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["SECURITY_HEADERS", "Guard", "host_of", "is_loopback"]

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
# A host name of letters, digits and hyphens, in dot-separated labels of 1 to 63
# characters (an IPv4 address is one too), with an optional final dot.
_HOST_NAME: Final = re.compile(
    r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.?",
    re.IGNORECASE | re.ASCII,
)
_PORT: Final = re.compile(r"[0-9]{1,5}", re.ASCII)


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


def host_of(header: str) -> str | None:
    """The host of a Host header without its port (an IPv6 address keeps its brackets),
    or None unless the header is exactly ``host[:port]``: a bracketed IPv6 address or a
    host name, and a port from 1 to 65535."""
    if len(header) > 255 + 6:
        return None
    if header.startswith("["):
        address, bracket, rest = header[1:].partition("]")
        if not bracket or not _is_ipv6(address):
            return None
        host = f"[{address}]"
    else:
        host = header.split(":", 1)[0]
        rest = header[len(host) :]
        if len(host) > 253 or not _HOST_NAME.fullmatch(host):
            return None
    if rest and not (rest.startswith(":") and _is_port(rest[1:])):
        return None
    return host


def _is_ipv6(address: str) -> bool:
    if not address.isascii() or "%" in address:
        return False
    try:
        ipaddress.IPv6Address(address)
    except ValueError:
        return False
    return True


def _is_port(text: str) -> bool:
    return _PORT.fullmatch(text) is not None and 1 <= int(text) <= 65535


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
            name = host_of(host)
            if name is None or not is_loopback(name):
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
