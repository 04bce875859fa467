"""cardmill's jobs for synchronous callers: scripts, Django views, Celery tasks.

Each call runs its own trio run and returns when it ends. In the main thread a SIGTERM
stops it as Ctrl-C does (uploads in flight back to PENDING, the run CANCELLED and
resumable) and raises `cardmill.errors.Terminated`; Ctrl-C raises `KeyboardInterrupt`.
"""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from .engine import RunSummary
from .errors import WrongEventLoop

if TYPE_CHECKING:
    from ._jobs import ProviderChoice, Source
    from ._recipe import Recipe
    from .engine import Limits, Observer

__all__ = ["analyze_sync", "resume_sync"]

T = TypeVar("T")


def _run(what: str, fn: Callable[..., Coroutine[Any, Any, T]], kwargs: dict[str, Any]) -> T:
    from ._jobs import refuse_while_a_child_starts
    from .cli._signals import terminable
    from .engine import root_error

    refuse_while_a_child_starts()
    _refuse_inside_a_loop(what)
    job = functools.partial(fn, **kwargs)
    try:
        if threading.current_thread() is threading.main_thread():
            return trio.run(terminable, job)
        return trio.run(job)  # signals reach only the main thread
    except BaseException as exc:
        root = root_error(exc)
        if root is exc:
            raise
        raise root from None


def _refuse_inside_a_loop(name: str) -> None:
    asyncio = sys.modules.get("asyncio")
    if asyncio is not None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise WrongEventLoop(
                f"cardmill.{name}_sync would block the running asyncio loop until the "
                f"run ends: await cardmill.aio.{name}(...) instead"
            )
    if trio.lowlevel.in_trio_run():
        raise WrongEventLoop(
            f"cardmill.{name}_sync would block the running trio loop until the run ends: "
            "use cardmill.Engine in trio code"
        )


def analyze_sync(
    sources: Iterable[Source],
    *,
    db: str = "cardmill.db",
    provider: ProviderChoice = None,
    model: str | None = None,
    recipe: Recipe | str | None = None,
    concurrency: int = 2,
    name: str | None = None,
    limits: Limits | None = None,
    max_cost: float | None = None,
    observer: Observer | None = None,
    reuse: bool = True,
) -> RunSummary:
    """Make a run of ``sources`` and analyse it, blocking until it ends: as
    `cardmill.aio.analyze`, for synchronous code.

    Raises:
        WrongEventLoop: called inside a running asyncio or trio loop.
        Terminated: SIGTERM received (in the main thread); the run is resumable.
        KeyboardInterrupt: Ctrl-C; the run is resumable.
    """
    from . import _jobs

    return _run(
        "analyze",
        _jobs.analyze,
        {
            "sources": sources,
            "db": db,
            "provider": provider,
            "model": model,
            "recipe": recipe,
            "concurrency": concurrency,
            "name": name,
            "limits": limits,
            "max_cost": max_cost,
            "observer": observer,
            "reuse": reuse,
        },
    )


def resume_sync(
    run_id: str,
    *,
    db: str = "cardmill.db",
    provider: ProviderChoice = None,
    model: str | None = None,
    concurrency: int = 2,
    limits: Limits | None = None,
    max_cost: float | None = None,
    observer: Observer | None = None,
    reuse: bool = True,
) -> RunSummary:
    """Go on with a run where it stopped, blocking until it ends: as
    `cardmill.aio.resume`, for synchronous code.

    Raises:
        WrongEventLoop: called inside a running asyncio or trio loop.
        Terminated: SIGTERM received (in the main thread); the run is resumable.
        KeyboardInterrupt: Ctrl-C; the run is resumable.
    """
    from . import _jobs

    return _run(
        "resume",
        _jobs.resume,
        {
            "run_id": run_id,
            "db": db,
            "provider": provider,
            "model": model,
            "concurrency": concurrency,
            "limits": limits,
            "max_cost": max_cost,
            "observer": observer,
            "reuse": reuse,
        },
    )
