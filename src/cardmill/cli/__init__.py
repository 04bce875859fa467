"""The `cardmill` command line: analyse folders of documents (`analyze`), resume an
interrupted run (`resume`), list and show runs (`runs`, `show`), export their cards
(`export`), and run workers that share runs through PostgreSQL (`worker`).

Everything here is built on the library (`cardmill.Engine`, the storages and the
providers); only the command line uses it.
"""

from __future__ import annotations

from ._commands import main as main

__all__ = ["main"]
