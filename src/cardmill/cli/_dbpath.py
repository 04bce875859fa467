"""Checking a ``--db`` SQLite path before anything is done with it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from ..errors import InputError

__all__ = ["check_sqlite_path"]

_PROBE_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def check_sqlite_path(db: str, *, create: bool) -> None:
    """Refuse a path SQLite cannot keep a database at, naming why (blocking: a few
    system calls).

    SQLite itself only says "unable to open database file", and only once it is
    asked. Whether a new file can be made is found by making it (permissions do not say
    it for root, nor for a file system that refuses files), and it is kept: SQLite opens
    an empty file as a new database. Removing it again would pull the file from under
    another process or thread that opened it meanwhile, as two runs started at once on
    a new database do.

    Args:
        db: the ``--db`` value, a file path.
        create: whether the command makes the database when it does not exist.

    Raises:
        InputError: the path is a directory, its directory does not exist or is a
            file, the database does not exist (and ``create`` is false), or it cannot
            be written or created there.
    """
    path = Path(db)
    if path.is_dir():
        raise InputError(f"{db}: is a directory, not a database file")
    if path.exists():
        if not os.access(path, os.R_OK | os.W_OK):
            raise InputError(f"{db}: permission denied (a database is read and written)")
        return
    if not create:
        raise InputError(f"{db}: no such database (run `cardmill analyze` first)")
    parent = Path(os.path.abspath(db)).parent
    if not parent.exists():
        raise InputError(f"{db}: directory {parent} does not exist")
    if not parent.is_dir():
        raise InputError(f"{db}: {parent} is not a directory")
    try:
        fd = os.open(path, _PROBE_FLAGS, 0o644)
    except FileExistsError:
        return  # made by another process since: SQLite opens it
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise InputError(f"{db}: cannot create a database in {parent} ({reason})") from None
    os.close(fd)
