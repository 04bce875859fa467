"""cardmill for asyncio programs: FastAPI and Starlette apps, notebooks, asyncio scripts.

```python
import asyncio
import cardmill.aio

summary = asyncio.run(cardmill.aio.analyze(["notes/"], db="cards.db"))
print(summary.run.status, summary.run.total_cards)
```

The engine runs under trio, inside the running asyncio loop (trio's guest mode): the
loop goes on serving other tasks meanwhile, and files and the database are read and
written in threads. Each function opens the database ``db`` names (a SQLite path or a
PostgreSQL URL) and closes it before it returns.

Cancelling the awaiting task (``asyncio.timeout``, ``wait_for``, a request handler's
client leaving, Ctrl-C in ``asyncio.run``) stops a run as a trio cancel scope does: the
uploads in flight go back to PENDING and the run is CANCELLED, by the time the
cancellation reaches the caller; `resume` goes on with it. Errors are cardmill's own
(`cardmill.errors`).
"""

from __future__ import annotations

from .._jobs import DEFAULT_DB as DEFAULT_DB
from .._jobs import ProviderChoice as ProviderChoice
from .._jobs import RunProgress as RunProgress
from .._jobs import Source as Source
from ._api import analyze as analyze
from ._api import create_run as create_run
from ._api import follow as follow
from ._api import get_run as get_run
from ._api import list_cards as list_cards
from ._api import list_runs as list_runs
from ._api import list_uploads as list_uploads
from ._api import progress as progress
from ._api import resume as resume

__all__ = [
    "DEFAULT_DB",
    "ProviderChoice",
    "RunProgress",
    "Source",
    "analyze",
    "create_run",
    "follow",
    "get_run",
    "list_cards",
    "list_runs",
    "list_uploads",
    "progress",
    "resume",
]
