"""PostgreSQL connection strings as they may be shown: never with their password.

Every message, repr, log line and CLI output that names a database goes through
`redact_dsn`. It reads a connection string with libpq's own parser (through
``psycopg.conninfo``), not with patterns: a password may hold ``@``, ``:``, ``/``, ``%``
or spaces, and only the parser that will connect knows where it ends.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import unquote

from .._extras import require
from ..errors import InputError

__all__ = ["HIDDEN", "check_dsn", "redact_dsn", "redact_message", "require_driver"]

HIDDEN: Final = "***"
# Connection parameters that hold secrets: the password, and the one of the client's
# SSL key.
SECRETS: Final = ("password", "sslpassword")
_SCHEMES: Final = ("postgresql://", "postgres://")
_HOW: Final = (
    "percent-encode @ : / % ? # and spaces in its user name and password "
    "(%40 %3A %2F %25 %3F %23 %20)"
)


def require_driver() -> None:
    """Make sure the PostgreSQL driver is installed.

    Raises:
        MissingExtra: psycopg or psycopg-pool is not: they come with
            `pip install 'cardmill[postgres]'`.
    """
    require("psycopg", "psycopg_pool", extra="postgres", feature="PostgreSQL support")


def _parse(dsn: str) -> dict[str, str] | None:
    """libpq's reading of ``dsn``, or None when it does not parse, or parses into
    something other than it seems to say (a raw ``@`` or ``/`` in a URL's password makes
    libpq read part of the password as the host, port or database)."""
    require_driver()
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = {k: str(v) for k, v in conninfo_to_dict(dsn).items()}
    except psycopg.Error:
        return None
    if dsn.startswith(_SCHEMES) and _user_info_end(dsn) is None and "@" in _authority(dsn):
        return None
    return params


def _authority(dsn: str) -> str:
    """What follows the scheme, up to the query: where user info, hosts and database are."""
    return dsn.partition("://")[2].partition("?")[0]


def _user_info_end(dsn: str) -> int | None:
    """Where the user info of a URL ends (its ``@``), as libpq finds it: the first ``@``
    before any ``/``. None when the URL has none, or when another ``@`` follows in the
    host list, which no host name holds."""
    start = dsn.index("://") + 3
    rest = dsn[start:]
    at, slash = rest.find("@"), rest.find("/")
    if at < 0 or 0 <= slash < at:
        return None
    hosts = rest[at + 1 :]
    for stop in "/?":
        hosts = hosts.partition(stop)[0]
    if "@" in hosts:
        return None
    return start + at


def check_dsn(dsn: str) -> None:
    """Refuse a connection string that cannot be shown safely, before connecting.

    Raises:
        InputError: ``dsn`` does not parse, or a raw ``@`` or ``/`` in a URL's password
            would make libpq read part of the password as a host name (which its error
            messages would then show). The message does not show the string.
    """
    if _parse(dsn) is None:
        raise InputError(
            f"the PostgreSQL connection string does not parse (not shown: it may hold a "
            f"password); {_HOW}"
        )


def redact_dsn(dsn: str) -> str:
    """``dsn`` as it may be shown: the password (and ``sslpassword``) replaced by ``***``.

    * ``postgresql://user:pw@host:5432/db?sslmode=require`` keeps its form:
      ``postgresql://user:***@host:5432/db?sslmode=require`` (a ``password=`` or
      ``sslpassword=`` in the query is hidden too).
    * ``host=h dbname=db password=pw sslpassword=k`` is rebuilt by
      ``psycopg.conninfo.make_conninfo`` with ``password=*** sslpassword=***``.
    * A URL that does not parse, or does not say what it seems to, shows only its
      scheme: ``postgresql://***``; any other string that does not parse but has an
      ``=`` in it is all hidden.
    * Anything else is not a connection string (a SQLite file name): it is returned as
      it is.

    Raises:
        MissingExtra: the PostgreSQL driver, which parses the string, is not installed
            (`pip install 'cardmill[postgres]'`).

    Example:
        >>> redact_dsn("postgresql://app:s3cr%40t@db.example:5432/cards")
        'postgresql://app:***@db.example:5432/cards'
    """
    params = _parse(dsn)
    is_url = dsn.startswith(_SCHEMES)
    if params is None:
        if is_url:
            return dsn.partition("://")[0] + "://" + HIDDEN
        return HIDDEN if "=" in dsn else dsn
    secrets = [params[k] for k in SECRETS if params.get(k)]
    if is_url:
        shown = _redact_url(dsn)
    else:
        from psycopg.conninfo import make_conninfo

        hidden = {k: HIDDEN for k in SECRETS if params.get(k)}
        shown = make_conninfo(**{**params, **hidden}) if hidden else dsn
    # However the string was written, what libpq reads as a secret is not shown.
    if any(secret in shown.replace(HIDDEN, "") for secret in secrets):
        return (dsn.partition("://")[0] + "://" + HIDDEN) if is_url else HIDDEN
    return shown


def _redact_url(dsn: str) -> str:
    end = _user_info_end(dsn)
    if end is not None:
        start = dsn.index("://") + 3
        user, colon, _ = dsn[start:end].partition(":")
        dsn = dsn[:start] + user + (":" + HIDDEN if colon else "") + dsn[end:]
    base, question, query = dsn.partition("?")
    if not question:
        return dsn
    fields = []
    for field in query.split("&"):
        key, equals, _ = field.partition("=")
        fields.append(key + "=" + HIDDEN if equals and unquote(key) in SECRETS else field)
    return base + "?" + "&".join(fields)


def redact_message(text: str, dsn: str) -> str:
    """A message from the driver with ``dsn``'s password removed, should libpq quote it."""
    params = _parse(dsn) or {}
    for secret in {*(params.get(k, "") for k in SECRETS), _raw_password(dsn)}:
        if secret:
            text = text.replace(secret, HIDDEN)
    return text


def _raw_password(dsn: str) -> str:
    if not dsn.startswith(_SCHEMES):
        return ""
    end = _user_info_end(dsn)
    if end is None:
        return ""
    return dsn[dsn.index("://") + 3 : end].partition(":")[2]
