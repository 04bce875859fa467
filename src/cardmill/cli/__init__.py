"""The ``cardmill`` command line: analyse folders of documents, watch, stop, resume,
export, and run workers that share runs through PostgreSQL.

Everything here is built on the library (`cardmill.Engine`, the storages and the
providers); only the command line uses it.
"""

from __future__ import annotations

from ._commands import main as main

__all__ = ["main"]
