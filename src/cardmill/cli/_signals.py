"""SIGTERM taken as Ctrl-C.

``docker stop``, systemd and Kubernetes end a process with SIGTERM. Left to Python's
default, it kills the command at once: a run stays RUNNING with its uploads LOADING until
their leases expire, and nothing is said. Here a SIGTERM cancels the command's work, so
the engine's shielded cleanup puts in-flight uploads back to PENDING and marks the run
CANCELLED, as for Ctrl-C; the command says how to resume and ends with status 143
(128 + SIGTERM).

Code that receives SIGINT itself (batch mode, the viewer) receives SIGTERM beside it
(`STOP_SIGNALS`), and raises `Terminated` for a SIGTERM, `KeyboardInterrupt` for a Ctrl-C.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, Final, TypeVar

import trio

from ..engine import root_error
from ..errors import Terminated

__all__ = [
    "EXIT_TERMINATED",
    "STOP_SIGNALS",
    "Terminated",
    "absorbing_late_sigterm",
    "interrupted",
    "stopped_by",
    "terminable",
    "terminated",
]

T = TypeVar("T")

#: The exit status of a command ended by SIGTERM, as a shell reports a process it killed.
EXIT_TERMINATED: Final = 128 + signal.SIGTERM
#: The signals that stop a command: Ctrl-C and SIGTERM.
STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)

_TERMINATED: trio.lowlevel.RunVar[bool] = trio.lowlevel.RunVar("cardmill_terminated", default=False)


def terminated() -> bool:
    """Whether this trio run received SIGTERM."""
    return _TERMINATED.get()


def interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` ends the command because the user or the system asked it to stop:
    a Ctrl-C (`KeyboardInterrupt`, anywhere in a group), or anything raised while the
    command unwinds after a SIGTERM (its cancellation above all)."""
    return isinstance(root_error(exc), KeyboardInterrupt) or terminated()


def stopped_by(signum: int) -> KeyboardInterrupt:
    """What to raise for a stop signal received by a signal receiver: `Terminated` for
    SIGTERM (and it is remembered), `KeyboardInterrupt` for Ctrl-C."""
    if signum == signal.SIGTERM:
        _TERMINATED.set(True)
        return Terminated()
    return KeyboardInterrupt()


@contextmanager
def absorbing_late_sigterm() -> Iterator[None]:
    """While in this block, a SIGTERM no receiver takes is let go.

    A signal receiver that closes with a signal still pending delivers it again under
    the handler it replaced: a second SIGTERM (or one just as the command ends) would
    then kill the process by signal after it had stopped as asked, instead of letting it
    end with its status. Open signal receivers inside this block.
    """
    try:
        previous = signal.signal(signal.SIGTERM, _let_go)
    except ValueError:  # not the main thread: the receivers cannot be opened either
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _let_go(signum: int, frame: object) -> None:
    """A SIGTERM once the command is already stopping: nothing more to do."""


async def terminable(fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
    """``await fn(*args)`` in this task, cancelled by a SIGTERM, which then raises
    `Terminated`.

    ``fn`` runs in the calling task (trio's main task, when this is what ``trio.run``
    runs), so a Ctrl-C still lands in ``fn`` itself, as ``KeyboardInterrupt``.
    """
    work = trio.CancelScope()
    with absorbing_late_sigterm(), trio.open_signal_receiver(signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                async for _ in signals:
                    _TERMINATED.set(True)
                    work.cancel()
                    return

            nursery.start_soon(watch)
            try:
                with work:
                    return await fn(*args)
            finally:
                nursery.cancel_scope.cancel()
    raise Terminated
