"""``RUN`` on the command line: a run's id, or ``latest`` for the newest run."""

from __future__ import annotations

from typing import Final

from ..errors import InputError
from ..model import Run
from ..storage import Storage

__all__ = ["LATEST", "named_run", "newest_first"]

#: The name that stands for the newest run of the database, wherever a run id is taken.
LATEST: Final = "latest"


def newest_first(runs: list[Run]) -> list[Run]:
    """Runs as the storage lists them (oldest first), newest first, as `cardmill runs`
    and the viewer show them."""
    return list(reversed(runs))


async def named_run(storage: Storage, run: str) -> str:
    """The id of the run ``run`` names: itself, or for ``latest`` the newest run's.

    Raises:
        InputError: ``latest`` in a database without runs.
    """
    if run != LATEST:
        return run
    runs = await storage.list_runs()
    if not runs:
        raise InputError("RUN latest: there are no runs in this database yet")
    return newest_first(runs)[0].id
