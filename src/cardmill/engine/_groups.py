"""The error that matters inside trio's exception groups.

Since trio 0.25 a nursery raises an ``ExceptionGroup`` of everything its tasks raised,
cancellations included. A caller (a command line, an embedding program) wants the one
error that explains what happened.
"""

from __future__ import annotations

import trio

__all__ = ["leaves", "root_error"]


def leaves(exc: BaseException) -> list[BaseException]:
    """Every exception in ``exc``, groups flattened, in order."""
    if not isinstance(exc, BaseExceptionGroup):
        return [exc]
    found: list[BaseException] = []
    for sub in exc.exceptions:
        found.extend(leaves(sub))
    return found


def root_error(exc: BaseException) -> BaseException:
    """The error that matters in ``exc``: a ``KeyboardInterrupt`` if there is one (the
    user asked to stop), else the first error that is not a cancellation, else ``exc``.

    Example:
        >>> root_error(ExceptionGroup("tasks", [ValueError("bad input")]))
        ValueError('bad input')
    """
    found = leaves(exc)
    for leaf in found:
        if isinstance(leaf, KeyboardInterrupt):
            return leaf
    real = [leaf for leaf in found if not isinstance(leaf, trio.Cancelled)]
    return real[0] if real else exc
