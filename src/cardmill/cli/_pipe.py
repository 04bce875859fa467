"""Ending quietly when the reader of our output goes away (`cardmill export RUN | head`).

A Unix tool writing into a pipe whose reader has exited is ended by SIGPIPE: no
message, and a shell shows its status as 128 + 13 = 141. Python ignores SIGPIPE so that
a closed socket raises instead of killing the process, and cardmill talks to APIs and
databases over sockets, so the signal stays ignored: a write to the closed pipe raises
`BrokenPipeError`, and the command then exits with 141 itself, saying nothing.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Iterator
from typing import Final, NoReturn

__all__ = ["EXIT_CLOSED_PIPE", "exit_closed_pipe", "exits_quietly_on_closed_pipe", "is_closed_pipe"]

EXIT_CLOSED_PIPE: Final = 128 + 13  # what a shell shows for a process SIGPIPE ended


def is_closed_pipe(exc: BaseException) -> bool:
    """Whether ``exc`` says the reader of a pipe we write to has gone."""
    return isinstance(exc, OSError) and exc.errno == errno.EPIPE


def exit_closed_pipe() -> NoReturn:
    """Exit with `EXIT_CLOSED_PIPE`, saying nothing.

    What is still buffered for stdout or stderr would fail again when the interpreter
    flushes it on the way out, with a message and another status: both are pointed at
    the null device first.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stream.fileno())
            os.close(devnull)
    sys.exit(EXIT_CLOSED_PIPE)


@contextlib.contextmanager
def exits_quietly_on_closed_pipe() -> Iterator[None]:
    """Run a command; if its reader went away, exit as `exit_closed_pipe` does.

    Output still buffered is flushed here, inside, so that a reader that left before
    the end is noticed now and not by the interpreter at exit.
    """
    try:
        try:
            yield
        finally:
            sys.stdout.flush()
    except OSError as exc:
        if is_closed_pipe(exc):
            exit_closed_pipe()
        raise
