"""Showing a provider's URL without the credentials it may carry."""

from __future__ import annotations

from typing import Final
from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = ["redact_url", "url_secrets"]

HIDDEN: Final = "***"
# Query parameters that gateways and proxies take credentials in.
_SECRET_PARAMS: Final = frozenset(
    {"key", "api_key", "api-key", "apikey", "access_token", "token", "secret", "password"}
)


def redact_url(url: str) -> str:
    """A URL as it may be shown, logged or stored: user and password
    (``https://user:secret@host``) and the value of any ``key=``, ``api_key=``,
    ``token=`` or similar query parameter replaced by ``***``.

    Example:
        >>> redact_url("https://user:s3cret@proxy.example/v1?api_key=abc&x=1")
        'https://***@proxy.example/v1?api_key=***&x=1'

    A URL that does not parse is shown as ``***``.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return HIDDEN
    netloc = parts.netloc
    if "@" in netloc:
        netloc = HIDDEN + "@" + netloc.rpartition("@")[2]
    fields = []
    for field in parts.query.split("&") if parts.query else []:
        name, equals, _ = field.partition("=")
        if equals and unquote(name).strip().lower() in _SECRET_PARAMS:
            field = f"{name}={HIDDEN}"
        fields.append(field)
    return urlunsplit((parts.scheme, netloc, parts.path, "&".join(fields), parts.fragment))


def url_secrets(url: str | None) -> tuple[str, ...]:
    """The credentials a URL carries (user, password, secret query values), as written
    and decoded, for scrubbing from messages that might quote them."""
    if not url:
        return ()
    try:
        parts = urlsplit(url)
    except ValueError:
        return (url,)
    found: list[str] = []
    if "@" in parts.netloc:
        userinfo = parts.netloc.rpartition("@")[0]
        found += [userinfo, *userinfo.split(":", 1)]
    for field in parts.query.split("&") if parts.query else []:
        name, equals, value = field.partition("=")
        if equals and value and unquote(name).strip().lower() in _SECRET_PARAMS:
            found.append(value)
    return tuple(dict.fromkeys(f for s in found for f in (s, unquote(s)) if f))
